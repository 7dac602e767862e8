"""Record every BN layer's batch moments during `fit`, and replay its moving averages for any momentum.

Keras BN in training mode normalizes with the batch's own mean and variance; the moving averages
are only written, never read, so the weights follow the same trajectory whatever the momentum. What
the momentum changes is only how the per-step batch moments are folded into the moving statistics:

    moving <- moving * momentum + batch * (1 - momentum)      (Keras 3; tf-keras alike, see below)

`Recorder` intercepts each BN layer's `call` while it is active and writes the mean and the biased
variance (tf.nn.moments, what Keras 3 uses) of the layer's input into a per-layer buffer inside the
training graph, one row per training-mode call. `replay` then recomputes the moving statistics a
given momentum would have produced, in float32 like the layers do. The replay is checked against the
layers' own moving statistics at the momentum actually trained (tf-keras' fused conv BN folds the
unbiased batch variance into its moving variance, a relative difference of 1/(m-1) per step).

Keras 3 on JAX or PyTorch (no TensorFlow there): the moments are computed with keras.ops and handed to
NumPy lists, by jax.debug.callback from inside JAX's compiled train step, directly on PyTorch (eager).
"""

from __future__ import annotations

import math

import numpy as np

from bnexp.toolkit import framework, precise_bn, probes
from bnexp.toolkit.models import batch_norm_layers, intercepted, to_numpy


def resolve_momentum(value, batches: int) -> float:
    """A momentum value from a config: a number in [0, 1), or `exp` for the rule exp(-1/B)."""
    if isinstance(value, str) and value.strip().lower() == "exp":
        return math.exp(-1.0 / batches)
    return float(value)


class Recorder:
    """Per-step batch moments of every BN layer's input in `model`, for up to `capacity` steps."""

    def __init__(self, model, capacity: int):
        import tensorflow as tf

        self.layers = batch_norm_layers(model)
        self.capacity = int(capacity)
        channels = [int(np.asarray(layer.moving_mean).shape[0]) for layer in self.layers]
        self.mean = [tf.Variable(tf.zeros((self.capacity, c)), trainable=False) for c in channels]
        self.var = [tf.Variable(tf.zeros((self.capacity, c)), trainable=False) for c in channels]
        self.count = [tf.Variable(0, dtype=tf.int32, trainable=False) for _ in channels]

    def active(self):
        """Inside the block every training-mode call of a BN layer records its batch moments."""
        return intercepted(self.layers, self._record)

    def _record(self, i: int, call, inputs, training, **kwargs):
        import tensorflow as tf

        if training is True or (isinstance(training, (int, np.integer)) and training == 1):
            x = tf.cast(inputs, tf.float32)
            mean, var = tf.nn.moments(x, axes=list(range(len(x.shape) - 1)))
            row = tf.minimum(self.count[i], self.capacity - 1)
            self.mean[i].scatter_nd_update([[row]], [mean])
            self.var[i].scatter_nd_update([[row]], [var])
            self.count[i].assign_add(1)
        return call(inputs, training=training, **kwargs)

    @property
    def steps(self) -> int:
        """Training-mode calls recorded (the same for every layer in a plain model)."""
        return min(int(c.numpy()) for c in self.count) if self.count else 0

    def moments(self) -> list[tuple[np.ndarray, np.ndarray]]:
        """(mean, biased variance) arrays of shape (steps, channels), per BN layer, in call order."""
        n = min(self.steps, self.capacity)
        return [(np.asarray(m)[:n], np.asarray(v)[:n]) for m, v in zip(self.mean, self.var)]


class NumpyRecorder(Recorder):
    """The Recorder for Keras 3 on JAX or PyTorch: the same moments, kept in NumPy lists."""

    def __init__(self, model, capacity: int):
        self.layers = batch_norm_layers(model)
        self.capacity = int(capacity)
        self.rows: list[list] = [[] for _ in self.layers]

    def _record(self, i: int, call, inputs, training, **kwargs):
        from keras import ops

        if training is True or (isinstance(training, (int, np.integer)) and training == 1):
            x = ops.cast(inputs, "float32")
            mean, var = ops.moments(x, axes=list(range(len(x.shape) - 1)))
            if framework.BACKEND == "jax":
                import jax

                if isinstance(mean, jax.Array):  # not while Keras traces shapes symbolically
                    jax.debug.callback(lambda m, v: self._keep(i, m, v), mean, var, ordered=True)
            else:
                self._keep(i, mean, var)
        return call(inputs, training=training, **kwargs)

    def _keep(self, i: int, mean, var) -> None:
        if len(self.rows[i]) < self.capacity:
            self.rows[i].append((to_numpy(mean, np.float32), to_numpy(var, np.float32)))

    @property
    def steps(self) -> int:
        return min(len(r) for r in self.rows) if self.rows else 0

    def moments(self) -> list[tuple[np.ndarray, np.ndarray]]:
        n = self.steps
        return [(np.stack([m for m, _ in r[:n]]), np.stack([v for _, v in r[:n]])) for r in self.rows]


def recorder(model, capacity: int) -> Recorder:
    """The Recorder for the active backend."""
    return (Recorder if framework.BACKEND == "tensorflow" else NumpyRecorder)(model, capacity)


def replay(moments, initial: dict[str, np.ndarray], layers, momentum: float) -> list[tuple[np.ndarray, np.ndarray]]:
    """Moving (mean, variance) per layer after folding in every recorded step with `momentum`."""
    keep, fold = np.float32(momentum), np.float32(1.0 - momentum)
    out = []
    for layer, (means, variances) in zip(layers, moments):
        mm = initial[f"{layer.name}.moving_mean"].astype(np.float32)
        mv = initial[f"{layer.name}.moving_variance"].astype(np.float32)
        for bm, bv in zip(means, variances):
            mm = mm * keep + bm * fold
            mv = mv * keep + bv * fold
        out.append((mm, mv))
    return out


def as_stats(layers, stats: list[tuple[np.ndarray, np.ndarray]], steps: int) -> precise_bn.Recompute:
    """Replayed moving statistics in the form precise_bn.swapped / probes.stat_errors take."""
    rec = precise_bn.Recompute()
    rec.layers = [precise_bn.LayerStats(layer.name, m.astype(np.float64), v.astype(np.float64), 2, steps)
                  for layer, (m, v) in zip(layers, stats)]
    return rec


def max_error(layers, stats: list[tuple[np.ndarray, np.ndarray]]) -> tuple[float, float]:
    """How far `stats` are from the layers' own moving statistics, worst channel of any layer:
    (|mean - moving mean| in units of the moving std, |var - moving var| / moving var)."""
    worst_mean = worst_var = 0.0
    for layer, (m, v) in zip(layers, stats):
        lm, lv = np.asarray(layer.moving_mean, np.float64), np.asarray(layer.moving_variance, np.float64)
        worst_mean = max(worst_mean, float(np.max(probes.mean_error(m, lm, lv))))
        worst_var = max(worst_var, float(np.max(probes.variance_error(v, lv))))
    return worst_mean, worst_var
