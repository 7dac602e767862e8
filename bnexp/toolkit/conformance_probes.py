"""Conformance probes: one short measurement per framework-behaviour claim, on tiny synthetic tensors.

Imported only by experiments/conformance.py. Each probe takes (keras, backend, rng, sizes) - the imported
Keras 3 module, its backend's name, a NumPy generator seeded by the run, the scenario's `conformance` sizes -
and returns a flat dict of numbers that a conformance check (configs/scenario/conformance.yaml) compares
with a threshold. Only Keras' public API is used, so a probe runs the same on every Keras 3 release and
backend; a probe that fails there (an old release on a newer JAX, an API a release lacks) records
`<probe>_error` instead of its numbers and the other probes still run.

Models are tiny (8x8x1 images, 4 conv filters, 3 classes; an MLP for C21) and fits are a few steps: what is
measured is what Keras does with BN (which statistics change, which mode BN runs in), not accuracy, except
C21, whose claim is about accuracy.
"""

from __future__ import annotations

from functools import partial

import numpy as np

from bnexp.errors import UserError

SHAPE = (8, 8, 1)  # image size of the conv probes
CLASSES = 3


# ---------------------------------------------------------------- helpers


def to_numpy(keras, x) -> np.ndarray:
    return np.asarray(keras.ops.convert_to_numpy(x), dtype=np.float64)


def bn_layers(keras, model) -> list:
    return [layer for layer in model._flatten_layers() if isinstance(layer, keras.layers.BatchNormalization)]


def moving(keras, model) -> np.ndarray:
    """Every BN layer's moving mean and variance, concatenated (exact copies, for equality tests)."""
    return np.concatenate([np.asarray(keras.ops.convert_to_numpy(w), dtype=np.float32).ravel()
                           for layer in bn_layers(keras, model) for w in (layer.moving_mean, layer.moving_variance)])


def images(rng, n: int) -> tuple[np.ndarray, np.ndarray]:
    return rng.random((n, *SHAPE), dtype=np.float32), rng.integers(0, CLASSES, n)


def compile_fit(keras, model, x, y, batch_size: int, epochs: int = 1, lr: float = 0.01) -> None:
    model.compile(keras.optimizers.Adam(lr), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, y, batch_size=batch_size, epochs=epochs, verbose=0, shuffle=False)


def conv_net(keras, flag, style: str):
    """Conv -> BN (called with training=flag; None: not given) -> Dense. `functional`: the flag is fixed
    while building a functional model; `subclass`: hard-coded in a subclassed model's call()."""
    if style == "functional":
        inputs = keras.Input(SHAPE)
        h = keras.layers.Conv2D(4, 3)(inputs)
        bn = keras.layers.BatchNormalization()
        h = bn(h) if flag is None else bn(h, training=flag)
        return keras.Model(inputs, keras.layers.Dense(CLASSES)(keras.layers.Flatten()(h)))

    class Net(keras.Model):
        def __init__(self):
            super().__init__()
            self.conv, self.bn = keras.layers.Conv2D(4, 3), keras.layers.BatchNormalization()
            self.flat, self.out = keras.layers.Flatten(), keras.layers.Dense(CLASSES)

        def call(self, x, training=None):
            h = self.conv(x)
            h = self.bn(h) if flag is None else self.bn(h, training=flag)
            return self.out(self.flat(h))

    model = Net()
    model(np.zeros((1, *SHAPE), np.float32))  # build
    return model


def alone_vs_batch(keras, model, x) -> float:
    """Largest |logit| difference of samples predicted one at a time vs all together (moving stats restored)."""
    kept = [(w, keras.ops.convert_to_numpy(w)) for layer in bn_layers(keras, model)
            for w in (layer.moving_mean, layer.moving_variance)]
    alone = model.predict(x, batch_size=1, verbose=0)
    together = model.predict(x, batch_size=len(x), verbose=0)
    for w, value in kept:
        w.assign(value)
    return float(np.max(np.abs(np.asarray(alone, np.float64) - np.asarray(together, np.float64))))


