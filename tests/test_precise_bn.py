"""Precise BN (R1) against NumPy: on tiny Dense->BN and Conv->BN models the recomputed population mean and
variance (biased and unbiased m/(m-1)) equal the same statistics computed by hand, m counts values per
channel (batch for dense, batch*H*W for conv), the model's moving statistics are left exactly as they were,
and prefix statistics from one pass (precise_curve) equal separate recomputations. Keras 3 in this process;
tf-keras in a subprocess (one interpreter holds one Keras flavour)."""

import json
import subprocess
import sys

import numpy as np
import pytest
from conftest import ROOT, bnexp_env

from bnexp.toolkit import precise_bn, precise_curve, probes
from bnexp.workers import child_env

BATCHES, BATCH = 5, 8


def dense_bn(fw, norm_kwargs=None):
    """x -> Dense(3) -> BN -> Dense(2), and the sub-model up to the BN input."""
    keras = fw.keras
    inp = keras.Input((4,))
    h = keras.layers.Dense(3, name="d")(inp)
    x = fw.BatchNormalization(name="bn", **(norm_kwargs or {}))(h)
    return keras.Model(inp, keras.layers.Dense(2)(x)), keras.Model(inp, h)


def conv_bn(fw):
    keras = fw.keras
    inp = keras.Input((6, 6, 1))
    h = keras.layers.Conv2D(2, 3, name="c")(inp)  # valid padding: 4x4 per image
    x = fw.BatchNormalization(name="bn")(h)
    out = keras.layers.Dense(2)(keras.layers.Flatten()(x))
    return keras.Model(inp, out), keras.Model(inp, h)


def batches(shape, seed=1):
    rng = np.random.default_rng(seed)
    return [(rng.normal(size=(BATCH, *shape)) * 3 + 2).astype("float32") for _ in range(BATCHES)]


def numpy_stats(features, xs):
    """Per-batch mean and biased variance of the BN input over all but the channel axis, averaged."""
    flats = [np.asarray(features(x), np.float64).reshape(-1, features.output_shape[-1]) for x in xs]
    return (np.mean([f.mean(0) for f in flats], 0), np.mean([f.var(0) for f in flats], 0), flats[0].shape[0])


