"""Measurements on a trained Keras model, all on the same data, none of which changes the model.

- accuracy with batch statistics (every BN layer in training mode, moving statistics restored after),
- accuracy with the stored moving statistics (inference mode),
- accuracy with population statistics recomputed after training (precise BN, remedy R1),
- per-layer error of the moving statistics against the population statistics,
- prediction batch-dependence: a sample predicted alone vs inside a batch.
"""

from __future__ import annotations

import contextlib

import numpy as np

from bnexp.toolkit import precise_bn
from bnexp.toolkit.models import batch_norm_layers


moving_stats_kept = precise_bn.statistics_kept  # restore BN statistics after a training-mode probe


def logits(model, x: np.ndarray, training: bool | None, batch_size: int = 256) -> np.ndarray:
    """Model outputs in batches of `batch_size`, calling the model with `training`."""
    fn = _compiled(model, training)
    with moving_stats_kept(model) if training else contextlib.nullcontext():
        return np.concatenate([np.asarray(fn(x[i:i + batch_size])) for i in range(0, len(x), batch_size)])


def _compiled(model, training):
    import tensorflow as tf

    cache = model.__dict__.setdefault("_bnexp_fns", {})
    # A trace bakes in each BN layer's `trainable` (a frozen BN runs in inference mode), so the cache
    # is keyed by it too: a model unfrozen after a first probe (fine-tuning stage 2) is traced afresh.
    key = (training, tuple(layer.trainable for layer in batch_norm_layers(model)))
    if key not in cache:
        cache[key] = tf.function(lambda x: model(x, training=training), reduce_retracing=True)
    return cache[key]


def accuracy(model, x, y, training: bool | None = False, batch_size: int = 256) -> float:
    """Top-1 accuracy; `training=True` normalizes with each batch's own statistics."""
    return float(np.mean(np.argmax(logits(model, x, training, batch_size), -1) == y))


def accuracy_precise(model, x, y, stats: precise_bn.Recompute, unbiased: bool = False, batch_size: int = 256) -> float:
    """Inference accuracy with the recomputed population statistics in place of the moving ones."""
    with precise_bn.swapped(model, stats, unbiased):
        return accuracy(model, x, y, False, batch_size)


def stat_errors(model, stats: precise_bn.Recompute, unbiased: bool = False) -> dict[str, float]:
    """Per BN layer: how far the moving statistics are from the population statistics.

    mean_err: mean |moving_mean - pop_mean| / pop_std      (in units of the feature's spread)
    var_ratio: geometric mean of moving_var / pop_var      (1 is right; 1 also for initial stats only by luck)
    """
    out = {}
    for layer, s in zip(batch_norm_layers(model), stats.layers):
        pop_var = s.var(unbiased)
        mm, mv = np.asarray(layer.moving_mean, np.float64), np.asarray(layer.moving_variance, np.float64)
        out[f"{s.name}.mean_err"] = float(np.mean(np.abs(mm - s.mean) / np.sqrt(pop_var + 1e-12)))
        out[f"{s.name}.var_ratio"] = float(np.exp(np.mean(np.log((mv + 1e-12) / (pop_var + 1e-12)))))
    return out


def batch_dependence(model, x: np.ndarray, training: bool | None, batch_size: int = 64) -> float:
    """Max |logit| difference between each of `x[:batch_size]` predicted alone and inside the batch."""
    x = x[:batch_size]
    together = logits(model, x, training, batch_size)
    alone = np.concatenate([logits(model, x[i:i + 1], training, 1) for i in range(len(x))])
    return float(np.max(np.abs(together - alone)))


def moving_stats(model) -> dict[str, np.ndarray]:
    """A copy of every BN layer's moving mean and variance, by layer name."""
    out = {}
    for layer in batch_norm_layers(model):
        out[f"{layer.name}.moving_mean"] = np.array(layer.moving_mean)
        out[f"{layer.name}.moving_variance"] = np.array(layer.moving_variance)
    return out


def stats_changed(before: dict[str, np.ndarray], after: dict[str, np.ndarray]) -> bool:
    """Exact comparison: did any moving statistic change at all?"""
    return any(not np.array_equal(before[k], after[k]) for k in before)
