"""C05, C06, C15 (+R1): fine-tuning a pretrained base with BN, frozen or not, under each BN semantics.

Pretraining. No pretrained weights can be downloaded here, so a base is pretrained on a source task:
the configured model (small_cnn) on `transfer.source` (Fashion-MNIST) classes `transfer.source_classes`
(0-4), `transfer.pretrain_steps` Adam steps, BN momentum `bn.momentum`. Its weights are cached on disk
(bnexp.toolkit.base_cache) by everything that shapes them, so a sweep pretrains each (semantics, seed) base once.
With `transfer.base_stats=precise` (default) pretraining ends with a precise-BN pass (R1) over source
batches, so the base's moving statistics are the source population's, as in a published base trained
long enough for its averages to settle; `ema` keeps the lagging averages of the short pretraining
(their source accuracy is recorded as `base_source_acc_test_ema`). The base is the pretrained model
minus its classifier (the input of the `logits` layer).

Target task. `transfer.target` classes `transfer.target_classes` (5-9) under the input domain shift
`transfer.shift`. The default, `invert` (x -> 255 - x), moves the mean pixel from 0.31 (source) and
0.26 (unshifted target) to 0.74 at the same spread, and flips the sign of every first-layer feature's
response to the image content, so the first BN layer's source moving statistics are far from the
target population's (recorded as `before.conv1_norm.mean_err`, `stat_dist_before`); `contrast` (spread
halved) and `brightness` (+80 grey levels, clipped) shift them less.

Fine-tuning. A new dense head (one logit per target class) goes on the base; `base.trainable` freezes
or unfreezes the base; `base.training` is the `training=` argument the base is called with (null: not
given) and `base.flag_style` where it is fixed: `functional` (in `base(x, training=...)` while building
the functional model, the Keras guide's pattern), `subclass` (hard-coded in a subclassed model's
call()), `layer` (at every BN layer inside the base, `BatchNormalization()(x, training=...)`). Then
plain `model.fit` for `train.batches` steps at `train.lr`.

Measured, all on target data:
- which statistics each BN layer normalizes with when the model is called as fit calls it
  (training=True) and as evaluate calls it (training=False): `fit_batchstats_frac`,
  `eval_batchstats_frac` (share of BN layers using batch statistics; decided by comparing the layer's
  output with both formulas, exact to float precision: probes.measure_modes);
- whether each BN layer's moving statistics changed during fit (exact array comparison):
  `changed.<layer>`, `bn_stats_changed` (share of BN layers);
- accuracy: at fit time (what the progress bar shows, `acc_train_fit`), with `evaluate()` on training
  and test data (`acc_train_eval`, `acc_test_eval`), and the batch-statistics / moving-statistics /
  precise-BN (R1) decomposition of bnexp.toolkit.protocol.decompose; `fit_eval_gap` = acc_train_fit -
  acc_train_eval is the "high train, low test" symptom as the progress bar shows it (acc_train_fit is a
  running mean over the fit's last steps, so it lags the model); the rules read the same symptom without
  the lag, after fit on the same training images: acc_train_batchstats (the model called as fit calls it,
  training=True, which a frozen TF2 BN layer still runs in inference mode) - acc_train_moving;
- distance between the base's moving statistics and the target data's population statistics,
  before (`stat_dist_before`) and after (`stat_dist_after`) fine-tuning: mean over BN layers of
  mean |moving_mean - pop_mean| / pop_std (per layer: `before.<layer>.mean_err`, `stat.<layer>...`);
- `batch_dependence`: max |logit| change of a sample predicted alone vs inside a batch of 64.

`flag_honoured`: with base.training true/false, 1 if every BN layer of the base used batch statistics
exactly when the flag says so, as fit and as evaluate call the model (NaN for null; `s2_flag_honoured`
in stage 2): Keras 3 ignores a flag fixed while building a functional model, and a flag that never
reached BN is no evidence about C15. The moving statistics' error against the target population after
fine-tuning: `stat_err_max`, `stat_converged` (protocol.decompose).

C05 arms (`transfer.lag_arms`, [momentum, steps] pairs; only where base.trainable=true, base.training
is null and the flag style is functional): the same fine-tuning (same base, head seed and batches)
repeated at other BN momenta and lengths, all measurements with prefix c05_m<100 x momentum>_b<steps>_.
They separate the mechanism (do the statistics change in fit: bn_stats_changed in every arm) from EMA
lag (the fit vs evaluate() gap at momentum 0.99 shrinking with more steps, and precise BN removing it).

Stage 2 (`transfer.stage2=true`, C15): after the frozen run above (the guide's stage 1), set
`base.trainable = True`, recompile and fine-tune `transfer.stage2_steps` more steps at
`transfer.stage2_lr` (the guide's low rate); the same measurements are recorded with prefix `s2_`.
With base.trainable=true there is nothing to unfreeze, so stage 2 is skipped (`stage2_ran` = 0).
"""

