"""Model builders. The norm layer, the BN arguments and the way BN's `training` flag is fixed are
parameters, and every builder works with any Keras flavour (see bnexp.toolkit.framework.Flavour).

flag_style:
  functional  BN is called with `training=bn_training` while the functional model is built
              (None: not given, BN follows the mode the model is called in).
  subclass    a subclassed model whose call() passes `training=bn_training` to BN, hard-coded
              (None: it forwards the `training` it receives).
"""

from __future__ import annotations

import contextlib
import sys

from bnexp.errors import UserError
from bnexp.names import FLAG_STYLES, MODELS, NORM_LAYERS, NORMS

# Batch Renormalization's clipping (norm=brn_clip): the final limits of Ioffe (2017), sec. 4, held fixed from the
# first step. The paper starts at rmax=1, dmax=0 (plain BN) and relaxes them over its first 5k-40k steps; our
# runs take 32-2048 steps, so a schedule would leave them at plain BN almost throughout.
BRN_CLIPPING = {"rmax": 3.0, "rmin": 1.0 / 3.0, "dmax": 5.0}


def norm_layer(fw, norm: str, momentum: float, epsilon: float, name: str, rank: int):
    """A normalization layer of kind `norm` for features of `rank` (2: dense, 4: conv); None for `none`."""
    L = fw.keras.layers
    if norm == "bn":
        return fw.BatchNormalization(momentum=momentum, epsilon=epsilon, name=name)
    if norm in ("brn", "brn_clip"):
        # renorm statistics follow the same momentum as the moving ones (Keras' own default is 0.99)
        return fw.BatchNormalization(momentum=momentum, epsilon=epsilon, renorm=True, renorm_momentum=momentum,
                                     renorm_clipping=dict(BRN_CLIPPING) if norm == "brn_clip" else None, name=name)
    if norm == "gn":
        return L.GroupNormalization(groups=8, epsilon=epsilon, name=name)
    if norm == "ln":
        return L.LayerNormalization(axis=[1, 2, 3] if rank == 4 else -1, epsilon=epsilon, name=name)
    if norm == "none":
        return None
    raise UserError(f"unknown norm {norm!r}; valid: {', '.join(NORMS)}")


# Where each flavour keeps its BatchNormalization classes: (module, attribute path). tf-keras' SyncBatchNormalization
# sits in layers.experimental (and in layers in some releases); its V1 class (keras2_v1) only in its source module.
_BN_CLASSES = (("keras", "layers.BatchNormalization"),
               ("tf_keras", "layers.BatchNormalization"),
               ("tf_keras", "layers.SyncBatchNormalization"),
               ("tf_keras", "layers.experimental.SyncBatchNormalization"),
               ("tf_keras.src.layers.normalization.batch_normalization_v1", "BatchNormalization"))


def _batch_norm_classes() -> tuple:
    """The BatchNormalization classes of the flavours imported in this process: looked up in sys.modules, never
    imported (importing a flavour would start it, and one process holds one flavour)."""
    found = []
    for module, path in _BN_CLASSES:
        obj = sys.modules.get(module)
        for attr in path.split("."):
            obj = getattr(obj, attr, None)
        if isinstance(obj, type):
            found.append(obj)
    return tuple(found)


def is_batch_norm(layer) -> bool:
    """True for BatchNormalization of any flavour (including renorm), and for subclasses of it (users' own,
    tf-keras' SyncBatchNormalization); the class-name test keeps any other class called BatchNormalization
    (tf.compat.v1.layers') counting, as it always did."""
    return type(layer).__name__ == "BatchNormalization" or isinstance(layer, _batch_norm_classes())


