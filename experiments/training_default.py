"""C16: a layer whose call() defaults to training=True, placed before BN, at inference.

Protocol. The configured small_cnn (BN, training=None) is wrapped as Input -> pre-layer -> network, with
the pre-layer training_default.layer:

- user_true:   a user layer `call(self, x, training=True)` that returns x unchanged;
- user_none:   the same layer with `training=None` (the control: no default);
- resizing:    keras.layers.Resizing to the input's own size;
- center_crop: keras.layers.CenterCrop to the input's own size.

Whether the installed Keras gives these layers a training=True default is recorded
(`pre_training_default`, read from the signature of the layer's call). The model is trained with
model.fit for train.batches steps, then probed with the public API at inference, restoring the
moving statistics after each probe:

- predict, evaluate and a direct call `model(x)` without a training argument: did they change the
  moving statistics (exact), and which statistics did the direct call normalize with (call_batchstats:
  1 batch statistics, 0 moving statistics, 0.5 the two give the same output);
- a sample alone vs inside a batch of 64, with predict and with direct calls (max |logit| difference);
- test accuracy with predict, with direct calls (batches of probe.eval_batch_size), and with precise
  BN (population statistics from training batches, inference mode forced with training=False).
"""

from __future__ import annotations

import inspect

import numpy as np

from bnexp.toolkit import probes, protocol


def run(cfg, ctx) -> dict:
    kind = cfg.training_default.layer
    d = ctx.data()
    pre = pre_layer(ctx.fw, kind, d.input_shape)
    model = wrapped(ctx.fw, pre, protocol.build_model(cfg, ctx, d), d.input_shape)
    initial = probes.moving_stats(model)
    fit = protocol.train(cfg, ctx, model, d)
    bs = int(cfg.probe.eval_batch_size)
    out = {**fit, "variant": f"{cfg.semantics}/{kind}", "pre_training_default": float(training_default(pre))}
    out.update(probes.stat_changes(model, d, initial, bs))
    out.update(direct_call_mode(model, d.x_test[:64]))
    out.update(batch_dependence(model, d.x_test[:64]))
    out.update(accuracies(cfg, model, d, bs))
    return out


def pre_layer(fw, kind: str, input_shape):
    L = fw.keras.layers
    height, width = input_shape[0], input_shape[1]
    if kind == "resizing":
        return L.Resizing(height, width, name="pre")
    if kind == "center_crop":
        return L.CenterCrop(height, width, name="pre")

    class UserTrue(L.Layer):
        def call(self, x, training=True):  # the pattern of keras-team/keras#23166
            return x

    class UserNone(L.Layer):
        def call(self, x, training=None):
            return x

    return (UserTrue if kind == "user_true" else UserNone)(name="pre")


def training_default(layer) -> bool:
    """Does the layer's call() declare training=True as its default?"""
    param = inspect.signature(layer.call).parameters.get("training")
    return param is not None and param.default is True


def wrapped(fw, pre, network, input_shape):
    keras = fw.keras
    inputs = keras.Input(input_shape)
    return keras.Model(inputs, network(pre(inputs)), name="with_pre")


def direct_call_mode(model, x) -> dict:
    with probes.moving_stats_kept(model):
        direct = np.asarray(model(x))
    batch_mode = probes.logits(model, x, True, len(x))
    moving_mode = probes.logits(model, x, False, len(x))
    return {"call_batchstats": probes.closer_to(direct, batch_mode, moving_mode)}


def batch_dependence(model, x) -> dict:
    """A sample alone vs inside the batch of len(x), with predict and with direct calls."""
    with probes.moving_stats_kept(model):
        alone = model.predict(x, batch_size=1, verbose=0)
        together = model.predict(x, batch_size=len(x), verbose=0)
        call_alone = np.concatenate([np.asarray(model(x[i:i + 1])) for i in range(len(x))])
        call_together = np.asarray(model(x))
    return {"logit_diff_alone_vs_batch_predict": float(np.max(np.abs(alone - together))),
            "logit_diff_alone_vs_batch_call": float(np.max(np.abs(call_alone - call_together)))}


def accuracies(cfg, model, d, bs: int) -> dict:
    with probes.moving_stats_kept(model):
        pred = model.predict(d.x_test, batch_size=bs, verbose=0)
        call = np.concatenate([np.asarray(model(d.x_test[i:i + bs])) for i in range(0, len(d.x_test), bs)])
    stats = protocol.precise_stats(cfg, model, d)
    out = {"acc_test_predict": float(np.mean(np.argmax(pred, -1) == d.y_test)),
           "acc_test_call": float(np.mean(np.argmax(call, -1) == d.y_test)),
           "acc_test_precise": probes.accuracy_precise(model, d.x_test, d.y_test, stats, batch_size=bs)}
    out["acc_predict_vs_precise"] = out["acc_test_predict"] - out["acc_test_precise"]
    out["acc_call_vs_precise"] = out["acc_test_call"] - out["acc_test_precise"]
    return out