from __future__ import annotations

import time

import numpy as np
from omegaconf import OmegaConf

from bnexp.errors import DataUnavailable, UserError
from bnexp.toolkit import data as data_mod
from bnexp.toolkit import models, precise_bn, probes, protocol
from bnexp.toolkit.base_cache import BaseCache
from experiments import seeds

# ---------------------------------------------------------------- config and data


def check(cfg) -> None:
    """The lag arms' shape (every other transfer/base key is checked from scenario.allowed before TensorFlow)."""
    for arm in cfg.transfer.lag_arms:
        if len(arm) != 2 or not 0 <= float(arm[0]) < 1 or int(arm[1]) < 1:
            raise UserError(f"transfer.lag_arms: each arm is [momentum in [0, 1), steps >= 1], got {list(arm)}")


def load(cfg, ctx, role: str) -> data_mod.Prepared:
    """Source (unshifted) or target (shifted) view of `transfer.<role>`, with the `data` group's sizes."""
    t = cfg.transfer
    try:
        return ctx.data(name=t[role], classes=t[f"{role}_classes"], shift_kind="none" if role == "source" else t.shift)
    except DataUnavailable as e:
        raise DataUnavailable(f"transfer.{role}={t[role]}: {e}") from None


# ---------------------------------------------------------------- the pretrained base


def base_spec(cfg, ctx) -> dict:
    """Everything that shapes the pretrained weights: the cache key."""
    t = cfg.transfer
    return {
        "dataset": t.source, "classes": OmegaConf.to_container(t.source_classes), "shift": "none",
        "scaling": cfg.data.scaling, "train_size": cfg.data.get("train_size"),
        "model": cfg.model.name, "norm": cfg.norm, "momentum": float(cfg.bn.momentum),
        "epsilon": float(cfg.bn.epsilon), "semantics": cfg.semantics, "seed": int(cfg.seed),
        "steps": int(t.pretrain_steps), "batch_size": int(cfg.train.batch_size), "lr": float(t.pretrain_lr),
        "optimizer": cfg.train.optimizer, "base_stats": t.base_stats, "keras": ctx.fw.keras.__version__,
        "precise_batches": int(cfg.probe.precise_batches), "precise_batch_size": int(cfg.probe.precise_batch_size),
    }


def pretrain(cfg, ctx) -> tuple[list[np.ndarray], dict]:
    """Train the full model on the source task; its weights and how well it does there."""
    src = load(cfg, ctx, "source")
    if int(cfg.get("verbose", 0)):  # the progress lines below are the base's, not the run's fine-tuning
        print(f"pretraining the base on the source task: {int(cfg.transfer.pretrain_steps)} steps "
              f"(once per semantics and seed, then cached)", flush=True)
    ctx.fw.set_seed(int(cfg.seed))
    model = protocol.build_model(cfg, ctx, src, bn_training=None)
    fit = protocol.train(cfg, ctx, model, src, int(cfg.transfer.pretrain_steps), seed_offset=seeds.PRETRAIN,
                         lr=float(cfg.transfer.pretrain_lr), history=[])  # cached: not this run's history
    meta = {"source_acc_fit": fit["acc_train_fit"], "pretrain_s": fit["fit_s"], "input_shape": list(src.input_shape),
            "source_acc_test_ema": probes.accuracy(model, src.x_test, src.y_test, False)}
    if cfg.transfer.base_stats == "precise" and models.batch_norm_layers(model):
        # A published base was trained long enough for its moving averages to settle on the source
        # population; a short pretraining leaves them lagging behind the weights (C01's effect), which
        # would mix into every target measurement. So the base gets the source population statistics.
        precise_bn.apply(model, protocol.precise_stats(cfg, model, src, seed_offset=seeds.PRETRAIN_PRECISE))
    meta["source_acc_test"] = probes.accuracy(model, src.x_test, src.y_test, False)
    return model.get_weights(), meta