# ---------------------------------------------------------------- C03, C04, C07, C14: the training flag


def flag_false(keras, backend, rng, sizes) -> dict:
    """C03: training=False fixed in the model: does fit change the moving statistics? C07 (hard-coded flag):
    is a fit-mode forward pass (model(x, training=True), what fit computes) equal to predict?"""
    x, y = images(rng, int(sizes.samples))
    out = {}
    for style in ("functional", "subclass"):
        model = conv_net(keras, False, style)
        before = moving(keras, model)
        compile_fit(keras, model, x, y, int(sizes.batch_size))
        out[f"c03_{style}_stats_unchanged"] = float(np.array_equal(before, moving(keras, model)))
        kept = moving(keras, model)
        batch = x[:int(sizes.batch_size)]
        fit_mode = to_numpy(keras, model(batch, training=True))
        pred = np.asarray(model.predict(batch, batch_size=len(batch), verbose=0), np.float64)
        scale = max(1.0, np.max(np.abs(pred)))
        out[f"c07_{style}_fit_predict_rel_diff"] = float(np.max(np.abs(fit_mode - pred)) / scale)
        out[f"c07_{style}_call_changed_stats"] = float(not np.array_equal(kept, moving(keras, model)))
    return out


def flag_true(keras, backend, rng, sizes) -> dict:
    """C04: training=True fixed in the model: does a sample predicted alone differ from the same sample in a
    batch?"""
    x, y = images(rng, int(sizes.samples))
    out = {}
    for style in ("functional", "subclass"):
        model = conv_net(keras, True, style)
        compile_fit(keras, model, x, y, int(sizes.batch_size))
        out[f"c04_{style}_alone_vs_batch"] = alone_vs_batch(keras, model, x[:int(sizes.alone)])
    return out


def flag_none(keras, backend, rng, sizes) -> dict:
    """C14: training=None: fit changes the moving statistics, predict and evaluate leave them exactly as they were."""
    x, y = images(rng, int(sizes.samples))
    model = conv_net(keras, None, "functional")
    before = moving(keras, model)
    compile_fit(keras, model, x, y, int(sizes.batch_size))
    after_fit = moving(keras, model)
    model.predict(x, batch_size=int(sizes.batch_size), verbose=0)
    after_predict = moving(keras, model)
    model.evaluate(x, y, batch_size=int(sizes.batch_size), verbose=0)
    return {"c14_fit_changed": float(not np.array_equal(before, after_fit)),
            "c14_predict_changed": float(not np.array_equal(after_fit, after_predict)),
            "c14_evaluate_changed": float(not np.array_equal(after_predict, moving(keras, model)))}


# ---------------------------------------------------------------- C15: the fine-tuning guide's base(x, training=False)


def base_training_false(keras, backend, rng, sizes) -> dict:
    """C15: `base(x, training=False)`, base frozen and fitted, then unfrozen and compiled again: does the
    second fit leave the base's moving statistics unchanged, as the guide says?"""
    x, y = images(rng, int(sizes.samples))
    inputs = keras.Input(SHAPE)
    base = keras.Model(inputs, keras.layers.BatchNormalization()(keras.layers.Conv2D(4, 3)(inputs)))
    base.trainable = False
    outer_in = keras.Input(SHAPE)
    outer = keras.Model(outer_in, keras.layers.Dense(CLASSES)(keras.layers.Flatten()(base(outer_in, training=False))))
    before = moving(keras, base)
    compile_fit(keras, outer, x, y, int(sizes.batch_size))
    frozen = moving(keras, base)
    base.trainable = True
    compile_fit(keras, outer, x, y, int(sizes.batch_size))
    return {"c15_frozen_stats_unchanged": float(np.array_equal(before, frozen)),
            "c15_stats_unchanged": float(np.array_equal(frozen, moving(keras, base)))}


# ---------------------------------------------------------------- C16: a layer that defaults to training=True


