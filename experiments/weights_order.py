"""C10: the order of a Keras BN layer's get_weights(), and what a standard deviation in slot 4 does.

Protocol. Train small_cnn for train.batches steps under the run's semantics (keras3, tf_keras, or
keras2_v1: tf-keras' V1 BN class). For every BN layer read get_weights() and identify each slot two
ways: by the name of the variable in that position of layer.weights, and by value (which of the
layer's gamma, beta, moving_mean, moving_variance attributes holds exactly that array). Then check
what slot 4 holds physically: compare it with the population variance and standard deviation of
the layer's input (precise BN, R1, over probe.precise_batches training batches). Finally write the
population mean into slot 3 and, into slot 4, once the population variance and once the population
standard deviation (set_weights, in get_weights order) and measure test accuracy with inference-mode
BN, plus the max |logit| difference between the two.
"""

from __future__ import annotations

import numpy as np

from bnexp import probes, protocol
from bnexp.models import batch_norm_layers

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
        **slot4_physics(layers, population),
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


def slot_names(layer) -> list[str]:
    """Names of the layer's variables in get_weights() order ('conv1_norm/gamma:0' -> 'gamma')."""
    return [w.name.split("/")[-1].split(":")[0] for w in layer.weights]


def slot_values(layer) -> list[str]:
    """Which attribute holds each get_weights() array exactly ('?' if none, '|'-joined if several)."""
    attributes = {name: np.asarray(getattr(layer, name)) for name in CANONICAL}
    out = []
    for array in layer.get_weights():
        hits = [name for name, value in attributes.items() if value.shape == array.shape and np.array_equal(value, array)]
        out.append("|".join(hits) or "?")
    return out


def slot4_physics(layers, population) -> dict:
    """Geometric mean over channels and layers of slot 4 / population variance and / population std."""
    to_var, to_std = [], []
    for layer, s in zip(layers, population.layers):
        slot4 = np.asarray(layer.get_weights()[3], np.float64)
        to_var.append(np.log(slot4 / s.var_biased))
        to_std.append(np.log(slot4 / np.sqrt(s.var_biased)))
    log_var, log_std = float(np.mean(np.concatenate(to_var))), float(np.mean(np.concatenate(to_std)))
    return {"slot4_over_pop_var": float(np.exp(log_var)), "slot4_over_pop_std": float(np.exp(log_std)),
            "slot4_closer_to_variance": float(abs(log_var) < abs(log_std))}


def write_population(layers, population, kind: str) -> None:
    """Population mean into slot 3 and the population variance or std into slot 4, via set_weights."""
    for layer, s in zip(layers, population.layers):
        w = layer.get_weights()
        w[2] = s.mean.astype(w[2].dtype)
        w[3] = (s.var_biased if kind == "variance" else np.sqrt(s.var_biased)).astype(w[3].dtype)
        layer.set_weights(w)
