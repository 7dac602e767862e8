"""Probes on tiny tensors (keras3, in this process): the accuracy decomposition never changes the model,
batch dependence shows up exactly when BN uses batch statistics, and stat errors are measured right.
Then, in one subprocess per semantics, on a nested base: precise BN (R1) sees through a frozen base
hard-coded to training=False, and bn_modes tells batch from moving statistics."""

import json
import subprocess
import sys

import numpy as np
import pytest
from conftest import ROOT, bnexp_env

from bnexp.toolkit import precise_bn, probes
from bnexp.workers import child_env


@pytest.fixture
def tiny(fw):
    keras = fw.keras
    inp = keras.Input((4,))
    x = keras.layers.Dense(3, name="d")(inp)
    x = fw.BatchNormalization(name="bn")(x)
    model = keras.Model(inp, keras.layers.Dense(2)(x))
    rng = np.random.default_rng(1)
    x = (rng.normal(size=(64, 4)) * 3 + 2).astype("float32")
    y = (x[:, 0] > 2).astype("int64")
    return model, x, y


def test_batch_stat_accuracy_leaves_moving_stats_untouched(tiny):
    model, x, y = tiny
    before = probes.moving_stats(model)
    probes.accuracy(model, x, y, training=True, batch_size=16)
    assert not probes.stats_changed(before, probes.moving_stats(model))


def test_training_mode_call_would_change_them(tiny):
    """The control: without the probe's restore, a training-mode call updates the moving stats."""
    model, x, _ = tiny
    before = probes.moving_stats(model)
    model(x, training=True)
    assert probes.stats_changed(before, probes.moving_stats(model))
    assert probes.layers_changed(before, probes.moving_stats(model)) == {"bn": True}
    assert probes.layers_changed(before, before) == {"bn": False}


def test_batch_dependence_only_with_batch_statistics(tiny):
    model, x, _ = tiny
    assert probes.batch_dependence(model, x, training=False, batch_size=8) < 1e-5
    assert probes.batch_dependence(model, x, training=True, batch_size=8) > 1e-2


def test_logits_match_a_direct_call(tiny):
    model, x, _ = tiny
    np.testing.assert_allclose(probes.logits(model, x, False, 16), np.asarray(model(x, training=False)), atol=1e-5)


@pytest.mark.parametrize("training", [False, True])
def test_a_pass_with_a_shorter_last_batch_traces_once_with_the_bits_of_fixed_shapes(fw, training):
    """One trace for every batch size (the old cache traced a 60-sample pass in batches of 16 twice: 16, then
    any size for the last 12), and the same bits as a function traced at each batch's own shape."""
    keras, tf = fw.keras, fw.tf
    model = keras.Sequential([keras.Input((6, 6, 2)), keras.layers.Conv2D(4, 3), fw.BatchNormalization(),
                              keras.layers.Flatten(), keras.layers.Dense(3)])
    x = np.random.default_rng(2).normal(size=(60, 6, 6, 2)).astype("float32") * 2 + 1
    got = probes.logits(model, x, training, 16)
    [fn] = model.__dict__["_bnexp_fns"].values()
    assert fn.experimental_get_tracing_count() == 1
    per_shape = tf.function(lambda b: model(b, training=training))  # a fresh trace per batch shape
    with probes.moving_stats_kept(model):
        want = np.concatenate([per_shape(x[i:i + 16]).numpy() for i in range(0, 60, 16)])
    assert per_shape.experimental_get_tracing_count() == 2
    np.testing.assert_array_equal(got, want)


def test_stat_errors_are_zero_after_precise_bn_and_large_before(tiny):
    model, x, _ = tiny
    stats = precise_bn.population_stats(model, [x[:32], x[32:]])
    errors_initial = probes.stat_errors(model, stats)
    precise_bn.apply(model, stats)
    errors_after = probes.stat_errors(model, stats)
    assert errors_initial["bn.mean_err"] > 0.1
    assert errors_after["bn.mean_err"] < 1e-5 and abs(errors_after["bn.var_ratio"] - 1) < 1e-4


def test_precise_accuracy_does_not_keep_the_swap(tiny):
    model, x, y = tiny
    stats = precise_bn.population_stats(model, [x])
    before = probes.moving_stats(model)
    probes.accuracy_precise(model, x, y, stats)
    assert not probes.stats_changed(before, probes.moving_stats(model))


# ---------------------------------------------------------------- a nested base, against NumPy, per semantics