def training_default(keras, backend, rng, sizes, kind: str) -> dict:
    """C16: a user layer whose call defaults to training=True (kind `user`), or Keras' Resizing (`resizing`),
    before BN: at inference (predict, no fit needed) does BN run in training mode - moving statistics changed,
    prediction depends on the batch?"""

    class DefaultsToTraining(keras.layers.Layer):
        def call(self, x, training=True):
            return x

    x, _ = images(rng, int(sizes.samples))
    inputs = keras.Input(SHAPE)
    h = keras.layers.Conv2D(4, 3)(inputs)
    h = DefaultsToTraining()(h) if kind == "user" else keras.layers.Resizing(SHAPE[0] - 2, SHAPE[1] - 2)(h)
    h = keras.layers.Flatten()(keras.layers.BatchNormalization()(h))
    model = keras.Model(inputs, keras.layers.Dense(CLASSES)(h))
    before = moving(keras, model)
    model.predict(x, batch_size=int(sizes.batch_size), verbose=0)
    return {f"c16_{kind}_predict_changed": float(not np.array_equal(before, moving(keras, model))),
            f"c16_{kind}_alone_vs_batch": alone_vs_batch(keras, model, x[:int(sizes.alone)])}


# ---------------------------------------------------------------- C17: trainable flipped after compile


def trainable_after_compile(keras, backend, rng, sizes, recompile: bool) -> dict:
    """C17: fit once (Keras builds its train function), set trainable=False on the BN layers, fit again without
    (recompile False) or with compiling again: did BN's gamma and beta change in the second fit?"""
    x, y = images(rng, int(sizes.samples))
    model = conv_net(keras, None, "functional")
    compile_fit(keras, model, x, y, int(sizes.batch_size))
    bns = bn_layers(keras, model)
    for layer in bns:
        layer.trainable = False
    before = [np.array(keras.ops.convert_to_numpy(w)) for layer in bns for w in (layer.gamma, layer.beta)]
    if recompile:
        compile_fit(keras, model, x, y, int(sizes.batch_size))
    else:
        model.fit(x, y, batch_size=int(sizes.batch_size), epochs=1, verbose=0, shuffle=False)
    after = [np.array(keras.ops.convert_to_numpy(w)) for layer in bns for w in (layer.gamma, layer.beta)]
    changed = not all(np.array_equal(a, b) for a, b in zip(before, after))
    return {f"c17_{'recompile' if recompile else 'no_recompile'}_frozen_changed": float(changed)}


# ---------------------------------------------------------------- C18: variance of inputs with a large mean


def large_mean(keras, backend, rng, sizes) -> dict:
    """C18: BN (momentum 0, so the moving variance is the batch variance BN computed) on float32 inputs
    mean + N(0, 1) for each mean in sizes.means: the moving variance against the float64 variance of the same
    float32 numbers, and the training-mode output's standard deviation against what exact arithmetic gives."""
    out, worst = {}, 0.0
    for mean in sizes.means:
        x = (float(mean) + rng.standard_normal((int(sizes.rows), 8))).astype(np.float32)
        exact = x.astype(np.float64).var(axis=0)
        bn = keras.layers.BatchNormalization(momentum=0.0, epsilon=1e-3)
        y = to_numpy(keras, bn(x, training=True))
        var = to_numpy(keras, bn.moving_variance)
        err = np.abs(var - exact) / exact
        std_err = np.abs(y.std(axis=0) - np.sqrt(exact / (exact + 1e-3)))
        key = f"c18_m{float(mean):g}"
        out[f"{key}_var_rel_err"] = _finite(np.max(err))
        out[f"{key}_out_std_err"] = _finite(np.max(std_err))
        out[f"{key}_var_min"] = float(np.min(var))
        worst = max(worst, out[f"{key}_var_rel_err"])
    out["c18_max_var_rel_err"] = worst
    return out


NONFINITE = 1e9  # what a NaN or infinite error counts as: larger than any threshold, and averageable


def _finite(value) -> float:
    value = float(value)
    return value if np.isfinite(value) else NONFINITE


