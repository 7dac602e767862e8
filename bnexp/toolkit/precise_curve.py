"""How many batches precise BN (R1) needs: population statistics from the first n of N recomputation
batches, for several n, from a single pass over the N batches.

`population_stats` averages per-batch moments with equal weight per batch, so statistics over the first
n batches are the batch-weighted average of statistics over consecutive chunks [0, n1), [n1, n2), ...:
one pass gives every prefix, exactly as separate recomputations over the same batches would.
"""

from __future__ import annotations

import itertools

import numpy as np

from bnexp.toolkit import precise_bn


def combine(parts: list[precise_bn.Recompute]) -> precise_bn.Recompute:
    """Statistics over the union of the parts' batches (each batch weighted once), with their summed cost."""
    layers = []
    for per_layer in zip(*(p.layers for p in parts)):
        weights = [s.batches for s in per_layer]
        layers.append(precise_bn.LayerStats(
            per_layer[0].name,
            np.average([s.mean for s in per_layer], axis=0, weights=weights),
            np.average([s.var_biased for s in per_layer], axis=0, weights=weights),
            min(s.m for s in per_layer), sum(weights)))
    return precise_bn.Recompute(layers, sum(p.forward_passes for p in parts), sum(p.seconds for p in parts))


def prefix_stats(model, batches, counts) -> dict[int, precise_bn.Recompute]:
    """{n: precise-BN statistics from the first n of `batches`} for each n in `counts`, in one pass.

    Each entry's forward_passes and seconds are cumulative: what recomputing from n batches costs.
    """
    stream = iter(batches)
    out, parts, done = {}, [], 0
    for n in sorted({int(c) for c in counts}):
        parts.append(precise_bn.population_stats(model, itertools.islice(stream, n - done)))
        done = n
        out[n] = combine(parts)
    return out


def batches_to_converge(accuracy: dict[int, float], tolerance: float) -> int:
    """The fewest batches n from which every larger count stays within `tolerance` of the accuracy at
    the largest count (taken as converged)."""
    counts = sorted(accuracy)
    final = accuracy[counts[-1]]
    need = counts[-1]
    for n in reversed(counts):
        if abs(accuracy[n] - final) > tolerance:
            break
        need = n
    return need
