"""Issue #27: models.batch_norm_layers finds BN however a model holds it (an attribute of a custom layer, in a
list or dict attribute, deep inside nested models, a subclass of BatchNormalization), and precise BN reaches
those layers; and for every model bnexp builds itself it returns exactly what the traversal before #27 returned
(kept below, verbatim), in the same order. Keras 3 in this process; tf-keras and its V1 class (keras2_v1) in
subprocesses that import this module (one interpreter holds one Keras flavour)."""

import json
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest
import yaml
from conftest import ROOT, bnexp_env

from bnexp.names import FLAG_STYLES, NORM_LAYERS, NORMS
from bnexp.toolkit import models, precise_bn
from bnexp.workers import child_env

MODEL_NAMES = sorted(yaml.safe_load(p.read_text())["name"] for p in (ROOT / "configs" / "model").glob("*.yaml"))
SHAPES = {"small_cnn": (28, 28, 1), "mlp": (28, 28, 1), "resnet_tiny": (32, 32, 3)}


def old_batch_norm_layers(model) -> list:
    """models.batch_norm_layers as it was before issue #27 (is_batch_norm then compared the class name)."""
    found = []
    for layer in getattr(model, "layers", []):
        if type(layer).__name__ == "BatchNormalization":
            found.append(layer)
        elif hasattr(layer, "layers"):
            found.extend(old_batch_norm_layers(layer))
    return found


# ---------------------------------------------------------------- every model bnexp builds


def project_models(fw):
    """(label, model) for each model bnexp builds: models.build for every configured model, norm, flag style,
    norm_layers and a fixed or free BN flag; and frozen_base's transfer model around its pretrained base."""
    from experiments.frozen_base import transfer_model

    for name in MODEL_NAMES:
        styles = ("functional",) if name == "resnet_tiny" else FLAG_STYLES
        layer_sets = ("conv_dense",) if name == "resnet_tiny" else tuple(NORM_LAYERS)
        for norm in NORMS:
            for style in styles:
                for norm_layers in layer_sets:
                    for flag in (None, False):
                        yield (f"{name}/{norm}/{style}/{norm_layers}/training={flag}",
                               models.build(fw, name, SHAPES[name], 10, norm, 0.9, bn_training=flag,
                                            flag_style=style, norm_layers=norm_layers))
    # frozen_base: pretrained_base cuts the full model at its logits' input (base.flag_style=layer: BN called with
    # training=base.training inside it), and transfer_model puts a new head on it.
    for name in MODEL_NAMES:
        for norm in ("bn", "brn", "gn"):
            for style in ("functional", "subclass", "layer"):
                for flag in (None, True, False):
                    full = models.build(fw, name, SHAPES[name], 5, norm, 0.9, model_name="pretrained",
                                        bn_training=flag if style == "layer" else None)
                    base = fw.keras.Model(full.inputs, full.get_layer("logits").input, name="base")
                    cfg = SimpleNamespace(base=SimpleNamespace(training=flag, flag_style=style))
                    yield (f"transfer/{name}/{norm}/base.flag_style={style}/training={flag}",
                           transfer_model(cfg, SimpleNamespace(fw=fw), base, SHAPES[name], 5))


def disagreements(fw) -> tuple[list[str], int]:
    """Project models where the new traversal differs from the old one (by identity and order); how many of
    all the models had any BN layer at all."""
    bad, with_bn = [], 0
    for label, model in project_models(fw):
        old, new = old_batch_norm_layers(model), models.batch_norm_layers(model)
        with_bn += bool(old)
        if len(old) != len(new) or any(a is not b for a, b in zip(old, new)):
            bad.append(f"{label}: old {[b.name for b in old]} new {[b.name for b in new]}")
    return bad, with_bn


# ---------------------------------------------------------------- models that hold BN in new ways


def blocks(fw):
    """The custom layers a user writes: conv + BN as attributes, BN in a list, in a dict, one block inside another."""
    keras = fw.keras

    class ConvBN(keras.layers.Layer):
        def __init__(self, tag, bn=None, **kwargs):
            super().__init__(name=tag, **kwargs)
            self.conv = keras.layers.Conv2D(4, 3, padding="same", use_bias=False, name=f"{tag}_conv")
            self.bn = bn if bn is not None else fw.BatchNormalization(name=f"{tag}_bn")

        def call(self, x, training=None):
            return keras.activations.relu(self.bn(self.conv(x), training=training))

    class ListBN(keras.layers.Layer):
        def __init__(self, tag, **kwargs):
            super().__init__(name=tag, **kwargs)
            self.norms = [fw.BatchNormalization(name=f"{tag}_bn{i}") for i in range(2)]

        def call(self, x, training=None):
            for bn in self.norms:
                x = bn(x, training=training)
            return x

    class DictBN(keras.layers.Layer):  # keys in sorted order: tf-keras tracks a dict's values by sorted key
        def __init__(self, tag, **kwargs):
            super().__init__(name=tag, **kwargs)
            self.norms = {"a": fw.BatchNormalization(name=f"{tag}_a"), "b": fw.BatchNormalization(name=f"{tag}_b")}

        def call(self, x, training=None):
            return self.norms["b"](self.norms["a"](x, training=training), training=training)

    class Stage(keras.layers.Layer):  # a custom layer holding custom layers
        def __init__(self, tag, **kwargs):
            super().__init__(name=tag, **kwargs)
            self.first, self.second = ConvBN(f"{tag}_first"), ConvBN(f"{tag}_second")

        def call(self, x, training=None):
            return self.second(self.first(x, training=training), training=training)

    return SimpleNamespace(ConvBN=ConvBN, ListBN=ListBN, DictBN=DictBN, Stage=Stage)


