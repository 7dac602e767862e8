"""C17: `trainable` flipped after compile(), with vs without compiling again.

Protocol. Build small_cnn (BN, training=None), compile it, and (trainable_after_compile.fit_before_flip)
fit it for trainable_after_compile.stage1_steps steps, so that Keras has built its train function.
Then set trainable=False on trainable_after_compile.target (`model`: the whole model; `bn`: every BN
layer), compile again if trainable_after_compile.recompile, and fit for stage2_steps more steps. Over
that second fit, measured exactly and in size:

- frozen_weights_changed / frozen_weights_change: did the weights made non-trainable (every trainable
  weight of the model, or BN's gamma and beta) change; the largest |change| of one of them (absolute: BN's
  beta starts at exactly 0, so a relative change is undefined before a first fit);
- stats_changed / stats_change: did the BN moving statistics change; largest |change| of a moving mean
  in units of the moving standard deviation;
- other_weights_changed: did the weights left trainable change (target=bn only: shows the fit ran);
- warned: did Keras warn that a layer's `trainable` state has changed since the model was compiled.
"""

from __future__ import annotations

import warnings

import numpy as np

from bnexp.toolkit import data, models, probes, protocol, training
from experiments import seeds

STALE_WARNING = "state has changed since the model was"  # Keras 3's warning (tf-keras 2.21 has none)


def run(cfg, ctx) -> dict:
    tc = cfg.trainable_after_compile
    d = ctx.data()
    model = protocol.build_model(cfg, ctx, d)
    out = {"variant": f"{cfg.semantics}/{tc.target}"}
    if tc.fit_before_flip:
        stage1 = protocol.train(cfg, ctx, model, d, steps=int(tc.stage1_steps))
        out.update({f"stage1.{k}": v for k, v in stage1.items()})
    else:  # compiled, never fitted: the train function does not exist yet
        training.compile_model(ctx.fw, model, cfg.train.optimizer, float(cfg.train.lr))
    bns = models.batch_norm_layers(model)
    frozen = [w for layer in ([model] if tc.target == "model" else bns) for w in layer.trainable_weights]
    frozen_ids = {id(w) for w in frozen}
    others = [w for w in model.trainable_weights if id(w) not in frozen_ids]
    before = [np.array(w) for w in frozen], [np.array(w) for w in others], probes.moving_stats(model)
    for layer in ([model] if tc.target == "model" else bns):
        layer.trainable = False
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if tc.recompile:
            fit = protocol.train(cfg, ctx, model, d, steps=int(tc.stage2_steps), seed_offset=seeds.NEXT_STAGE)
        else:
            fit = fit_without_compile(cfg, ctx, model, d, int(tc.stage2_steps))
    out.update({f"stage2.{k}": v for k, v in fit.items()})
    out["warned"] = float(any(STALE_WARNING in str(w.message) for w in caught))
    out.update(changes(before, frozen, others, probes.moving_stats(model)))
    return out


def fit_without_compile(cfg, ctx, model, d, steps: int) -> dict:
    """The same fit (same batches) as protocol.train with seed_offset=seeds.NEXT_STAGE, without its compile()."""
    ds = data.train_batches(d.x_train, d.y_train, int(cfg.train.batch_size), steps, int(cfg.seed) + seeds.NEXT_STAGE)
    return training.fit(model, ds, steps, history=ctx.history)


def changes(before, frozen, others, stats_after) -> dict:
    frozen_before, others_before, stats_before = before
    frozen_after = [np.array(w) for w in frozen]
    moving_shift = [np.max(np.abs(stats_after[k] - stats_before[k])
                           / np.sqrt(stats_before[k.replace("moving_mean", "moving_variance")] + 1e-3))
                    for k in stats_before if k.endswith("moving_mean")]
    return {"frozen_weights_changed": float(any(not np.array_equal(a, b) for a, b in zip(frozen_after, frozen_before))),
            "frozen_weights_change": float(max(np.max(np.abs(a - b)) for a, b in zip(frozen_after, frozen_before))),
            "other_weights_changed": float(any(not np.array_equal(np.array(w), b)
                                               for w, b in zip(others, others_before))) if others else float("nan"),
            "stats_changed": float(probes.stats_changed(stats_before, stats_after)),
            "stats_change": float(max(moving_shift))}
