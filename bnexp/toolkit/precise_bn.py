"""Remedy R1, precise BN (Wu & Johnson 2021; fvcore's `update_bn_stats`).

After training, freeze the weights, run the model over N training batches with every BN layer in
training mode, record each layer's per-batch mean and variance of its input, and replace the
exponential moving averages by their plain average over the N batches. The variance can be the biased
per-batch estimate (what Keras 3's moving variance averages; tf-keras' fused conv BN averages the
unbiased one) or the unbiased one, m/(m-1) times it, with m the number of values per channel in a
batch (claim C12).

Works for any Keras flavour and any model structure (nested bases, subclassed models): each BN
layer's `call` is intercepted for the duration of the pass (models.intercepted), so its actual inputs
are seen.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field

import numpy as np

from bnexp.toolkit.models import batch_norm_layers, intercepted, to_numpy


@dataclass
class LayerStats:
    """Population statistics of one BN layer's input, from `batches` batches of `m` values per channel."""

    name: str
    mean: np.ndarray
    var_biased: np.ndarray
    m: int
    batches: int

    @property
    def var_unbiased(self) -> np.ndarray:
        return self.var_biased * self.m / max(self.m - 1, 1)

    def var(self, unbiased: bool) -> np.ndarray:
        return self.var_unbiased if unbiased else self.var_biased


@dataclass
class Recompute:
    """What a precise-BN recomputation cost and produced."""

    layers: list[LayerStats] = field(default_factory=list)
    forward_passes: int = 0
    seconds: float = 0.0


@contextlib.contextmanager
def _recording(bn_layers, sink):
    """Record each BN layer's batch moments of its input into sink[i] and force batch statistics."""
    def record(i, call, inputs, training, **kwargs):
        flat = to_numpy(inputs, np.float64).reshape(-1, inputs.shape[-1])
        sink[i].append((flat.mean(0), flat.var(0), flat.shape[0]))
        return call(inputs, training=True, **kwargs)

    trainable = [layer.trainable for layer in bn_layers]
    for layer in bn_layers:
        layer.trainable = True  # a frozen BN layer would otherwise ignore training=True
    try:
        with intercepted(bn_layers, record):
            yield
    finally:
        for layer, was in zip(bn_layers, trainable):
            layer.trainable = was


def _moving_vars(layer):
    """Every statistic a training-mode call updates: moving mean and variance, plus Batch
    Renormalization's moving_stddev, renorm_mean and renorm_stddev where the layer has them."""
    extra = [getattr(layer, n, None) for n in ("moving_stddev", "renorm_mean", "renorm_stddev")]
    return [layer.moving_mean, layer.moving_variance, *(v for v in extra if v is not None)]


@contextlib.contextmanager
def statistics_kept(model):
    """Restore every BN layer's statistics (see _moving_vars) on exit: a training-mode call updates them."""
    saved = [(v, np.array(v)) for layer in batch_norm_layers(model) for v in _moving_vars(layer)]
    try:
        yield
    finally:
        for var, value in saved:
            var.assign(value)


def population_stats(model, batches) -> Recompute:
    """Population statistics of every BN layer's input over `batches` (images only, or (x, y) pairs).

    The model's moving statistics are left exactly as they were.
    """
    bns = batch_norm_layers(model)
    sink: dict[int, list] = {i: [] for i in range(len(bns))}
    out = Recompute()
    start = time.perf_counter()
    with statistics_kept(model), _recording(bns, sink):  # the pass's own updates are undone
        for batch in batches:
            x = batch[0] if isinstance(batch, (tuple, list)) else batch
            model(x, training=True)
            out.forward_passes += 1
    out.seconds = time.perf_counter() - start
    for i, layer in enumerate(bns):
        rows = sink[i]
        if not rows:
            raise RuntimeError(f"BN layer {layer.name} saw no input; is it reachable from the model's call?")
        m = min(r[2] for r in rows)
        out.layers.append(LayerStats(layer.name, np.mean([r[0] for r in rows], 0), np.mean([r[1] for r in rows], 0),
                                     m, len(rows)))
    return out


def apply(model, stats: Recompute, unbiased: bool = False) -> None:
    """Write recomputed statistics into the BN layers' moving mean and variance."""
    for layer, s in zip(batch_norm_layers(model), stats.layers):
        layer.moving_mean.assign(s.mean.astype(np.float32))
        layer.moving_variance.assign(s.var(unbiased).astype(np.float32))


def recompute(model, batches, unbiased: bool = False) -> Recompute:
    """Precise BN: replace every BN layer's moving statistics by population statistics."""
    stats = population_stats(model, batches)
    apply(model, stats, unbiased)
    return stats


@contextlib.contextmanager
def swapped(model, stats: Recompute, unbiased: bool = False):
    """Use recomputed statistics inside the block, then put the moving statistics back."""
    with statistics_kept(model):
        apply(model, stats, unbiased)
        yield
