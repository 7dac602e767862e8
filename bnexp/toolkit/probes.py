"""Measurements on a trained Keras model, all on the same data, none of which changes the model.

- accuracy with batch statistics (every BN layer in training mode, moving statistics restored after),
- accuracy with the stored moving statistics (inference mode),
- accuracy with population statistics recomputed after training (precise BN, remedy R1),
- per-layer error of the moving statistics against the population statistics,
- prediction batch-dependence: a sample predicted alone vs inside a batch,
- which statistics (batch or moving) each BN layer normalizes with when the model is called in a mode.
"""

from __future__ import annotations

import contextlib

import numpy as np

from bnexp.toolkit import framework, precise_bn
from bnexp.toolkit.models import batch_norm_layers, intercepted, to_numpy

moving_stats_kept = precise_bn.statistics_kept  # restore BN statistics after a training-mode probe


def logits(model, x: np.ndarray, training: bool | None, batch_size: int = 256) -> np.ndarray:
    """Model outputs in batches of `batch_size`, calling the model with `training`."""
    fn = _compiled(model, training, x)
    with moving_stats_kept(model) if training else contextlib.nullcontext():
        return np.concatenate([to_numpy(fn(x[i:i + batch_size])) for i in range(0, len(x), batch_size)])


def _compiled(model, training, x: np.ndarray):
    """The model's forward pass in `training` mode: a cached tf.function on TensorFlow, a plain call elsewhere."""
    if framework.BACKEND != "tensorflow":
        return lambda b: model(b, training=training)
    import tensorflow as tf

    cache = model.__dict__.setdefault("_bnexp_fns", {})
    # A trace bakes in each BN layer's `trainable` (a frozen BN runs in inference mode), so the cache
    # is keyed by it too: a model unfrozen after a first probe (fine-tuning stage 2) is traced afresh.
    key = (training, tuple(layer.trainable for layer in batch_norm_layers(model)), tuple(x.shape[1:]), str(x.dtype))
    if key not in cache:
        # Any batch size from the first trace: a pass whose last batch is shorter traced twice before (the
        # second time with this very signature); the outputs are the same bits (tests/test_probes.py).
        spec = tf.TensorSpec((None, *x.shape[1:]), x.dtype)
        cache[key] = tf.function(lambda b: model(b, training=training), input_signature=[spec])
    return cache[key]


def accuracy(model, x, y, training: bool | None = False, batch_size: int = 256) -> float:
    """Top-1 accuracy; `training=True` normalizes with each batch's own statistics."""
    return float(np.mean(np.argmax(logits(model, x, training, batch_size), -1) == y))


def accuracy_precise(model, x, y, stats: precise_bn.Recompute, unbiased: bool = False, batch_size: int = 256) -> float:
    """Inference accuracy with the recomputed population statistics in place of the moving ones."""
    with precise_bn.swapped(model, stats, unbiased):
        return accuracy(model, x, y, False, batch_size)


# ---------------------------------------------------------------- statistic errors (the one definition)

EPS = 1e-12  # keeps empty channels (variance 0) finite


def mean_error(mean, ref_mean, ref_var) -> np.ndarray:
    """Per channel: |mean - ref_mean| in units of the reference standard deviation."""
    return np.abs(mean - ref_mean) / np.sqrt(ref_var + EPS)


def variance_error(var, ref_var) -> np.ndarray:
    """Per channel: |var - ref_var| relative to ref_var."""
    return np.abs(var - ref_var) / (ref_var + EPS)


def variance_ratio(var, ref_var) -> float:
    """Geometric mean over channels of var / ref_var (1: the same variance)."""
    return float(np.exp(np.mean(np.log((var + EPS) / (ref_var + EPS)))))


def layer_errors(name: str, mean, var, pop_mean, pop_var) -> dict[str, float]:
    """`<name>.mean_err` (mean over channels of mean_error) and `<name>.var_ratio` of statistics against
    population statistics. Arrays are used in the dtype given (float32 moving statistics stay float32)."""
    return {f"{name}.mean_err": float(np.mean(mean_error(mean, pop_mean, pop_var))),
            f"{name}.var_ratio": variance_ratio(var, pop_var)}


