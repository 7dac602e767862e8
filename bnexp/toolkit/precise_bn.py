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

from bnexp.toolkit import framework
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


def _moments_numpy(inputs):
    """(mean, biased variance, m) per channel of one BN input, in float64, with NumPy."""
    flat = to_numpy(inputs, np.float64).reshape(-1, inputs.shape[-1])
    return flat.mean(0), flat.var(0), flat.shape[0]


def _moments_graph(inputs):
    """_moments_numpy inside a TensorFlow graph: the same float64 quantities, summed in TensorFlow's order."""
    import tensorflow as tf

    flat = tf.reshape(tf.cast(inputs, tf.float64), [-1, inputs.shape[-1]])
    mean = tf.reduce_mean(flat, 0)
    return mean, tf.reduce_mean(tf.math.squared_difference(flat, mean), 0), tf.shape(flat)[0]


@contextlib.contextmanager
def _recording(model, bn_layers, sink):
    """Inside the block, `forward(x)` runs the model with every BN layer in training mode (batch statistics)
    and appends each BN layer's batch moments of its input to sink[i], one row per call of the layer.

    On TensorFlow the pass is one tf.function per model, traced once with the moments computed in the graph
    (an eager pass with a NumPy reduction per layer cost ~5x as much: `python -m bnexp.bench --only 8`); the
    trace is kept on the model and reused by later recomputations. Elsewhere each call is eager."""
    compiled = framework.BACKEND == "tensorflow"
    pass_fn, traced = _pass_fn(model, len(bn_layers)) if compiled else (None, None)

    def record(i, call, inputs, training, **kwargs):
        if compiled:
            traced.setdefault(i, []).append(_moments_graph(inputs))
        else:
            sink[i].append(_moments_numpy(inputs))
        return call(inputs, training=True, **kwargs)

    def forward(x):
        if not compiled:
            model(x, training=True)
            return
        for i, rows in enumerate(pass_fn(x)):
            sink[i].extend((mean.numpy(), var.numpy(), int(m)) for mean, var, m in rows)

    trainable = [layer.trainable for layer in bn_layers]
    for layer in bn_layers:
        layer.trainable = True  # a frozen BN layer would otherwise ignore training=True
    try:
        with intercepted(bn_layers, record):
            yield forward
    finally:
        for layer, was in zip(bn_layers, trainable):
            layer.trainable = was


def _pass_fn(model, n_layers: int):
    """The model's cached training-mode pass returning every BN layer's moment rows, and the dict its trace
    fills (only ever traced inside _recording's interception: a retrace for a new batch shape too)."""
    import tensorflow as tf

    cache = model.__dict__.setdefault("_bnexp_fns", {})
    key = ("precise_bn", n_layers)
    if key not in cache:
        traced: dict[int, list] = {}  # while tracing: the graph's moment tensors per layer

        def moments_pass(x):
            traced.clear()
            model(x, training=True)
            return [traced.get(i, []) for i in range(n_layers)]

        cache[key] = tf.function(moments_pass, reduce_retracing=True), traced
    return cache[key]


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
    with statistics_kept(model), _recording(model, bns, sink) as forward:  # the pass's own updates are undone
        for batch in batches:
            forward(batch[0] if isinstance(batch, (tuple, list)) else batch)
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