def _sequential_layers(fw, name, norm, momentum, epsilon, norm_layers="conv_dense"):
    """(layer, is_bn) pairs of a plain feed-forward architecture; `norm_layers` (NORM_LAYERS) says which
    layers carry the norm: a layer without one keeps its bias."""
    if norm_layers not in NORM_LAYERS:
        raise UserError(f"unknown model.norm_layers {norm_layers!r}; valid: {', '.join(NORM_LAYERS)}")
    L = fw.keras.layers
    out = []

    def normed(rank):
        return norm != "none" and (rank == 4 or norm_layers == "conv_dense")

    def block(layer, rank, tag):
        out.append((layer, False))
        n = norm_layer(fw, norm if normed(rank) else "none", momentum, epsilon, f"{tag}_norm", rank)
        if n is not None:
            out.append((n, is_batch_norm(n)))
        out.append((L.Activation("relu", name=f"{tag}_relu"), False))

    if name == "small_cnn":
        block(L.Conv2D(16, 3, padding="same", use_bias=not normed(4), name="conv1"), 4, "conv1")
        out.append((L.MaxPooling2D(name="pool1"), False))
        block(L.Conv2D(32, 3, padding="same", use_bias=not normed(4), name="conv2"), 4, "conv2")
        out.append((L.MaxPooling2D(name="pool2"), False))
        out.append((L.Flatten(name="flatten"), False))
        block(L.Dense(64, use_bias=not normed(2), name="fc1"), 2, "fc1")
    elif name == "mlp":
        out.append((L.Flatten(name="flatten"), False))
        block(L.Dense(128, use_bias=not normed(2), name="fc1"), 2, "fc1")
        block(L.Dense(64, use_bias=not normed(2), name="fc2"), 2, "fc2")
    else:
        raise UserError(f"unknown model {name!r}; valid: {', '.join(MODELS)}")
    return out


def build(fw, name: str, input_shape, num_classes: int, norm: str = "bn", momentum: float = 0.99,
          epsilon: float = 1e-3, bn_training=None, flag_style: str = "functional", model_name: str | None = None,
          norm_layers: str = "conv_dense"):
    """A Keras model returning logits. See the module docstring for `bn_training` and `flag_style`;
    `norm_layers`: bnexp.names.NORM_LAYERS (small_cnn and mlp; resnet_tiny normalizes every conv)."""
    if flag_style not in FLAG_STYLES:
        raise UserError(f"unknown model.flag_style {flag_style!r}; valid: {', '.join(FLAG_STYLES)}")
    keras = fw.keras
    if name == "resnet_tiny":
        if flag_style != "functional":
            raise UserError("model=resnet_tiny is built functionally only; use model.flag_style=functional")
        if norm_layers != "conv_dense":
            raise UserError("model=resnet_tiny has conv layers only; model.norm_layers must be conv_dense")
        return _resnet_tiny(fw, input_shape, num_classes, norm, momentum, epsilon, bn_training, model_name)
    layers = _sequential_layers(fw, name, norm, momentum, epsilon, norm_layers)
    head = keras.layers.Dense(num_classes, name="logits")
    if flag_style == "subclass":
        return flag_fixed(keras, [layer for layer, _ in layers], [bn for _, bn in layers], head, bn_training,
                          input_shape, model_name or name)
    inputs = keras.Input(shape=tuple(input_shape), name="image")
    x = inputs
    for layer, bn in layers:
        x = layer(x, training=bn_training) if bn and bn_training is not None else layer(x)
    return keras.Model(inputs, head(x), name=model_name or name)


def flag_fixed(keras, parts, flagged, head, training, input_shape, name: str):
    """A subclassed model that calls `parts` in turn, then `head`, and passes `training` (hard-coded in
    its call(), the way users write it) to each part whose `flagged` entry is true; None: it forwards the
    `training` it receives. Built by one call on zeros, whose updates of the moving statistics are undone."""
    import numpy as np

    fixed = training

    class FlagModel(keras.Model):
        def __init__(self):
            super().__init__(name=name)
            self.body, self.is_flagged, self.head = list(parts), list(flagged), head

        def call(self, x, training=None):
            for part, takes_flag in zip(self.body, self.is_flagged):
                x = part(x, training=fixed if fixed is not None else training) if takes_flag else part(x)
            return self.head(x)

    def bns(part):
        return [part] if is_batch_norm(part) else batch_norm_layers(part)

    kept = {id(b): (np.array(b.moving_mean), np.array(b.moving_variance)) for p in parts for b in bns(p) if b.built}
    model = FlagModel()
    model(np.zeros((1, *input_shape), np.float32))  # create the weights ...
    for b in batch_norm_layers(model):  # ... and undo what a hard-coded training=True call did to the statistics:
        initial = (np.zeros(b.moving_mean.shape, np.float32), np.ones(b.moving_variance.shape, np.float32))
        mean, var = kept.get(id(b), initial)  # a pretrained part gets its own back, a new layer its 0/1
        b.moving_mean.assign(mean)
        b.moving_variance.assign(var)
    return model