@pytest.mark.parametrize("build,shape,m", [(dense_bn, (4,), BATCH), (conv_bn, (6, 6, 1), BATCH * 4 * 4)])
def test_population_stats_match_numpy_biased_and_unbiased(fw, build, shape, m):
    model, features = build(fw)
    xs = batches(shape)
    before = probes.moving_stats(model)
    stats = precise_bn.population_stats(model, xs)
    mean, var, rows = numpy_stats(features, xs)
    s = stats.layers[0]
    assert rows == m and s.m == m and s.batches == BATCHES and stats.forward_passes == BATCHES
    np.testing.assert_allclose(s.mean, mean, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(s.var(unbiased=False), var, rtol=1e-5)
    np.testing.assert_allclose(s.var(unbiased=True), var * m / (m - 1), rtol=1e-5)
    assert not probes.stats_changed(before, probes.moving_stats(model))  # exactly as before


@pytest.mark.parametrize("unbiased", [False, True])
def test_recompute_writes_them_into_the_layer(fw, unbiased):
    model, features = dense_bn(fw)
    xs = batches((4,))
    precise_bn.recompute(model, xs, unbiased=unbiased)
    mean, var, m = numpy_stats(features, xs)
    bn = model.get_layer("bn")
    np.testing.assert_allclose(np.asarray(bn.moving_mean), mean, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.asarray(bn.moving_variance), var * (m / (m - 1) if unbiased else 1), rtol=1e-5)


def test_keras3_stores_the_biased_batch_variance(fw):
    """The premise of C12: Keras 3's moving variance averages the biased batch variance (momentum 0: one step)."""
    rng = np.random.default_rng(2)
    for shape in ((5, 3), (3, 4, 4, 2)):
        x = (rng.normal(size=shape) * 2 + 1).astype("float32")
        bn = fw.BatchNormalization(momentum=0.0)
        bn(x, training=True)
        np.testing.assert_allclose(np.asarray(bn.moving_variance), x.reshape(-1, shape[-1]).var(0), rtol=1e-5)


def test_renorm_statistics_are_restored_too(fw):
    """A training-mode pass of Batch Renormalization also moves renorm_mean/renorm_stddev/moving_stddev;
    precise BN and the batch-statistics probe put every one of them back."""
    model, _ = dense_bn(fw, {"renorm": True, "momentum": 0.5, "renorm_momentum": 0.5})
    xs = batches((4,))
    model(xs[0], training=True)  # move the statistics away from their initial values first
    bn = model.get_layer("bn")
    names = ("moving_mean", "moving_variance", "moving_stddev", "renorm_mean", "renorm_stddev")
    before = {n: np.array(getattr(bn, n)) for n in names}
    precise_bn.population_stats(model, xs)
    probes.accuracy(model, xs[1], np.zeros(BATCH, "int64"), training=True, batch_size=4)
    for n in names:
        np.testing.assert_array_equal(np.asarray(getattr(bn, n)), before[n], err_msg=n)


def test_prefix_stats_equal_separate_recomputations(fw):
    model, _ = dense_bn(fw)
    xs = batches((4,)) + batches((4,), seed=3)  # 10 batches
    curve = precise_curve.prefix_stats(model, xs, [1, 4, 10])
    for n in (1, 4, 10):
        direct = precise_bn.population_stats(model, xs[:n]).layers[0]
        got = curve[n].layers[0]
        np.testing.assert_allclose(got.mean, direct.mean, rtol=1e-12)
        np.testing.assert_allclose(got.var_biased, direct.var_biased, rtol=1e-12)
        assert got.batches == n and curve[n].forward_passes == n and got.m == BATCH


def test_batches_to_converge():
    acc = {1: 0.70, 2: 0.80, 5: 0.812, 10: 0.806, 20: 0.809, 50: 0.81}
    assert precise_curve.batches_to_converge(acc, 0.005) == 5
    assert precise_curve.batches_to_converge(acc, 0.002) == 20
    assert precise_curve.batches_to_converge({1: 0.5, 2: 0.9}, 0.005) == 2  # only the largest count
    assert precise_curve.batches_to_converge({1: 0.9, 2: 0.8, 3: 0.9}, 0.005) == 3  # must stay within


TF_KERAS_CHECK = r"""
import json
import numpy as np
from bnexp.toolkit import precise_bn
from bnexp.toolkit.framework import activate
fw = activate("tf_keras")
keras = fw.keras
rng = np.random.default_rng(1)
out = {}
for kind, shape, layer in (("dense", (4,), lambda: keras.layers.Dense(3)),
                           ("conv", (6, 6, 1), lambda: keras.layers.Conv2D(2, 3))):
    inp = keras.Input(shape)
    h = layer()(inp)
    model = keras.Model(inp, fw.BatchNormalization(momentum=0.0)(h))
    features = keras.Model(inp, h)
    xs = [(rng.normal(size=(8, *shape)) * 3 + 2).astype("float32") for _ in range(5)]
    s = precise_bn.population_stats(model, xs).layers[0]
    flats = [np.asarray(features(x), np.float64).reshape(-1, h.shape[-1]) for x in xs]
    mean, var, m = np.mean([f.mean(0) for f in flats], 0), np.mean([f.var(0) for f in flats], 0), flats[0].shape[0]
    model(xs[0], training=True)  # momentum 0: the moving variance is this batch's variance, as Keras computes it
    f0 = flats[0]
    mv = np.asarray(model.layers[-1].moving_variance, np.float64)
    out[kind] = {"m": int(s.m), "m_numpy": int(m),
                 "mean_err": float(np.max(np.abs(s.mean - mean))),
                 "biased_rel_err": float(np.max(np.abs(s.var(False) / var - 1))),
                 "unbiased_rel_err": float(np.max(np.abs(s.var(True) / (var * m / (m - 1)) - 1))),
                 "keras_vs_biased": float(np.max(np.abs(mv / f0.var(0) - 1))),
                 "keras_vs_unbiased": float(np.max(np.abs(mv / f0.var(0, ddof=1) - 1)))}
print("RESULT " + json.dumps(out))
"""


def test_tf_keras_precise_bn_matches_numpy(tmp_path):
    """The same checks under tf-keras, in a subprocess with TF_USE_LEGACY_KERAS=1. It also pins down a
    difference between the flavours: tf-keras' fused conv BN stores the *unbiased* batch variance in its
    moving variance (its dense BN and Keras 3 store the biased one)."""
    proc = subprocess.run([sys.executable, "-c", TF_KERAS_CHECK], cwd=ROOT, capture_output=True, text=True,
                          timeout=120, env=child_env("tf_keras", "cpu", bnexp_env(tmp_path)))
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    assert line, proc.stderr[-2000:]
    out = json.loads(line[-1][len("RESULT "):])
    assert out["dense"]["m"] == out["dense"]["m_numpy"] == 8
    assert out["conv"]["m"] == out["conv"]["m_numpy"] == 8 * 4 * 4
    for kind in ("dense", "conv"):
        assert out[kind]["mean_err"] < 1e-5
        assert out[kind]["biased_rel_err"] < 1e-5 and out[kind]["unbiased_rel_err"] < 1e-5
    assert out["dense"]["keras_vs_biased"] < 1e-5      # dense: biased, like Keras 3
    assert out["conv"]["keras_vs_unbiased"] < 1e-5     # fused conv: unbiased (Bessel-corrected)
    assert out["conv"]["keras_vs_biased"] > 0.5 / (8 * 4 * 4 - 1)  # the m/(m-1) factor, 1/127


def test_compiled_pass_equals_the_eager_one_and_is_reused(fw, monkeypatch):
    """On TensorFlow the recording pass is a tf.function traced once per model (moments summed in the graph);
    its statistics equal the eager pass' NumPy ones to float64 rounding, a model frozen after a first
    recomputation still gets batch statistics, and a second recomputation reuses the trace."""
    model, _ = conv_bn(fw)
    xs = batches((6, 6, 1))
    compiled = precise_bn.population_stats(model, xs).layers[0]
    fns = [k for k in model.__dict__["_bnexp_fns"] if k[0] == "precise_bn"]
    traces = model.__dict__["_bnexp_fns"][fns[0]][0].experimental_get_tracing_count()
    model.get_layer("bn").trainable = False
    again = precise_bn.population_stats(model, xs).layers[0]
    assert model.__dict__["_bnexp_fns"][fns[0]][0].experimental_get_tracing_count() == traces
    monkeypatch.setattr(precise_bn.framework, "BACKEND", "eager (as on JAX or PyTorch)")
    eager = precise_bn.population_stats(model, xs).layers[0]
    for got in (compiled, again):
        np.testing.assert_allclose(got.mean, eager.mean, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(got.var_biased, eager.var_biased, rtol=1e-12)
        assert got.m == eager.m and got.batches == eager.batches


def test_compiled_pass_with_a_shared_bn_and_an_uneven_last_batch(fw, monkeypatch):
    """A BN layer called twice per forward pass records one row per call, and a last batch of another size
    (a retrace, inside the recording) is recorded too: the compiled pass agrees with the eager one."""
    keras = fw.keras
    inp = keras.Input((4,))
    bn = fw.BatchNormalization(name="shared")
    h = bn(keras.layers.Dense(4)(inp))
    model = keras.Model(inp, keras.layers.Dense(2)(bn(keras.layers.Dense(4)(h))))
    rng = np.random.default_rng(4)
    xs = [rng.normal(size=(n, 4)).astype("float32") for n in (8, 8, 5)]
    compiled = precise_bn.population_stats(model, xs)
    monkeypatch.setattr(precise_bn.framework, "BACKEND", "eager (as on JAX or PyTorch)")
    eager = precise_bn.population_stats(model, xs)
    got, want = compiled.layers[0], eager.layers[0]
    assert got.batches == want.batches == 6 and got.m == want.m == 5  # 2 calls x 3 batches; the smallest batch
    np.testing.assert_allclose(got.mean, want.mean, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(got.var_biased, want.var_biased, rtol=1e-12)
