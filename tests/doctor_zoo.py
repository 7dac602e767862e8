"""Small saved models with known, injected BN pitfalls, for the doctor tests and the README transcript.

Synthetic 12x12x1 images in [0, 1], 4 classes (a class template plus uniform noise), saved as data.npz.
`python tests/doctor_zoo.py FOLDER` builds the set of the semantics its environment selects
(TF_USE_LEGACY_KERAS=1: tf-keras .h5 models; unset: Keras 3 .keras models); `python tests/doctor_zoo.py
FOLDER fashion` a small CNN trained briefly on Fashion-MNIST with stale moving statistics.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np

SIZE, CLASSES, SAMPLES = 12, 4, 2048


def make_data(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    templates = np.random.default_rng(123).uniform(0, 1, (CLASSES, SIZE, SIZE, 1))
    y = rng.integers(0, CLASSES, SAMPLES)
    x = np.clip(0.5 * templates[y] + 0.5 * rng.uniform(0, 1, (SAMPLES, SIZE, SIZE, 1)), 0, 1)
    return x.astype(np.float32), y.astype(np.int64)


def body(fw, x, momentum: float, name: str = ""):
    """conv -> BN -> relu -> pool -> dense -> BN -> relu: one BN after a conv, one after a dense layer."""
    L = fw.keras.layers
    x = L.Conv2D(8, 3, padding="same", use_bias=False, name=f"{name}conv")(x)
    x = fw.BatchNormalization(momentum=momentum, name=f"{name}conv_bn")(x)
    x = L.MaxPooling2D(name=f"{name}pool")(L.Activation("relu")(x))
    x = L.Dense(16, use_bias=False, name=f"{name}fc")(L.Flatten(name=f"{name}flat")(x))
    return L.Activation("relu")(fw.BatchNormalization(momentum=momentum, name=f"{name}fc_bn")(x))


def functional(fw, momentum: float, bn: bool = True):
    keras = fw.keras
    inp = keras.Input((SIZE, SIZE, 1))
    if bn:
        x = body(fw, inp, momentum)
    else:
        x = keras.layers.Dense(16, activation="relu")(keras.layers.Flatten()(inp))
    return keras.Model(inp, keras.layers.Dense(CLASSES, name="logits")(x))


def fit(fw, model, x, y, steps: int, lr: float = 1e-2, batch: int = 32):
    keras = fw.keras
    model.compile(keras.optimizers.Adam(lr), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    n = steps * batch
    reps = -(-n // len(x))
    model.fit(np.concatenate([x] * reps)[:n], np.concatenate([y] * reps)[:n], batch_size=batch, epochs=1,
              shuffle=False, verbose=0)
    return model


def fit_inference_mode(fw, model, x, y, steps: int, lr: float = 1e-2, batch: int = 32):
    """A custom loop that calls the model with training=False: BN's moving statistics never update (C03)."""
    tf, keras = fw.tf, fw.keras
    opt = keras.optimizers.Adam(lr)
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    for i in range(steps):
        j = (i * batch) % (len(x) - batch)
        with tf.GradientTape() as tape:
            value = loss(y[j:j + batch], model(x[j:j + batch], training=False))
        opt.apply_gradients(zip(tape.gradient(value, model.trainable_weights), model.trainable_weights))
    return model