def pretrained_base(cfg, ctx, d: data_mod.Prepared, entry):
    """The cached base as a Keras model, its BN layers called with base.training if flag_style=layer."""
    if tuple(entry.meta["input_shape"]) != d.input_shape:
        raise UserError(f"the source images ({entry.meta['input_shape']}) and target images ({list(d.input_shape)}) "
                        f"differ in shape; pick transfer.source/target datasets of the same image size")
    inner = cfg.base.training if cfg.base.flag_style == "layer" else None
    full = protocol.build_model(cfg, ctx, d, num_classes=len(cfg.transfer.source_classes), bn_training=inner,
                                model_name="pretrained")
    full.set_weights(entry.weights)
    return ctx.fw.keras.Model(full.inputs, full.get_layer("logits").input, name="base")


def transfer_model(cfg, ctx, base, input_shape: tuple, num_classes: int):
    """A new head on `base`; the base is called as base.flag_style and base.training say."""
    keras = ctx.fw.keras
    flag, style = cfg.base.training, cfg.base.flag_style
    head = keras.layers.Dense(num_classes, name="head")
    if style == "subclass":  # the flag hard-coded in call(), as users write it in subclassed models
        return models.flag_fixed(keras, [base], [True], head, flag, input_shape, "transfer")
    inputs = keras.Input(shape=input_shape, name="image")
    features = base(inputs, training=flag) if style == "functional" and flag is not None else base(inputs)
    return keras.Model(inputs, head(features), name="transfer")


def evaluate_acc(cfg, model, x, y) -> float:
    """Accuracy as Keras' evaluate() reports it."""
    scores = model.evaluate(x, y, batch_size=int(cfg.probe.eval_batch_size), verbose=0, return_dict=True)
    return float(scores["accuracy"])


def flag_honoured(flag, modes: dict, prefix: str = "") -> float:
    """1 if every BN layer of the base used batch statistics exactly when base.training says so, both as
    fit calls the model and as evaluate calls it (measure_modes' shares), else 0; NaN for training=None."""
    if flag is None:
        return float("nan")
    want = float(bool(flag))
    return float(modes[f"{prefix}fit_batchstats_frac"] == want and modes[f"{prefix}eval_batchstats_frac"] == want)


def fine_tune(cfg, ctx, model, d, steps: int, lr: float, prefix: str = "", seed_offset: int = 0,
              stage: int | str = 1) -> dict:
    """Fit, then everything the module docstring lists, with keys prefixed by `prefix`."""
    out = probes.measure_modes(model, d.x_train[:int(cfg.train.batch_size)], prefix)
    out[f"{prefix}flag_honoured"] = flag_honoured(cfg.base.training, out, prefix)
    before, rows = probes.moving_stats(model), []
    fit = protocol.train(cfg, ctx, model, d, steps, seed_offset, lr, history=rows)
    fit.pop("to_first_step_s")  # start-up cost is measured by the scenarios without a pretraining
    out.update({f"{prefix}{k}": v for k, v in fit.items()})
    ctx.history.extend({"stage": stage, **row} for row in rows)
    changed = probes.layers_changed(before, probes.moving_stats(model))
    out.update({f"{prefix}changed.{name}": float(c) for name, c in changed.items()})
    out[f"{prefix}bn_stats_changed"] = float(np.mean(list(changed.values()))) if changed else float("nan")
    n = len(d.x_test)
    out[f"{prefix}acc_train_eval"] = evaluate_acc(cfg, model, d.x_train[:n], d.y_train[:n])
    out[f"{prefix}acc_test_eval"] = evaluate_acc(cfg, model, d.x_test, d.y_test)
    out[f"{prefix}fit_eval_gap"] = out[f"{prefix}acc_train_fit"] - out[f"{prefix}acc_train_eval"]
    dec = protocol.decompose(cfg, model, d, prefix=prefix)
    out.update(dec)
    if f"{prefix}acc_test_precise" in dec:
        out[f"{prefix}precise_gain_test"] = dec[f"{prefix}acc_test_precise"] - dec[f"{prefix}acc_test_moving"]
        mean_errs = [v for k, v in dec.items() if k.startswith(f"{prefix}stat.") and k.endswith(".mean_err")]
        out[f"{prefix}stat_dist_after"] = float(np.mean(mean_errs))
    return out


