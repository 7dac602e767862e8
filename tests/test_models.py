"""The norm-layer switch: every value of `norm` builds, runs a forward pass in training and inference mode,
and puts the right layers in, for every model (Keras 3, in this process); small_cnn also in the subclass
flag style, where BN's training flag is hard-coded inside call()."""

import numpy as np
import pytest

from bnexp.toolkit import models
from bnexp.toolkit.framework import activate

SHAPES = {"small_cnn": (28, 28, 1), "mlp": (28, 28, 1), "resnet_tiny": (32, 32, 3)}
NORM_CLASS = {"gn": "GroupNormalization", "ln": "LayerNormalization"}


@pytest.fixture(scope="module")
def fw():
    f = activate("keras3")
    f.set_seed(0)
    return f


def layer_types(model) -> list[str]:
    return [type(layer).__name__ for layer in model.layers]


def forward(model, shape, training):
    x = np.random.default_rng(0).normal(size=(4, *shape)).astype("float32")
    out = np.asarray(model(x, training=training))
    assert out.shape == (4, 10)
    assert np.all(np.isfinite(out))
    return out


def check_norm_layers(model, norm):
    bns = models.batch_norm_layers(model)
    if norm in ("bn", "brn"):
        assert bns and all(layer.renorm == (norm == "brn") for layer in bns)
    else:
        assert not bns
    if norm in NORM_CLASS:
        assert NORM_CLASS[norm] in layer_types(model)
    if norm == "none":
        assert not any("Normalization" in t for t in layer_types(model))


@pytest.mark.parametrize("name", list(SHAPES))
@pytest.mark.parametrize("norm", list(models.NORMS))
def test_every_norm_builds_and_runs(fw, name, norm):
    model = models.build(fw, name, SHAPES[name], 10, norm=norm, momentum=0.9)
    check_norm_layers(model, norm)
    for training in (True, False):
        forward(model, SHAPES[name], training)


@pytest.mark.parametrize("norm", list(models.NORMS))
def test_every_norm_in_a_subclassed_small_cnn(fw, norm):
    model = models.build(fw, "small_cnn", SHAPES["small_cnn"], 10, norm=norm, flag_style="subclass")
    check_norm_layers(model, norm)
    for training in (True, False):
        forward(model, SHAPES["small_cnn"], training)


def test_brn_renorm_momentum_follows_bn_momentum(fw):
    model = models.build(fw, "small_cnn", SHAPES["small_cnn"], 10, norm="brn", momentum=0.8)
    assert all(layer.renorm_momentum == 0.8 and layer.momentum == 0.8 for layer in models.batch_norm_layers(model))


def test_unknown_norm_is_a_user_error(fw):
    from bnexp.errors import UserError

    with pytest.raises(UserError, match="valid: bn, none, gn, ln, brn"):
        models.build(fw, "mlp", SHAPES["mlp"], 10, norm="wn")