def build_keras3(folder: Path, fw) -> dict[str, Path]:
    """Keras 3 .keras models: healthy, stale (C01), never updated (C03), training=True in call() (C04),
    build-time training=False on a nested base (C15), no BN."""
    import doctor_custom

    folder.mkdir(parents=True, exist_ok=True)
    x, y = make_data()
    np.savez(folder / "data.npz", x=x, y=y)
    paths = {}

    def save(name, model):
        paths[name] = folder / f"{name}.keras"
        model.save(paths[name])

    fw.set_seed(0)
    save("healthy", fit(fw, functional(fw, 0.9), x, y, steps=80))
    fw.set_seed(0)
    save("stale", fit(fw, functional(fw, 0.99), x, y, steps=20))
    fw.set_seed(0)
    save("never_updated", fit_inference_mode(fw, functional(fw, 0.9), x, y, steps=60))
    fw.set_seed(0)
    net = doctor_custom.AlwaysTrainingNet(CLASSES)
    net(x[:1])
    save("training_true", fit(fw, net, x, y, steps=80))
    fw.set_seed(0)
    save("base_training_false", fit(fw, guide_pattern(fw), x, y, steps=80))
    fw.set_seed(0)
    save("no_bn", fit(fw, functional(fw, 0.9, bn=False), x, y, steps=30))
    fw.set_seed(0)
    save("nested_block", nested_block(fw, x, y))
    fw.set_seed(0)
    model = fit(fw, subclass_model(fw), x, y, steps=20)
    model.get_layer("fc_mybn").trainable = False
    save("bn_subclass", model)
    fw.set_seed(0)
    save("guide_frozen", guide_recipe(fw, x, y))
    fw.set_seed(0)
    save("build_time_true", fit(fw, guide_pattern(fw, training=True), x, y, steps=80))
    fw.set_seed(0)
    save("dropout_bn", fit(fw, dropout_model(fw, dropout_first=True), x, y, steps=80))
    fw.set_seed(0)
    save("bn_dropout", fit(fw, dropout_model(fw, dropout_first=False), x, y, steps=80))
    fw.set_seed(0)
    save("large_mean", large_mean(fw, x, y))
    return paths


def dropout_model(fw, dropout_first: bool):
    """Dense -> Dropout(0.5) -> BN (claim C21: BN learns its variance with dropout on), or Dense -> BN ->
    Dropout(0.5), the order that does not shift BN's variance."""
    keras, L = fw.keras, fw.keras.layers
    inp = keras.Input((SIZE, SIZE, 1))
    h = L.Dense(16, name="fc")(L.Flatten()(inp))
    layers = [L.Dropout(0.5, name="drop"), fw.BatchNormalization(momentum=0.9, name="fc_bn")]
    for layer in layers if dropout_first else layers[::-1]:
        h = layer(h)
    return keras.Model(inp, L.Dense(CLASSES, name="logits")(L.Activation("relu")(h)))


def large_mean(fw, x, y):
    """A BN whose input has a mean of about 1e4 and a standard deviation of about 1 (a dense layer with bias 1e4,
    like un-normalised features; claim C18), its moving statistics then recomputed so that nothing else is off."""
    from bnexp.toolkit import precise_bn

    keras, L = fw.keras, fw.keras.layers
    inp = keras.Input((SIZE, SIZE, 1))
    h = L.Dense(8, kernel_initializer=keras.initializers.RandomNormal(stddev=0.5),
                bias_initializer=keras.initializers.Constant(1e4), name="offset")(L.Flatten()(inp))
    h = L.Activation("relu")(fw.BatchNormalization(name="offset_bn")(h))
    model = fit(fw, keras.Model(inp, L.Dense(CLASSES, name="logits")(h)), x, y, steps=40)
    stats = precise_bn.population_stats(model, [x[i:i + 64] for i in range(0, 1024, 64)])
    bn = model.get_layer("offset_bn")
    bn.moving_mean.assign(stats.layers[0].mean.astype(np.float32))
    bn.moving_variance.assign(stats.layers[0].var_biased.astype(np.float32))
    return model


def guide_pattern(fw, training: bool = False, base=None):
    """The Keras fine-tuning guide's `base(x, training=False)` on a trainable base (claim C15); training=True: the
    flag fixed the other way, which a direct call model(x) honours."""
    keras = fw.keras
    if base is None:
        inp = keras.Input((SIZE, SIZE, 1))
        base = keras.Model(inp, body(fw, inp, 0.9, "base_"), name="base")
    outer_in = keras.Input((SIZE, SIZE, 1))
    return keras.Model(outer_in, keras.layers.Dense(CLASSES, name="logits")(base(outer_in, training=training)))


def guide_recipe(fw, x, y):
    """The guide's recipe as written: a base trained first (here on the same task), then frozen
    (base.trainable = False) and called with training=False under a new head trained for 20 steps."""
    keras = fw.keras
    inp = keras.Input((SIZE, SIZE, 1))
    base = keras.Model(inp, body(fw, inp, 0.9, "base_"), name="base")
    fit(fw, keras.Model(inp, keras.layers.Dense(CLASSES)(base.output)), x, y, steps=80)
    base.trainable = False
    return fit(fw, guide_pattern(fw, base=base), x, y, steps=20)


