"""Probes on tiny tensors (keras3, in this process): the accuracy decomposition never changes the model,
batch dependence shows up exactly when BN uses batch statistics, and stat errors are measured right."""

import numpy as np
import pytest

from bnexp.toolkit import models, precise_bn, probes
from bnexp.toolkit.framework import activate


@pytest.fixture(scope="module")
def fw():
    f = activate("keras3")
    f.set_seed(0)
    return f


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


def test_batch_dependence_only_with_batch_statistics(tiny):
    model, x, _ = tiny
    assert probes.batch_dependence(model, x, training=False, batch_size=8) < 1e-5
    assert probes.batch_dependence(model, x, training=True, batch_size=8) > 1e-2


def test_logits_match_a_direct_call(tiny):
    model, x, _ = tiny
    np.testing.assert_allclose(probes.logits(model, x, False, 16), np.asarray(model(x, training=False)), atol=1e-5)


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


def test_subclassed_and_functional_models_find_their_bn_layers(fw):
    for style in ("functional", "subclass"):
        m = models.build(fw, "small_cnn", (28, 28, 1), 10, flag_style=style)
        assert [layer.name for layer in models.batch_norm_layers(m)] == ["conv1_norm", "conv2_norm", "fc1_norm"]
