"""Steps every Keras scenario shares: build the configured model, train it, and measure the accuracy
decomposition (batch statistics vs moving statistics vs precise-BN population statistics)."""

from __future__ import annotations

import time

from bnexp.toolkit import data, models, precise_bn, probes, training


def build_model(cfg, ctx, d: data.Prepared, **overrides):
    """The model `cfg` describes, for data `d`; keyword overrides replace single arguments."""
    args = dict(name=cfg.model.name, input_shape=d.input_shape, num_classes=d.num_classes, norm=cfg.norm,
                momentum=float(cfg.bn.momentum), epsilon=float(cfg.bn.epsilon), bn_training=cfg.bn.training,
                flag_style=cfg.model.get("flag_style", "functional"))
    args.update(overrides)
    return models.build(ctx.fw, **args)


def train(cfg, ctx, model, d: data.Prepared, steps: int | None = None, seed_offset: int = 0) -> dict:
    """Compile and fit for `steps` (default train.batches) optimizer steps; metrics of the fit."""
    steps = int(cfg.train.batches if steps is None else steps)
    training.compile_model(ctx.fw, model, cfg.train.optimizer, float(cfg.train.lr))
    ds = data.train_batches(d.x_train, d.y_train, int(cfg.train.batch_size), steps, int(cfg.seed) + seed_offset)
    started = time.perf_counter() - ctx.started  # the run's start: process start, or a warm worker's next run
    return {**training.fit(model, ds, steps, history=ctx.history, verbose=int(cfg.get("verbose", 0))),
            "to_first_step_s": started}


def precise_stats(cfg, model, d: data.Prepared) -> precise_bn.Recompute:
    """R1 population statistics from `probe.precise_batches` fresh training batches."""
    n, bs = int(cfg.probe.precise_batches), int(cfg.probe.precise_batch_size)
    batches = data.train_batches(d.x_train, d.y_train, bs, n, int(cfg.seed) + 10_000)
    return precise_bn.population_stats(model, batches)


def decompose(cfg, model, d: data.Prepared, precise: bool = True, prefix: str = "",
              stats: precise_bn.Recompute | None = None) -> dict:
    """Accuracy on train and test data with batch statistics, moving statistics and, if the model has
    BN layers and `precise`, recomputed population statistics (R1) plus its cost and stat errors.
    `stats`: R1 statistics already computed with `precise_stats` (reused instead of recomputed)."""
    bs = int(cfg.probe.eval_batch_size)
    out = {}
    for split, x, y in (("train", d.x_train[: len(d.x_test)], d.y_train[: len(d.y_test)]),
                        ("test", d.x_test, d.y_test)):
        out[f"acc_{split}_batchstats"] = probes.accuracy(model, x, y, True, bs)
        out[f"acc_{split}_moving"] = probes.accuracy(model, x, y, False, bs)
    out["gap_test"] = out["acc_test_batchstats"] - out["acc_test_moving"]
    if precise and models.batch_norm_layers(model):
        stats = stats if stats is not None else precise_stats(cfg, model, d)
        out["acc_train_precise"] = probes.accuracy_precise(model, d.x_train[: len(d.x_test)],
                                                           d.y_train[: len(d.y_test)], stats, batch_size=bs)
        out["acc_test_precise"] = probes.accuracy_precise(model, d.x_test, d.y_test, stats, batch_size=bs)
        out["precise_forward_passes"] = stats.forward_passes
        out["precise_s"] = stats.seconds
        out.update({f"stat.{k}": v for k, v in probes.stat_errors(model, stats).items()})
    return {f"{prefix}{k}": v for k, v in out.items()}
