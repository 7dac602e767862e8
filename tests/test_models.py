"""The norm-layer switch: every value of `norm` builds, runs a forward pass in training and inference mode,
and puts the right layers in, for every model (Keras 3, in this process); small_cnn also in the subclass
flag style, where BN's training flag is hard-coded inside call()."""

import numpy as np
import pytest

from bnexp.toolkit import models

SHAPES = {"small_cnn": (28, 28, 1), "mlp": (28, 28, 1), "resnet_tiny": (32, 32, 3)}
NORM_CLASS = {"gn": "GroupNormalization", "ln": "LayerNormalization"}


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
    if norm in ("bn", "brn", "brn_clip"):
        assert bns and all(layer.renorm == (norm != "bn") for layer in bns)
        clipping = models.BRN_CLIPPING if norm == "brn_clip" else {}
        assert all((layer.renorm_clipping or {}) == clipping for layer in bns if layer.renorm)
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


def test_subclassed_and_functional_models_find_their_bn_layers(fw):
    for style in ("functional", "subclass"):
        m = models.build(fw, "small_cnn", (28, 28, 1), 10, flag_style=style)
        assert [layer.name for layer in models.batch_norm_layers(m)] == ["conv1_norm", "conv2_norm", "fc1_norm"]


def test_intercepted_sees_every_bn_call_and_then_lets_go(fw):
    model = models.build(fw, "small_cnn", SHAPES["small_cnn"], 10)
    bns = models.batch_norm_layers(model)
    seen = []

    def hook(i, call, inputs, training, **kwargs):
        seen.append((i, tuple(inputs.shape), training))
        return call(inputs, training=training, **kwargs)

    x = np.zeros((2, *SHAPES["small_cnn"]), np.float32)
    with models.intercepted(bns, hook):
        model(x, training=False)
    assert [(i, t) for i, _, t in seen] == [(0, False), (1, False), (2, False)]
    assert seen[0][1] == (2, 28, 28, 16)
    model(x, training=False)
    assert len(seen) == 3 and all("call" not in layer.__dict__ for layer in bns)


def test_flag_fixed_model_undoes_its_build_call(fw):
    """A hard-coded training=True: building calls the model once; a new BN layer keeps its 0/1 and a
    pretrained part keeps its statistics, as if that call had not happened."""
    keras = fw.keras
    inp = keras.Input(SHAPES["mlp"])
    base = keras.Model(inp, fw.BatchNormalization(name="bn")(keras.layers.Flatten()(inp)))
    bn = base.get_layer("bn")
    bn.moving_mean.assign(np.full(bn.moving_mean.shape, 3.0, np.float32))
    model = models.flag_fixed(keras, [base, fw.BatchNormalization(name="new")], [True, True],
                              keras.layers.Dense(2), True, SHAPES["mlp"], "m")
    assert np.all(np.asarray(bn.moving_mean) == 3.0) and np.all(np.asarray(bn.moving_variance) == 1.0)
    new = models.batch_norm_layers(model)[-1]
    assert new.name == "new" and np.all(np.asarray(new.moving_mean) == 0.0)
    before = np.array(bn.moving_mean)
    model(np.ones((4, *SHAPES["mlp"]), np.float32) * 5, training=False)  # the fixed flag wins: an update
    assert not np.array_equal(np.asarray(bn.moving_mean), before)


@pytest.mark.parametrize("norm", ["bn", "gn", "brn_clip"])
def test_norm_layers_conv_leaves_the_dense_layer_unnormalized_with_its_bias(fw, norm):
    full = models.build(fw, "small_cnn", SHAPES["small_cnn"], 10, norm, norm_layers="conv_dense")
    conv = models.build(fw, "small_cnn", SHAPES["small_cnn"], 10, norm, norm_layers="conv")
    names = [layer.name for layer in conv.layers]
    assert "conv1_norm" in names and "conv2_norm" in names and "fc1_norm" not in names
    assert "fc1_norm" in [layer.name for layer in full.layers]
    assert conv.get_layer("fc1").use_bias and not conv.get_layer("conv1").use_bias
    assert not full.get_layer("fc1").use_bias
    forward(conv, SHAPES["small_cnn"], True)


def test_unknown_norm_layers_is_one_clear_error(fw):
    with pytest.raises(models.UserError, match="model.norm_layers 'dense'.*valid: conv_dense, conv"):
        models.build(fw, "small_cnn", SHAPES["small_cnn"], 10, "bn", norm_layers="dense")
    with pytest.raises(models.UserError, match="resnet_tiny"):
        models.build(fw, "resnet_tiny", SHAPES["resnet_tiny"], 10, "bn", norm_layers="conv")