# Convergence criterion of the moving statistics (fixed 17:25 UTC before the runs that chose the scenarios'
# momenta, docs: protocols plan section 0): every BN layer has |ln var_ratio| < 0.1 and mean_err < 0.1.
# The dense layer fc1 (64 values per batch) has an EMA noise floor of about 0.05-0.09 in mean_err at
# momentum 0.8-0.9, so a converged run can miss by a hair (0.101 seen once); the threshold is kept as
# written rather than loosened after seeing which runs miss, so such a run drops out of the rules that
# need convergence (it never counts against a claim) and stat_err_max shows by how much it missed.
STAT_CONVERGED_MAX = 0.1


def convergence(errors: dict[str, float]) -> dict[str, float]:
    """`stat_err_max` = max over BN layers of max(|ln var_ratio|, mean_err), from per-layer error keys
    `<layer>.var_ratio` / `<layer>.mean_err` (any prefix), and `stat_converged` = 1 if it is below
    STAT_CONVERGED_MAX, else 0. Both NaN without BN layers. The one definition: tf1_graph uses it too."""
    parts = [abs(float(np.log(v))) for k, v in errors.items() if k.endswith(".var_ratio")]
    parts += [float(v) for k, v in errors.items() if k.endswith(".mean_err")]
    if not parts:
        return {"stat_err_max": float("nan"), "stat_converged": float("nan")}
    worst = float(np.max(parts))  # a NaN layer makes it NaN: not converged
    return {"stat_err_max": worst, "stat_converged": float(worst < STAT_CONVERGED_MAX)}


def stat_errors(model, stats: precise_bn.Recompute, unbiased: bool = False) -> dict[str, float]:
    """Per BN layer: how far the moving statistics are from the population statistics.

    mean_err: mean |moving_mean - pop_mean| / pop_std      (in units of the feature's spread)
    var_ratio: geometric mean of moving_var / pop_var      (1 is right; 1 also for initial stats only by luck)
    """
    out = {}
    for layer, s in zip(batch_norm_layers(model), stats.layers):
        mm, mv = np.asarray(layer.moving_mean, np.float64), np.asarray(layer.moving_variance, np.float64)
        out.update(layer_errors(s.name, mm, mv, s.mean, s.var(unbiased)))
    return out


def stat_distance(model, stats: precise_bn.Recompute, prefix: str) -> dict:
    """Per-layer stat_errors under `prefix.` and their mean_err averaged over layers (`stat_dist_<prefix>`)."""
    errs = stat_errors(model, stats)
    mean_errs = [v for k, v in errs.items() if k.endswith(".mean_err")]
    return {f"stat_dist_{prefix}": float(np.mean(mean_errs)) if mean_errs else float("nan"),
            **{f"{prefix}.{k}": v for k, v in errs.items()}}


# ---------------------------------------------------------------- which statistics BN normalizes with


def bn_modes(model, x: np.ndarray, training: bool) -> tuple[list[bool], float]:
    """Per BN layer: does it normalize with batch statistics when the model is called with `training`?

    Each layer's output is compared with gamma * (x - m) / sqrt(v + eps) + beta for the batch's own
    moments and for the moving statistics; the closer one decides. Also returns the largest residual of
    the winning formula relative to the output's scale (near float32 precision when the decision is
    clean). Moving statistics are restored afterwards.
    """
    bns = batch_norm_layers(model)
    moving = [(np.array(b.moving_mean, np.float64), np.array(b.moving_variance, np.float64)) for b in bns]
    seen: dict = {}

    def keep(i, call, inputs, training, **kwargs):
        out = call(inputs, training=training, **kwargs)
        seen[i] = (to_numpy(inputs, np.float64), to_numpy(out, np.float64))
        return out

    with moving_stats_kept(model), intercepted(bns, keep):
        model(x, training=training)
    uses_batch, residual = [], 0.0
    for i, layer in enumerate(bns):
        inp, out = seen[i]
        gamma, beta = np.asarray(layer.gamma, np.float64), np.asarray(layer.beta, np.float64)
        flat = inp.reshape(-1, inp.shape[-1])
        eps = float(layer.epsilon)
        err_batch = np.max(np.abs(out - _normalized(inp, flat.mean(0), flat.var(0), gamma, beta, eps)))
        err_moving = np.max(np.abs(out - _normalized(inp, *moving[i], gamma, beta, eps)))
        uses_batch.append(bool(err_batch < err_moving))
        residual = max(residual, min(err_batch, err_moving) / (np.max(np.abs(out)) + 1e-12))
    return uses_batch, float(residual)


