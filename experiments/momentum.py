"""C01/C02 (+R1): with high momentum and few training batches the moving statistics stay near their
initial 0/1, so inference accuracy falls below training-mode accuracy; momentum exp(-1/B) is said to
fix it, and precise BN (R1) should fix it whatever the momentum.

Protocol. Train small_cnn for B = train.batches optimizer steps with BN momentum m = bn.momentum
(or m = exp(-1/B) with momentum.rule=exp). On the same data, measure test (and train) accuracy with
batch statistics, with the moving statistics and with precise-BN population statistics (R1), and
how far each layer's moving mean and variance are from the population ones.

Other momenta from the same training run. BN in training mode never reads its moving statistics,
so the weights after B steps are the same for every momentum; only the moving averages differ.
Every BN layer's batch mean and variance are recorded at each step (bnexp.batch_moments), and the
moving statistics are replayed for each momentum in `momentum.replay` (`exp` = exp(-1/B)). Each
replayed momentum gets its own columns `m<value>.*`: the momentum, the weight m^B still on the
initial 0/1, test accuracy with those statistics, the gap to precise-BN accuracy (`gap_precise`: what
the verdicts read) and to batch-statistics accuracy (`gap_test`: transductive, each test batch normalized
with its own statistics) and per-layer errors against the population statistics. The replay is checked against
the layers' own statistics at the trained momentum (`replay_check.*`), and `last_batch.*` compares the moving
statistics with the last training batch's recomputed moments (equal when m = 0).
"""

from __future__ import annotations

import numpy as np

from bnexp.toolkit import batch_moments, precise_bn, probes, protocol
from bnexp.toolkit.models import batch_norm_layers


def run(cfg, ctx) -> dict:
    steps = int(cfg.train.batches)
    momentum, replays = trained_momentum(cfg, steps), replay_values(cfg)
    d = ctx.data()
    model = protocol.build_model(cfg, ctx, d, momentum=momentum)
    initial = probes.moving_stats(model)
    recorder = batch_moments.recorder(model, capacity=steps)
    with recorder.active():
        fit = protocol.train(cfg, ctx, model, d)
    population = protocol.precise_stats(cfg, model, d)
    out = {
        **fit,
        "momentum_used": momentum,
        "init_weight": momentum ** steps,  # share of the initial 0/1 left in the moving statistics
        "recorded_steps": recorder.steps,
        "weights_l1": weights_l1(model),  # equal across momenta if momentum leaves training untouched
        **protocol.decompose(cfg, model, d, stats=population),
    }
    moments = recorder.moments()
    out.update(checks(model, moments, initial, momentum))
    out["gap_precise"] = out["acc_test_precise"] - out["acc_test_moving"]
    for value in replays:
        out.update(replayed(cfg, model, d, moments, initial, value, population, out["acc_test_batchstats"],
                            out["acc_test_precise"]))
    return out


def trained_momentum(cfg, steps: int) -> float:
    rule = cfg.get("momentum", {}).get("rule")
    if rule is None:  # momentum.rule: null | exp (scenario.allowed)
        return float(cfg.bn.momentum)
    return batch_moments.resolve_momentum("exp", steps)


def replay_values(cfg) -> list:
    return list(cfg.get("momentum", {}).get("replay") or [])  # numbers in [0, 1) or exp (scenario.allowed)


def weights_l1(model) -> float:
    return float(sum(np.abs(np.asarray(w, np.float64)).sum() for w in model.trainable_weights))


def checks(model, moments, initial, momentum) -> dict:
    """Replay at the trained momentum vs the layers' own statistics; last batch vs moving statistics."""
    layers = batch_norm_layers(model)
    same = batch_moments.replay(moments, initial, layers, momentum)
    rm, rv = batch_moments.max_error(layers, same)
    lm = lv = float("nan")  # no training-mode step recorded (e.g. bn.training=false): nothing to compare
    if moments and len(moments[0][0]):
        lm, lv = batch_moments.max_error(layers, [(m[-1], v[-1]) for m, v in moments])
    return {"replay_check.mean_err": rm, "replay_check.var_rel_err": rv,
            "last_batch.mean_err": lm, "last_batch.var_rel_err": lv}


def replayed(cfg, model, d, moments, initial, value, population, acc_batchstats: float, acc_precise: float) -> dict:
    """Metrics of the moving statistics that momentum `value` would have produced in this run."""
    steps = len(moments[0][0]) if moments else 0
    m = batch_moments.resolve_momentum(value, int(cfg.train.batches))
    layers = batch_norm_layers(model)
    stats = batch_moments.as_stats(layers, batch_moments.replay(moments, initial, layers, m), steps)
    with precise_bn.swapped(model, stats):
        acc = probes.accuracy(model, d.x_test, d.y_test, False, int(cfg.probe.eval_batch_size))
        errors = probes.stat_errors(model, population)
    tag = f"m{value}"
    out = {f"{tag}.momentum": m, f"{tag}.init_weight": m ** steps, f"{tag}.acc_test_moving": acc,
           f"{tag}.gap_test": acc_batchstats - acc, f"{tag}.gap_precise": acc_precise - acc,
           f"{tag}.mean_err": float(np.mean([v for k, v in errors.items() if k.endswith(".mean_err")])),
           f"{tag}.var_err": float(np.mean([abs(np.log(v)) for k, v in errors.items() if k.endswith(".var_ratio")]))}
    out.update({f"{tag}.{k}": v for k, v in errors.items()})
    return out
