"""C10: the order of a Keras BN layer's get_weights(), and what a standard deviation in slot 4 does.

Protocol. Train small_cnn for train.batches steps under the run's semantics (keras3, tf_keras, or
keras2_v1: tf-keras' V1 BN class). For every BN layer read get_weights() and identify each slot two
ways: by the name of the variable in that position of layer.weights, and by value (which of the
layer's gamma, beta, moving_mean, moving_variance attributes holds exactly that array).

What slot 4 holds physically, measured exactly: with every layer's momentum set to 0 for one
training-mode forward pass on a training batch, the moving statistics become that batch's moments,
so slot 4 is compared channel by channel with the batch variance and the batch standard deviation
of the layer's input, recorded on the same weights (slot4_is_batch_variance: slot 4 is closer to
the variance than to the std on a log scale in most channels; slot4_vs_batch_var_max_rel_err). For
orientation only, the trained slot 4 is also compared with the population variance and std
(slot4_over_pop_*): after train.batches steps the moving variance still carries momentum^B of its
initial 1, so that comparison is biased towards whichever of var and std is nearer to 1.

Finally write the population mean (precise BN, R1, over probe.precise_batches training batches) into
slot 3 and, into slot 4, once the population variance and once the population standard deviation
(set_weights, in get_weights order) and measure test accuracy with inference-mode BN, plus the max
|logit| difference between the two. With the variance in slot 4 this is precise BN (R1), so
acc_test_slot4_variance stands beside acc_test_moving (as trained); stat_err_max / stat_converged
say how far the trained moving statistics were from the population's.
"""

from __future__ import annotations

import numpy as np

from bnexp.toolkit import precise_bn, probes, protocol
from bnexp.toolkit.models import batch_norm_layers

CANONICAL = ("gamma", "beta", "moving_mean", "moving_variance")


def run(cfg, ctx) -> dict:
    d = ctx.data()
    model = protocol.build_model(cfg, ctx, d)
    fit = protocol.train(cfg, ctx, model, d)
    layers = batch_norm_layers(model)
    by_name = [slot_names(layer) for layer in layers]
    by_value = [slot_values(layer) for layer in layers]
    population = protocol.precise_stats(cfg, model, d)
    bs = int(cfg.probe.eval_batch_size)
    out = {
        **fit,
        "order_by_name": ",".join(by_name[0]),
        "order_by_value": ",".join(by_value[0]),
        "order_by_name_ok": float(all(tuple(o) == CANONICAL for o in by_name)),
        "order_by_value_ok": float(all(tuple(o) == CANONICAL for o in by_value)),
        "weights_per_layer": len(layers[0].get_weights()),
        "acc_test_moving": probes.accuracy(model, d.x_test, d.y_test, False, bs),
        **convergence(model, population),
        **slot4_physics(layers, population),
        **slot4_one_batch(model, layers, d.x_train[: int(cfg.train.batch_size)]),
    }
    logits = {}
    for kind in ("variance", "std"):
        with probes.moving_stats_kept(model):
            write_population(layers, population, kind)
            logits[kind] = probes.logits(model, d.x_test, False, bs)
        out[f"acc_test_slot4_{kind}"] = float(np.mean(np.argmax(logits[kind], -1) == d.y_test))
    out["acc_var_minus_std"] = out["acc_test_slot4_variance"] - out["acc_test_slot4_std"]
    out["logit_diff_var_vs_std"] = float(np.max(np.abs(logits["variance"] - logits["std"])))
    return out


def convergence(model, population) -> dict:
    """How far the trained moving statistics are from the population's: per layer (stat.<layer>.*) and
    stat_err_max / stat_converged (probes.convergence). acc_test_slot4_variance is the precise-BN accuracy."""
    errors = probes.stat_errors(model, population)
    return {**{f"stat.{k}": v for k, v in errors.items()}, **probes.convergence(errors)}


def slot_names(layer) -> list[str]:
    """Names of the layer's variables in get_weights() order ('conv1_norm/gamma:0' -> 'gamma')."""
    return [w.name.split("/")[-1].split(":")[0] for w in layer.weights]


def slot_values(layer) -> list[str]:
    """Which attribute holds each get_weights() array exactly ('?' if none, '|'-joined if several)."""
    attributes = {name: np.asarray(getattr(layer, name)) for name in CANONICAL}
    out = []
    for array in layer.get_weights():
        hits = [name for name, value in attributes.items()
                if value.shape == array.shape and np.array_equal(value, array)]
        out.append("|".join(hits) or "?")
    return out


def slot4_physics(layers, population) -> dict:
    """Geometric mean over channels and layers of the trained slot 4 / population variance and / std
    (biased by the initial 1 still in the moving variance; see the module docstring)."""
    to_var, to_std = [], []
    for layer, s in zip(layers, population.layers):
        slot4 = np.asarray(layer.get_weights()[3], np.float64)
        to_var.append(np.log(slot4 / s.var_biased))
        to_std.append(np.log(slot4 / np.sqrt(s.var_biased)))
    log_var, log_std = float(np.mean(np.concatenate(to_var))), float(np.mean(np.concatenate(to_std)))
    return {"slot4_over_pop_var": float(np.exp(log_var)), "slot4_over_pop_std": float(np.exp(log_std)),
            "slot4_closer_to_variance": float(abs(log_var) < abs(log_std))}


def slot4_one_batch(model, layers, x) -> dict:
    """Momentum 0 for one training-mode pass on `x`: slot 4 becomes the batch's moment; which one?"""
    moments = precise_bn.population_stats(model, [x])  # the batch moments of every BN input (no side effects)
    with probes.moving_stats_kept(model):
        saved = [layer.momentum for layer in layers]
        try:
            for layer in layers:
                layer.momentum = 0.0
            model(x, training=True)  # eager, so the changed momentum is read
            slot4 = [np.asarray(layer.get_weights()[3], np.float64) for layer in layers]
        finally:
            for layer, m in zip(layers, saved):
                layer.momentum = m
    var = np.concatenate([s.var_biased for s in moments.layers])
    slot4 = np.concatenate(slot4)
    closer = np.abs(np.log(slot4 / var)) < np.abs(np.log(slot4 / np.sqrt(var)))
    return {"slot4_is_batch_variance": float(np.mean(closer) > 0.5),
            "slot4_variance_channel_share": float(np.mean(closer)),
            "slot4_vs_batch_var_max_rel_err": float(np.max(np.abs(slot4 / var - 1))),
            "slot4_vs_batch_std_median_rel_err": float(np.median(np.abs(slot4 / np.sqrt(var) - 1)))}


def write_population(layers, population, kind: str) -> None:
    """Population mean into slot 3 and the population variance or std into slot 4, via set_weights."""
    for layer, s in zip(layers, population.layers):
        w = layer.get_weights()
        w[2] = s.mean.astype(w[2].dtype)
        w[3] = (s.var_biased if kind == "variance" else np.sqrt(s.var_biased)).astype(w[3].dtype)
        layer.set_weights(w)