# ---------------------------------------------------------------- C19: XLA on a constant large-valued channel


def xla_constant_channel(keras, backend, rng, sizes) -> dict:
    """C19 (TensorFlow backend only): BN in training mode on a batch whose channel 0 is one constant value
    (each of sizes.constants) and channels 1-3 N(0, 1); eager vs tf.function(jit_compile=True): the largest
    |output| on the constant channel (exact arithmetic: 0, the channel minus its own mean)."""
    if backend != "tensorflow":
        return {"c19_applies": 0.0}
    import tensorflow as tf

    out, worst = {"c19_applies": 1.0}, {"eager": 0.0, "jit": 0.0}
    for c in sizes.constants:
        x = rng.standard_normal((int(sizes.rows), 4)).astype(np.float32)
        x[:, 0] = np.float32(c)
        bn = keras.layers.BatchNormalization(epsilon=1e-3)
        bn.build(x.shape)

        def train_mode(t, bn=bn):
            return bn(t, training=True)

        for mode, call in (("eager", train_mode), ("jit", tf.function(train_mode, jit_compile=True))):
            value = _finite(np.max(np.abs(to_numpy(keras, call(tf.constant(x)))[:, 0])))
            out[f"c19_c{float(c):g}_{mode}_max_abs"] = value
            worst[mode] = max(worst[mode], value)
    out["c19_eager_max_abs"], out["c19_jit_max_abs"] = worst["eager"], worst["jit"]
    return out


# ---------------------------------------------------------------- C20: Masking over padded sequences


def masking(keras, backend, rng, sizes) -> dict:
    """C20: Masking(0) -> BN (momentum 0) on zero-padded sequences of random lengths, called in training mode:
    BN's statistics against those of the unpadded time steps (float64). stat_err: the larger of |mean error|
    in standard deviations and the relative variance error, over features; padded_err: the same for the
    statistics of every step, padding included (what ignoring the mask gives)."""
    n, steps, feats = int(sizes.sequences), int(sizes.steps), 4
    lengths = rng.integers(2, steps + 1, n)
    x = np.zeros((n, steps, feats), np.float32)
    valid = np.arange(steps)[None, :] < lengths[:, None]
    x[valid] = (3.0 + rng.standard_normal((int(valid.sum()), feats))).astype(np.float32)
    inputs = keras.Input((steps, feats))
    bn = keras.layers.BatchNormalization(momentum=0.0)
    model = keras.Model(inputs, bn(keras.layers.Masking(0.0)(inputs)))
    model(x, training=True)
    mean, var = to_numpy(keras, bn.moving_mean), to_numpy(keras, bn.moving_variance)
    real = x[valid].astype(np.float64)

    def err(m, v):
        return float(max(np.max(np.abs(m - real.mean(0)) / real.std(0)), np.max(np.abs(v - real.var(0)) / real.var(0))))

    flat = x.reshape(-1, feats).astype(np.float64)
    return {"c20_stat_err": _finite(err(mean, var)), "c20_padded_err": err(flat.mean(0), flat.var(0)),
            "c20_padding_frac": float(1 - valid.mean())}


# ---------------------------------------------------------------- C21: Dropout before BN