def _normalized(x, mean, var, gamma, beta, eps):
    """BN's inference formula on `x` with the given statistics."""
    return gamma * (x - mean) / np.sqrt(var + eps) + beta


def measure_modes(model, x: np.ndarray, prefix: str = "") -> dict:
    """Share of BN layers using batch statistics as fit (training=True) and evaluate (False) call the
    model on `x`, and the larger residual of the two decisions (see bn_modes)."""
    fit_modes, fit_res = bn_modes(model, x, True)
    eval_modes, eval_res = bn_modes(model, x, False)
    n = max(len(fit_modes), 1)
    return {f"{prefix}fit_batchstats_frac": sum(fit_modes) / n, f"{prefix}eval_batchstats_frac": sum(eval_modes) / n,
            f"{prefix}mode_residual": max(fit_res, eval_res)}


# ---------------------------------------------------------------- prediction and moving statistics


def batch_dependence(model, x: np.ndarray, training: bool | None, batch_size: int = 64) -> float:
    """Max |logit| difference between each of `x[:batch_size]` predicted alone and inside the batch."""
    x = x[:batch_size]
    together = logits(model, x, training, batch_size)
    alone = np.concatenate([logits(model, x[i:i + 1], training, 1) for i in range(len(x))])
    return float(np.max(np.abs(together - alone)))


def moving_stats(model) -> dict[str, np.ndarray]:
    """A copy of every BN layer's moving mean and variance, by layer name."""
    out = {}
    for layer in batch_norm_layers(model):
        out[f"{layer.name}.moving_mean"] = np.array(layer.moving_mean)
        out[f"{layer.name}.moving_variance"] = np.array(layer.moving_variance)
    return out


def stats_changed(before: dict[str, np.ndarray], after: dict[str, np.ndarray]) -> bool:
    """Exact comparison: did any moving statistic change at all?"""
    return any(not np.array_equal(before[k], after[k]) for k in before)


def layers_changed(before: dict[str, np.ndarray], after: dict[str, np.ndarray]) -> dict[str, bool]:
    """Per BN layer (moving_stats keys `<layer>.<statistic>`): did its moving statistics change at all?"""
    layers = dict.fromkeys(k.rsplit(".", 1)[0] for k in before)
    return {name: stats_changed({k: v for k, v in before.items() if k.rsplit(".", 1)[0] == name}, after)
            for name in layers}


# Relative: two outputs "agree" within the float rounding of different kernels (fit-mode vs predict outputs).
AGREE_TOL = 1e-4


def stat_changes(model, d, initial, bs: int) -> dict:
    """Exact: did fit change the moving statistics; do predict, evaluate, a direct call change them."""
    after_fit = moving_stats(model)
    out = {"stats_changed_fit": float(stats_changed(initial, after_fit)),
           "moving_at_init": float(not stats_changed(initial, after_fit))}
    x, y = d.x_test[:bs * 4], d.y_test[:bs * 4]
    actions = {"predict": lambda: model.predict(x, batch_size=bs, verbose=0),
               "evaluate": lambda: model.evaluate(x, y, batch_size=bs, verbose=0),
               "call": lambda: model(x[:bs])}  # no training argument: the framework's default mode
    for name, action in actions.items():
        with moving_stats_kept(model):
            action()
            out[f"stats_changed_{name}"] = float(stats_changed(after_fit, moving_stats(model)))
    return out


def closer_to(output, batch_mode, moving_mode) -> float:
    """1: `output` is the batch-statistics output, 0: the moving-statistics one, 0.5: those two are the same."""
    to_batch, to_moving = np.max(np.abs(output - batch_mode)), np.max(np.abs(output - moving_mode))
    if np.max(np.abs(batch_mode - moving_mode)) <= AGREE_TOL * max(1.0, float(np.max(np.abs(moving_mode)))):
        return 0.5
    return float(to_batch < to_moving)