# ---------------------------------------------------------------- the run


def arm_prefix(momentum: float, steps: int) -> str:
    """Column prefix of a C05 arm: c05_m99_b100_ for momentum 0.99 x 100 steps (no dots: rule expressions)."""
    return f"c05_m{round(float(momentum) * 100):02d}_b{int(steps)}_"


def run(cfg, ctx) -> dict:
    check(cfg)
    t = cfg.transfer
    target = load(cfg, ctx, "target")
    start = time.perf_counter()
    entry = BaseCache(ctx.cache_dir).get_or_build(base_spec(cfg, ctx), lambda: pretrain(cfg, ctx))
    out = {"base_cache_hit": float(entry.hit), "base_s": time.perf_counter() - start,
           "base_source_acc_test": entry.meta["source_acc_test"],
           "base_source_acc_test_ema": entry.meta["source_acc_test_ema"], "base_pretrain_s": entry.meta["pretrain_s"]}

    ctx.fw.set_seed(int(cfg.seed) + seeds.NEXT_STAGE)  # same head and data order whether or not the base was cached
    base = pretrained_base(cfg, ctx, target, entry)
    base.trainable = bool(cfg.base.trainable)
    model = transfer_model(cfg, ctx, base, target.input_shape, target.num_classes)
    if models.batch_norm_layers(model):
        population = protocol.precise_stats(cfg, model, target, batches=int(t.dist_batches),
                                            seed_offset=seeds.POPULATION)
        out.update(probes.stat_distance(model, population, "before"))

    if int(cfg.get("verbose", 0)):
        print(f"fine-tuning on the target task: {int(cfg.train.batches)} steps", flush=True)
    out.update(fine_tune(cfg, ctx, model, target, int(cfg.train.batches), float(cfg.train.lr),
                         seed_offset=seeds.NEXT_STAGE))
    out["batch_dependence"] = probes.batch_dependence(model, target.x_test, False)
    if cfg.base.trainable and cfg.base.training is None and cfg.base.flag_style == "functional":
        for momentum, steps in t.lag_arms:  # C05: the same fine-tuning at other momenta and lengths
            ctx.fw.set_seed(int(cfg.seed) + seeds.NEXT_STAGE)
            arm = transfer_model(cfg, ctx, pretrained_base(cfg, ctx, target, entry), target.input_shape,
                                 target.num_classes)
            for layer in models.batch_norm_layers(arm):
                layer.momentum = float(momentum)
            out.update(fine_tune(cfg, ctx, arm, target, int(steps), float(cfg.train.lr), arm_prefix(momentum, steps),
                                 seed_offset=seeds.NEXT_STAGE, stage=arm_prefix(momentum, steps).rstrip("_")))

    out["stage2_ran"] = float(bool(t.stage2) and not cfg.base.trainable)
    if out["stage2_ran"]:
        base.trainable = True  # the guide's stage 2: unfreeze, recompile, fine-tune at a low rate
        out.update(fine_tune(cfg, ctx, model, target, int(t.stage2_steps), float(t.stage2_lr), prefix="s2_",
                             seed_offset=seeds.THIRD_STAGE, stage=2))
    return out