PROBE_SCRIPT = r"""
import json, sys
import numpy as np
from bnexp.toolkit.framework import activate
from bnexp.toolkit import precise_bn
fw = activate(sys.argv[1]); fw.set_seed(0)
from bnexp.toolkit.probes import bn_modes
keras = fw.keras

def nested(trainable, training, at_layer=None):
    inp = keras.Input((6, 6, 1))
    h = keras.layers.Conv2D(3, 3, name="c")(inp)
    normed = fw.BatchNormalization(name="bn")
    normed = normed(h, training=at_layer) if at_layer is not None else normed(h)
    base = keras.Model(inp, keras.layers.Flatten()(normed))
    bn = base.get_layer("bn")
    bn.moving_mean.assign(np.full(3, 5.0, np.float32))  # far from the data's statistics
    bn.moving_variance.assign(np.full(3, 9.0, np.float32))
    base.trainable = trainable
    i2 = keras.Input((6, 6, 1))
    f = base(i2, training=training) if training is not None else base(i2)
    return keras.Model(i2, keras.layers.Dense(2)(f)), keras.Model(inp, h), bn

rng = np.random.default_rng(0)
xs = [(rng.normal(size=(8, 6, 6, 1)) * 2 + 1).astype("float32") for _ in range(3)]
model, features, bn = nested(False, False)
stats = precise_bn.population_stats(model, xs)
flats = [np.asarray(features(x), np.float64).reshape(-1, 3) for x in xs]
out = {"mean_err": float(np.max(np.abs(stats.layers[0].mean - np.mean([f.mean(0) for f in flats], 0)))),
       "var_err": float(np.max(np.abs(stats.layers[0].var_biased - np.mean([f.var(0) for f in flats], 0)))),
       "moving_kept": bool(np.all(np.asarray(bn.moving_mean) == 5.0) and np.all(np.asarray(bn.moving_variance) == 9.0))}
for name, trainable, training, at_layer in (
        ("frozen_none", False, None, None), ("frozen_false", False, False, None), ("open_false", True, False, None),
        ("open_none", True, None, None), ("open_layer_false", True, None, False)):
    m, _, _ = nested(trainable, training, at_layer)
    fit_modes, res_fit = bn_modes(m, xs[0], True)
    eval_modes, res_eval = bn_modes(m, xs[0], False)
    out[name] = [fit_modes[0], eval_modes[0]]
    out[name + "_residual"] = max(res_fit, res_eval)
print("RESULT " + json.dumps(out))
"""

# (batch statistics in fit?, in evaluate?) for a nested base: frozen or open (trainable), called with
# training None/False, or open with BatchNormalization()(x, training=False) inside it (open_layer_false).
# Keras 3 lets the outer call's explicit training (fit: True) replace a training= fixed in a functional
# graph, at the base call and at the layer alike; tf-keras keeps it; the V1 layer ignores `trainable`.
EXPECTED_MODES = {
    "keras3": {"frozen_none": [False, False], "frozen_false": [False, False], "open_false": [True, False],
               "open_none": [True, False], "open_layer_false": [True, False]},
    "tf_keras": {"frozen_none": [False, False], "frozen_false": [False, False], "open_false": [False, False],
                 "open_none": [True, False], "open_layer_false": [False, False]},
    "keras2_v1": {"frozen_none": [True, False], "frozen_false": [False, False], "open_false": [False, False],
                  "open_none": [True, False], "open_layer_false": [False, False]},
}


@pytest.mark.parametrize("semantics", list(EXPECTED_MODES))
def test_precise_bn_and_bn_modes_on_a_nested_base(semantics, cache_dir):
    env = child_env(semantics, "cpu", bnexp_env(cache_dir))
    proc = subprocess.run([sys.executable, "-c", PROBE_SCRIPT, semantics], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(next(ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT "))[7:])
    # R1 on a frozen base hard-coded to training=False still sees each BN layer's real input ...
    assert out["mean_err"] < 1e-5 and out["var_err"] < 1e-4
    assert out["moving_kept"]  # ... and leaves the moving statistics as they were
    for case, modes in EXPECTED_MODES[semantics].items():
        assert out[case] == modes, (case, out[case])
        assert out[case + "_residual"] < 1e-4


def test_convergence_is_the_worst_layer_of_both_errors():
    from bnexp.toolkit import probes

    errors = {"conv1.mean_err": 0.02, "conv1.var_ratio": 1.05, "fc1.mean_err": 0.09, "fc1.var_ratio": 0.95}
    out = probes.convergence(errors)
    assert out["stat_err_max"] == 0.09 and out["stat_converged"] == 1.0
    lagging = probes.convergence({**errors, "conv1.var_ratio": 60.0})  # moving variance 60x the population's
    assert abs(lagging["stat_err_max"] - np.log(60.0)) < 1e-12 and lagging["stat_converged"] == 0.0
    at_floor = probes.convergence({**errors, "fc1.mean_err": 0.101})  # the criterion is strict at 0.1
    assert at_floor["stat_converged"] == 0.0
    none = probes.convergence({})
    assert np.isnan(none["stat_err_max"]) and np.isnan(none["stat_converged"])