def dropout_bn(keras, backend, rng, sizes) -> dict:
    """C21: an MLP Dense -> [Dropout -> BN | BN -> Dropout] -> Dense on a synthetic 4-class problem, fitted for
    sizes.c21_epochs epochs. Per arrangement: var_ratio, the BN layer's moving variance over the variance of
    its input at inference (Dropout off) on the training set, averaged over units; acc_gap, test accuracy
    with those population statistics minus with the moving statistics."""
    dims, classes = 16, 4
    w = rng.standard_normal((dims, classes))
    x = rng.standard_normal((int(sizes.c21_train) + int(sizes.c21_test), dims)).astype(np.float32)
    y = np.argmax(x @ w + 0.5 * rng.standard_normal((len(x), classes)), axis=1)
    n = int(sizes.c21_train)
    x_tr, y_tr, x_te, y_te = x[:n], y[:n], x[n:], y[n:]
    out = {}
    for order in ("dropout_bn", "bn_dropout"):
        keras.utils.set_random_seed(int(rng.integers(2**31)))
        inputs = keras.Input((dims,))
        h = keras.layers.Dense(64, activation="relu")(inputs)
        bn = keras.layers.BatchNormalization(momentum=0.9)
        drop = keras.layers.Dropout(float(sizes.c21_rate))
        if order == "dropout_bn":
            h = drop(h)
            bn_input = h
            h = bn(h)
        else:
            bn_input = h
            h = drop(bn(h))
        model = keras.Model(inputs, keras.layers.Dense(classes)(h))
        compile_fit(keras, model, x_tr, y_tr, int(sizes.c21_batch_size), epochs=int(sizes.c21_epochs), lr=0.003)
        feats = np.asarray(keras.Model(inputs, bn_input).predict(x_tr, batch_size=512, verbose=0), np.float64)
        moving_mean, moving_var = to_numpy(keras, bn.moving_mean), to_numpy(keras, bn.moving_variance)
        live = feats.var(0) > 1e-6  # dead ReLU units have no variance to compare
        out[f"c21_{order}_var_ratio"] = float(np.mean(moving_var[live] / feats.var(0)[live]))
        acc_moving = _accuracy(model, x_te, y_te)
        bn.moving_mean.assign(feats.mean(0).astype(np.float32))
        bn.moving_variance.assign(feats.var(0).astype(np.float32))
        acc_pop = _accuracy(model, x_te, y_te)
        bn.moving_mean.assign(moving_mean.astype(np.float32))
        bn.moving_variance.assign(moving_var.astype(np.float32))
        out[f"c21_{order}_acc_moving"], out[f"c21_{order}_acc_population"] = acc_moving, acc_pop
        out[f"c21_{order}_acc_gap"] = acc_pop - acc_moving
    return out


def _accuracy(model, x, y) -> float:
    return float(np.mean(np.argmax(model.predict(x, batch_size=512, verbose=0), -1) == y))


# ---------------------------------------------------------------- all of them

# Probes that can fail apart on some setup are apart (Resizing needs torchvision on old torch releases; JAX
# raises on a trainable flip without recompiling), so the other half is still measured there.
PROBES = {"flag_false": flag_false, "flag_true": flag_true, "flag_none": flag_none,
          "base_training_false": base_training_false,
          "training_default_user": partial(training_default, kind="user"),
          "training_default_resizing": partial(training_default, kind="resizing"),
          "trainable_no_recompile": partial(trainable_after_compile, recompile=False),
          "trainable_recompile": partial(trainable_after_compile, recompile=True),
          "large_mean": large_mean, "xla_constant_channel": xla_constant_channel, "masking": masking,
          "dropout_bn": dropout_bn}


def run_all(keras, backend: str, seed: int, sizes, only=None) -> dict:
    """Every probe (or those named in `only`), each from Keras' seed `seed` and its own NumPy generator; a
    probe that raises records `<probe>_error` (type and message, one line) and its wall time, never its numbers."""
    import time

    unknown = sorted(set(only or ()) - set(PROBES))
    if unknown:
        raise UserError(f"conformance.probes names unknown probes {', '.join(unknown)}; valid: {', '.join(PROBES)} "
                        f"(null runs them all)")
    out = {}
    for i, (name, probe) in enumerate(PROBES.items()):
        if only and name not in only:
            continue
        keras.utils.set_random_seed(seed)
        rng = np.random.default_rng([seed, i])
        start = time.perf_counter()
        try:
            out.update(probe(keras, backend, rng, sizes))
        except Exception as e:  # recorded: this release/backend cannot run the probe
            out[f"{name}_error"] = " ".join(f"{type(e).__name__}: {e}".split())[:300]
        out[f"{name}_s"] = time.perf_counter() - start
    return out
