"""R2: recompute BN statistics on unlabeled samples of a shifted test domain (Schneider et al. 2020).

Protocol. Train the source model (small_cnn with norm = bn, gn or ln) on the training images, once per
semantics, seed and setup (shared through the disk cache by the four corruption kinds). Its BN moving
statistics must have converged: they are compared with population statistics recomputed on source
training batches (precise BN) and `source_converged` is 1 when every layer's mean error is below
domain_shift.converged_mean_err and its variance ratio within 1 +- domain_shift.converged_var_err.

The test images are split once by the seed into an evaluation part (domain_shift.eval_samples) and an
adaptation pool (the rest): adaptation never sees an evaluated image (no transductive evaluation).
For each severity 1..5 of the corruption domain_shift.kind (bnexp.toolkit.data.corrupt), both parts are
corrupted and measured:

- acc_s<k>_source: accuracy with the source statistics (inference mode);
- BN models only: acc_s<k>_n<N>: accuracy with every BN layer's statistics recomputed from the first N
  unlabeled pool images (batches of at most domain_shift.adapt_batch_size, no labels used) for each N in
  domain_shift.adapt_samples; acc_s<k>_adapted is the largest N, gain_s<k> = adapted - source;
- acc_clean_source (and for BN acc_clean_adapted) on the uncorrupted evaluation part;
- acc_s<k>_deployed: the best each norm can do without labels, adapted for BN, source for GN/LN (R2's
  comparison with normalizations that have nothing to adapt).
"""

from __future__ import annotations

import numpy as np
from omegaconf import OmegaConf

from bnexp.errors import UserError
from bnexp.names import SEVERITIES
from bnexp.toolkit import data, models, precise_bn, probes, protocol
from bnexp.toolkit.base_cache import BaseCache
from experiments import seeds


def run(cfg, ctx) -> dict:
    dc = cfg.domain_shift
    d = ctx.data()
    model, hit = source_model(cfg, ctx, d)
    out = {"source_from_cache": float(hit), "variant": f"{cfg.semantics}/{cfg.norm}"}
    if models.batch_norm_layers(model):
        out.update(convergence(cfg, model, d))
    x_eval, y_eval, pool = split_test(cfg, ctx, int(dc.eval_samples))
    sizes = [int(n) for n in dc.adapt_samples if int(n) <= len(pool)]
    bs = int(cfg.probe.eval_batch_size)
    for sev in (0, *SEVERITIES):
        tag = "clean" if sev == 0 else f"s{sev}"
        xe, xp = corrupted(cfg, ctx, (x_eval, pool), dc.kind, sev)
        out[f"acc_{tag}_source"] = probes.accuracy(model, xe, y_eval, False, bs)
        if not models.batch_norm_layers(model):
            out[f"acc_{tag}_deployed"] = out[f"acc_{tag}_source"]
            continue  # GN/LN: nothing to adapt
        for n in sizes:
            stats = precise_bn.population_stats(model, batches(xp[:n], int(dc.adapt_batch_size)))
            out[f"acc_{tag}_n{n}"] = probes.accuracy_precise(model, xe, y_eval, stats, batch_size=bs)
        out[f"acc_{tag}_adapted"] = out[f"acc_{tag}_n{sizes[-1]}"]
        out[f"gain_{tag}"] = out[f"acc_{tag}_adapted"] - out[f"acc_{tag}_source"]
        out[f"acc_{tag}_deployed"] = out[f"acc_{tag}_adapted"]
    out["loss_s5_source"] = out["acc_clean_source"] - out["acc_s5_source"]
    out["adapt_pool_size"], out["eval_size"] = len(pool), len(x_eval)
    return out


def source_model(cfg, ctx, d):
    """The source model (built, trained, or read from the cache) and whether it came from the cache."""
    spec = {"purpose": "domain_shift.source", "semantics": cfg.semantics, "seed": int(cfg.seed), "norm": cfg.norm,
            "data": OmegaConf.to_container(cfg.data, resolve=True), "model": OmegaConf.to_container(cfg.model),
            "bn": OmegaConf.to_container(cfg.bn),
            "train": {k: v for k, v in OmegaConf.to_container(cfg.train).items() if k != "timeout_s"}}
    model = protocol.build_model(cfg, ctx, d)

    def build():
        ctx.fw.set_seed(int(cfg.seed))
        trainee = protocol.build_model(cfg, ctx, d)
        fit = protocol.train(cfg, ctx, trainee, d)
        return trainee.get_weights(), fit

    entry = BaseCache(ctx.cache_dir).get_or_build(spec, build)
    model.set_weights(entry.weights)
    return model, entry.hit


def convergence(cfg, model, d) -> dict:
    """Moving vs population statistics of the source model on source training batches (precise BN)."""
    dc = cfg.domain_shift
    errs = probes.stat_errors(model, protocol.precise_stats(cfg, model, d))
    mean_err = max(v for k, v in errs.items() if k.endswith(".mean_err"))
    var_err = max(abs(v - 1) for k, v in errs.items() if k.endswith(".var_ratio"))
    return {"source_mean_err": mean_err, "source_var_err": var_err,
            "source_converged": float(mean_err < float(dc.converged_mean_err)
                                      and var_err < float(dc.converged_var_err)),
            **{f"source.{k}": v for k, v in errs.items()}}


def split_test(cfg, ctx, eval_samples: int):
    """uint8 test images split by the seed: (evaluation images, their labels, adaptation pool), disjoint."""
    dcfg = cfg.data
    arrays = data.load(dcfg.name, dcfg.get("raw_dir"), dcfg.get("tfds_data_dir"), ctx.cache_dir)
    x, y = data.select(arrays.x_test, arrays.y_test, dcfg.get("classes"), dcfg.get("test_size"), int(cfg.seed))
    if eval_samples >= len(x):
        raise UserError(f"domain_shift.eval_samples={eval_samples} leaves no adaptation pool among {len(x)} test "
                        f"images (lower it or raise data.test_size)")
    order = np.random.default_rng(int(cfg.seed)).permutation(len(x))
    ev, pool = order[:eval_samples], order[eval_samples:]
    assert not set(ev) & set(pool)
    return x[ev], y[ev], x[pool]


def corrupted(cfg, ctx, parts, kind: str, severity: int):
    """Each uint8 part corrupted at `severity` (0: not at all; each part its own noise stream) and scaled as
    the training images are."""
    stats = None
    if cfg.data.scaling == "standard":  # the source statistics: a shift must not be standardized away
        arrays = data.load(cfg.data.name, cfg.data.get("raw_dir"), cfg.data.get("tfds_data_dir"), ctx.cache_dir)
        stats = data.scaling_stats(data.select(arrays.x_train, arrays.y_train, cfg.data.get("classes"),
                                               cfg.data.get("train_size"), int(cfg.seed))[0])
    seed = int(cfg.seed)
    return [data.scale(x if severity == 0 else data.corrupt(x, kind, severity, seeds.corruption(seed, severity, i)),
                       cfg.data.scaling, stats) for i, x in enumerate(parts)]


def batches(x: np.ndarray, batch_size: int):
    return [x[i:i + batch_size] for i in range(0, len(x), batch_size)]
