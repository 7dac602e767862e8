"""Steps every Keras scenario shares: build the configured model, train it, and measure the accuracy
decomposition (batch statistics vs moving statistics vs precise-BN population statistics)."""

from __future__ import annotations

import time

from bnexp.toolkit import budget, data, models, precise_bn, probes, training


def build_model(cfg, ctx, d: data.Prepared, **overrides):
    """The model `cfg` describes, for data `d`; keyword overrides replace single arguments."""
    args = dict(name=cfg.model.name, input_shape=d.input_shape, num_classes=d.num_classes, norm=cfg.norm,
                momentum=float(cfg.bn.momentum), epsilon=float(cfg.bn.epsilon), bn_training=cfg.bn.training,
                flag_style=cfg.model.get("flag_style", "functional"),
                norm_layers=cfg.model.get("norm_layers", "conv_dense"))
    args.update(overrides)
    return models.build(ctx.fw, **args)


def train(cfg, ctx, model, d: data.Prepared, steps: int | None = None, seed_offset: int = 0,
          lr: float | None = None, history: list | None = None) -> dict:
    """Compile and fit for `steps` (default train.batches) optimizer steps at `lr` (default train.lr);
    metrics of the fit, logged into `history` (default the run's, ctx.history)."""
    steps = int(cfg.train.batches if steps is None else steps)
    training.compile_model(ctx.fw, model, cfg.train.optimizer, float(cfg.train.lr if lr is None else lr),
                           epoch_steps=training.chunks(steps)[1])
    ds = data.train_batches(d.x_train, d.y_train, int(cfg.train.batch_size), steps, int(cfg.seed) + seed_offset)
    started = time.perf_counter() - ctx.started  # the run's start: process start, or a warm worker's next run
    history = ctx.history if history is None else history
    return {**training.fit(model, ds, steps, history=history, verbose=int(cfg.get("verbose", 0))),
            "to_first_step_s": started}


def precise_stats(cfg, model, d: data.Prepared, batches: int | None = None,
                  seed_offset: int = 10_000) -> precise_bn.Recompute:
    """R1 population statistics from `batches` (default probe.precise_batches) fresh training batches of
    probe.precise_batch_size."""
    n = int(cfg.probe.precise_batches if batches is None else batches)
    stream = data.train_batches(d.x_train, d.y_train, int(cfg.probe.precise_batch_size), n,
                                int(cfg.seed) + seed_offset)
    return precise_bn.population_stats(model, stream)


def eval_sets(d: data.Prepared):
    """(split, images, labels) the decomposition measures on: as many training images as test images
    (accuracy on data the model was fitted to), and the test images."""
    n = len(d.x_test)
    return (("train", d.x_train[:n], d.y_train[:n]), ("test", d.x_test, d.y_test))


def decomposition(d: data.Prepared, accuracy, precise: bool) -> dict:
    """acc_<split>_<stats> on eval_sets(d) for stats batchstats and moving (and precise if `precise`), and
    gap_test. `accuracy(x, y, stats)` measures with the named statistics: the one accuracy loop of the
    Keras (decompose) and the TF1 graph (tf1_graph.decompose) scenarios."""
    out = {}
    for split, x, y in eval_sets(d):
        out[f"acc_{split}_batchstats"] = accuracy(x, y, "batchstats")
        out[f"acc_{split}_moving"] = accuracy(x, y, "moving")
    out["gap_test"] = out["acc_test_batchstats"] - out["acc_test_moving"]
    if precise:
        for split, x, y in eval_sets(d):
            out[f"acc_{split}_precise"] = accuracy(x, y, "precise")
    return out


def decompose(cfg, model, d: data.Prepared, precise: bool = True, prefix: str = "",
              stats: precise_bn.Recompute | None = None) -> dict:
    """Accuracy on train and test data with batch statistics, moving statistics and, if the model has
    BN layers and `precise`, recomputed population statistics (R1) plus its cost, the per-layer errors of
    the moving statistics against them (`stat.<layer>.*`) and the convergence summary (`stat_err_max`,
    `stat_converged`: probes.convergence).
    `stats`: R1 statistics already computed with `precise_stats` (reused instead of recomputed)."""
    bs = int(cfg.probe.eval_batch_size)
    precise = precise and bool(models.batch_norm_layers(model))

    def accuracy(x, y, which):
        if which == "precise":
            return probes.accuracy_precise(model, x, y, stats, batch_size=bs)
        return probes.accuracy(model, x, y, which == "batchstats", bs)

    if precise and stats is None:
        stats = precise_stats(cfg, model, d)
    out = decomposition(d, accuracy, precise)
    if precise:
        out["precise_forward_passes"] = stats.forward_passes
        out["precise_s"] = stats.seconds
        errors = probes.stat_errors(model, stats)
        out.update({f"stat.{k}": v for k, v in errors.items()})
        out.update(probes.convergence(errors))
    return {f"{prefix}{k}": v for k, v in out.items()}


def train_epochs(cfg, ctx) -> tuple[data.Prepared, object, dict]:
    """The epoch-budget runs (batch_size, variance): the run's data, the configured model trained for
    train.epochs epochs at train.batch_size (budget.epoch_steps), and the fit's metrics."""
    d = ctx.data()
    steps = budget.epoch_steps(cfg.train.epochs, len(d.x_train), int(cfg.train.batch_size))
    model = build_model(cfg, ctx, d)
    return d, model, train(cfg, ctx, model, d, steps=steps)