def _resnet_tiny(fw, input_shape, num_classes, norm, momentum, epsilon, bn_training, model_name):
    keras = fw.keras
    L = keras.layers
    count = iter(range(1000))

    def normed(x, rank=4):
        n = norm_layer(fw, norm, momentum, epsilon, f"norm{next(count)}", rank)
        if n is None:
            return x
        return n(x, training=bn_training) if is_batch_norm(n) and bn_training is not None else n(x)

    inputs = keras.Input(shape=tuple(input_shape), name="image")
    x = L.Activation("relu")(normed(L.Conv2D(16, 3, padding="same", use_bias=norm == "none")(inputs)))
    for stage, filters in enumerate((16, 32, 64)):
        stride = 1 if stage == 0 else 2
        y = L.Activation("relu")(normed(L.Conv2D(filters, 3, strides=stride, padding="same",
                                                 use_bias=norm == "none")(x)))
        y = normed(L.Conv2D(filters, 3, padding="same", use_bias=norm == "none")(y))
        if stride != 1 or x.shape[-1] != filters:
            x = normed(L.Conv2D(filters, 1, strides=stride, use_bias=norm == "none")(x))
        x = L.Activation("relu")(L.Add()([x, y]))
    x = L.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, L.Dense(num_classes, name="logits")(x), name=model_name or "resnet_tiny")


@contextlib.contextmanager
def intercepted(layers, hook):
    """Inside the block, a call of `layers[i]` runs `hook(i, call, inputs, training, **kwargs)`, where `call`
    is the layer's own call method: the one way bnexp looks inside BN layers (record their inputs, force
    a mode, keep their outputs), whatever model they sit in (nested bases, subclassed models)."""
    def wrapper(i, call):
        def wrapped(inputs, training=None, **kwargs):
            return hook(i, call, inputs, training, **kwargs)
        return wrapped

    for i, layer in enumerate(layers):
        layer.call = wrapper(i, layer.call)
    try:
        yield
    finally:
        for layer in layers:
            del layer.call  # back to the class's method


def to_numpy(tensor, dtype=None):
    """A tensor of any backend as a NumPy array (a PyTorch tensor is detached from its graph first)."""
    import numpy as np

    if hasattr(tensor, "detach"):
        tensor = tensor.detach().cpu()
    return np.asarray(tensor, dtype)


def batch_norm_layers(model) -> list:
    """Every BatchNormalization layer in `model`, each once, in call order: nested models included, and BN held
    by custom layers (as an attribute, or in a list or dict attribute) at any depth.

    Depth-first through each layer's `.layers` (a model's own order, as before), then whatever else Keras
    tracks as its direct sublayers (`_flatten_layers(recursive=False)`, Keras 3 and tf-keras alike). The walk
    is our own: Keras 3's recursive `_flatten_layers` visits a nested layer's sublayers in reverse order. Inside
    a custom layer the order is the one Keras tracks: attribute assignment (tf-keras: a dict's values by key)."""
    found, seen = [], {id(model)}

    def walk(layer):
        flatten = getattr(layer, "_flatten_layers", None)
        tracked = list(flatten(include_self=False, recursive=False)) if flatten else []
        for sub in [*getattr(layer, "layers", []), *tracked]:
            if id(sub) in seen:
                continue
            seen.add(id(sub))
            if is_batch_norm(sub):
                found.append(sub)
            else:
                walk(sub)

    walk(model)
    return found