def functional(fw, *parts, shape=(6, 6, 1)):
    keras = fw.keras
    inp = keras.Input(shape)
    x = inp
    for part in parts:
        x = part(x)
    return keras.Model(inp, keras.layers.Dense(2, name="head")(keras.layers.Flatten()(x)))


def case_attribute(fw):
    return functional(fw, blocks(fw).ConvBN("blk")), ["blk_bn"]


def case_list(fw):
    return functional(fw, blocks(fw).ListBN("lst")), ["lst_bn0", "lst_bn1"]


def case_dict(fw):
    return functional(fw, blocks(fw).DictBN("dct")), ["dct_a", "dct_b"]


def case_nested(fw):
    """A functional model around a subclassed model around a functional one, whose custom layer holds custom layers."""
    keras, b = fw.keras, blocks(fw)
    inner = functional(fw, b.Stage("stage"), shape=(6, 6, 4))  # after pre: 4 channels

    class Wrapper(keras.Model):
        def __init__(self):
            super().__init__(name="wrapper")
            self.pre, self.inner = b.ConvBN("pre"), inner

        def call(self, x, training=None):
            return self.inner(self.pre(x, training=training), training=training)

    inp = keras.Input((6, 6, 1))
    x = fw.BatchNormalization(name="top_bn")(inp)
    return keras.Model(inp, Wrapper()(x)), ["top_bn", "pre_bn", "stage_first_bn", "stage_second_bn"]


def case_bn_subclass(fw):
    class MyBN(fw.BatchNormalization):  # fw's class: V2 in Keras 3 / tf_keras, V1 in keras2_v1
        pass

    return functional(fw, blocks(fw).ConvBN("sub", bn=MyBN(name="my_bn")), MyBN(name="my_top_bn")), \
        ["my_bn", "my_top_bn"]


def case_sync(fw):
    """tf-keras: SyncBatchNormalization (its own class); Keras 3: BatchNormalization(synchronized=True)."""
    L = fw.keras.layers
    sync = getattr(L, "SyncBatchNormalization", None) or getattr(getattr(L, "experimental", None),
                                                                 "SyncBatchNormalization", None)
    bn = sync(name="sync_bn") if sync is not None else L.BatchNormalization(synchronized=True, name="sync_bn")
    return functional(fw, blocks(fw).ConvBN("syn", bn=bn)), ["sync_bn"]


def case_frozen(fw):
    bn = fw.BatchNormalization(name="frozen_bn")
    bn.trainable = False
    return functional(fw, blocks(fw).ConvBN("frz", bn=bn)), ["frozen_bn"]


def case_no_affine(fw):
    bn = fw.BatchNormalization(center=False, scale=False, name="plain_bn")
    return functional(fw, blocks(fw).ConvBN("aff", bn=bn)), ["plain_bn"]


CASES = {f.__name__[len("case_"):]: f for f in (case_attribute, case_list, case_dict, case_nested, case_bn_subclass,
                                                 case_sync, case_frozen, case_no_affine)}


def found_names(fw, case):
    """(new traversal's names, expected names, old traversal's names) for CASES[case], after one forward pass."""
    model, expected = CASES[case](fw)
    model(np.zeros((2, 6, 6, 1), np.float32), training=False)
    return ([b.name for b in models.batch_norm_layers(model)], expected,
            [b.name for b in old_batch_norm_layers(model)])