def nested_block(fw, x, y):
    """BN held as an attribute of a custom layer (doctor_custom.ConvBN, center off) and a plain BN, momentum 0.99
    for 20 steps (stale, C01)."""
    import doctor_custom

    keras = fw.keras
    inp = keras.Input((SIZE, SIZE, 1))
    block = doctor_custom.ConvBN(8, 0.99, name="block")
    h = keras.layers.MaxPooling2D()(block(inp))
    h = keras.layers.Dense(16, use_bias=False, name="fc")(keras.layers.Flatten()(h))
    h = keras.layers.Activation("relu")(keras.layers.BatchNormalization(momentum=0.99, name="fc_bn")(h))
    return fit(fw, keras.Model(inp, keras.layers.Dense(CLASSES, name="logits")(h)), x, y, steps=20)


def subclass_model(fw):
    """conv -> doctor_custom.MyBatchNorm (a BatchNormalization subclass, scale off) -> dense -> MyBatchNorm, momentum
    0.99: trained for 20 steps its statistics are stale (C01); the dense layer's BN is then frozen
    (trainable=False) while the other layers stay trainable (C06)."""
    import doctor_custom

    keras, L = fw.keras, fw.keras.layers
    inp = keras.Input((SIZE, SIZE, 1))
    h = L.Conv2D(8, 3, padding="same", use_bias=False, name="conv")(inp)
    h = L.Activation("relu")(doctor_custom.MyBatchNorm(momentum=0.99, scale=False, name="conv_mybn")(h))
    h = L.Dense(16, use_bias=False, name="fc")(L.Flatten()(L.MaxPooling2D()(h)))
    h = L.Activation("relu")(doctor_custom.MyBatchNorm(momentum=0.99, name="fc_mybn")(h))
    return keras.Model(inp, L.Dense(CLASSES, name="logits")(h))


def build_tf_keras(folder: Path, fw) -> dict[str, Path]:
    """tf-keras .h5 models: BN layers frozen inside a trainable base after training (C06-like), healthy."""
    folder.mkdir(parents=True, exist_ok=True)
    x, y = make_data()
    keras = fw.keras
    fw.set_seed(0)
    inp = keras.Input((SIZE, SIZE, 1))
    base = keras.Model(inp, body(fw, inp, 0.9, "base_"), name="base")
    outer_in = keras.Input((SIZE, SIZE, 1))
    model = keras.Model(outer_in, keras.layers.Dense(CLASSES, name="logits")(base(outer_in)))
    fit(fw, model, x, y, steps=80)
    for layer in base.layers:  # freeze BN only; the base stays trainable and fine-tunes briefly
        if type(layer).__name__ == "BatchNormalization":
            layer.trainable = False
    fit(fw, model, x, y, steps=5, lr=1e-4)
    paths = {"frozen_bn": folder / "frozen_bn.h5"}
    model.save(paths["frozen_bn"])
    return paths


def build_fashion(folder: Path, fw) -> dict[str, Path]:
    """bnexp's small_cnn on Fashion-MNIST ([0, 1] inputs), BN momentum 0.99, 30 steps of batch 64: claim C01's
    setting, for the README's doctor transcript."""
    from omegaconf import OmegaConf

    from bnexp import CONFIG_DIR
    from bnexp.toolkit import data, models

    folder.mkdir(parents=True, exist_ok=True)
    fw.set_seed(0)
    cfg = OmegaConf.load(CONFIG_DIR / "data" / "fashion_mnist.yaml")
    d = data.from_config(cfg, Path(os.environ.get("BNEXP_CACHE", "~/.cache/bnexp")).expanduser(), seed=0)
    model = models.build(fw, "small_cnn", d.input_shape, d.num_classes, momentum=0.99)
    fit(fw, model, d.x_train, d.y_train, steps=30, lr=1e-3, batch=64)
    paths = {"fashion_stale": folder / "fashion_stale.keras"}
    model.save(paths["fashion_stale"])
    return paths


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bnexp.toolkit.framework import activate

    legacy = os.environ.get("TF_USE_LEGACY_KERAS") == "1"
    fw = activate("tf_keras" if legacy else "keras3")
    which = sys.argv[2] if len(sys.argv) > 2 else "zoo"
    build = build_fashion if which == "fashion" else build_tf_keras if legacy else build_keras3
    built = build(Path(sys.argv[1]), fw)
    print("\n".join(f"{k} {v}" for k, v in built.items()))