def precise_bn_in_custom_layer(fw) -> dict:
    """Precise BN on a subclassed model whose BN sits inside a custom layer: the recomputed moving mean and
    variance against NumPy's, from the dense layer's own weights and the batches. Largest absolute errors."""
    keras = fw.keras

    class DenseBN(keras.layers.Layer):
        def __init__(self):
            super().__init__(name="dense_bn")
            self.dense, self.bn = keras.layers.Dense(3, name="d"), fw.BatchNormalization(name="bn")

        def call(self, x, training=None):
            return self.bn(self.dense(x), training=training)

    class Net(keras.Model):
        def __init__(self):
            super().__init__(name="net")
            self.block, self.head = DenseBN(), keras.layers.Dense(2)

        def call(self, x, training=None):
            return self.head(self.block(x, training=training))

    model = Net()
    rng = np.random.default_rng(1)
    xs = [(rng.normal(size=(8, 4)) * 3 + 2).astype("float32") for _ in range(5)]
    model(xs[0], training=False)
    stats = precise_bn.recompute(model, xs)
    kernel, bias = (np.asarray(w, np.float64) for w in model.block.dense.weights)
    inputs = [x.astype(np.float64) @ kernel + bias for x in xs]
    mean, var = np.mean([h.mean(0) for h in inputs], 0), np.mean([h.var(0) for h in inputs], 0)
    bn = model.block.bn
    return {"layers": [s.name for s in stats.layers], "batches": stats.layers[0].batches,
            "mean_err": float(np.max(np.abs(np.asarray(bn.moving_mean, np.float64) - mean))),
            "var_err": float(np.max(np.abs(np.asarray(bn.moving_variance, np.float64) - var))),
            "mean_span": float(np.max(np.abs(mean)))}  # the errors mean something only if this is not ~0


def everything(fw) -> dict:
    """All of the above, JSON-able: what the subprocess for a tf-keras flavour prints."""
    bad, with_bn = disagreements(fw)
    return {"disagreements": bad, "with_bn": with_bn, "cases": {c: found_names(fw, c) for c in CASES},
            "precise": precise_bn_in_custom_layer(fw)}


# ---------------------------------------------------------------- the tests


def check_precise(out):
    assert out["layers"] == ["bn"] and out["batches"] == 5 and out["mean_span"] > 0.1
    assert out["mean_err"] < 1e-5 and out["var_err"] < 1e-4


def test_keras3_project_models_keep_their_bn_layers_and_order(fw):
    bad, with_bn = disagreements(fw)
    assert not bad
    assert with_bn > 50  # not vacuous: most of them have BN


@pytest.mark.parametrize("case", list(CASES))
def test_keras3_finds_bn_however_it_is_held(fw, case):
    new, expected, _ = found_names(fw, case)
    assert new == expected


def test_keras3_old_traversal_missed_them(fw):
    """What issue #27 reported: the old traversal saw none of the BN layers inside custom layers."""
    assert found_names(fw, "attribute")[2] == [] and found_names(fw, "list")[2] == []
    assert found_names(fw, "nested")[2] == ["top_bn"]


def test_keras3_precise_bn_reaches_bn_inside_a_custom_layer(fw):
    check_precise(precise_bn_in_custom_layer(fw))


def test_is_batch_norm_imports_no_other_flavour(fw):
    """Keras 3 here: asking must not import tf_keras (that would start a second flavour)."""
    assert "tf_keras" not in sys.modules
    assert models.is_batch_norm(fw.keras.layers.BatchNormalization())
    assert not models.is_batch_norm(fw.keras.layers.LayerNormalization())
    assert "tf_keras" not in sys.modules


SCRIPT = r"""
import json, sys
sys.path.insert(0, "tests")
from bnexp.toolkit.framework import activate
fw = activate(sys.argv[1])
import test_bn_discovery as t
out = t.everything(fw)
print("RESULT " + json.dumps(out))
"""


@pytest.fixture(scope="module", params=["tf_keras", "keras2_v1"])
def legacy(request, tmp_path_factory):
    semantics = request.param
    proc = subprocess.run([sys.executable, "-c", SCRIPT, semantics], cwd=ROOT, capture_output=True, text=True,
                          timeout=600, env=child_env(semantics, "cpu", bnexp_env(tmp_path_factory.mktemp("c"))))
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    assert line, proc.stderr[-3000:]
    return semantics, json.loads(line[-1][len("RESULT "):])


@pytest.mark.slow  # a tf-keras interpreter per flavour, ~70 s each
def test_tf_keras_project_models_keep_their_bn_layers_and_order(legacy):
    _, out = legacy
    assert not out["disagreements"]
    assert out["with_bn"] > 50


@pytest.mark.slow  # a tf-keras interpreter per flavour, ~70 s each
def test_tf_keras_finds_bn_however_it_is_held(legacy):
    _, out = legacy
    assert {c: new for c, (new, _, _) in out["cases"].items()} == {c: exp for c, (_, exp, _) in out["cases"].items()}
    assert out["cases"]["attribute"][2] == []  # the old traversal's miss, under tf-keras too


@pytest.mark.slow  # a tf-keras interpreter per flavour, ~70 s each
def test_tf_keras_precise_bn_reaches_bn_inside_a_custom_layer(legacy):
    check_precise(legacy[1]["precise"])
