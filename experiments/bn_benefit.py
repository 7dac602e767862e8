"""C13: with BN the loss falls faster, final accuracy is better and higher learning rates become usable.

Protocol. Train small_cnn with norm=bn or norm=none (the no-BN network has conv/dense biases) for
train.batches steps with train.optimizer (adam, or sgd with momentum 0.9) at learning rate train.lr,
same seed and same batches for both. Every bn_benefit.eval_every steps, measure inference-mode
accuracy on the first bn_benefit.eval_samples test images (what a user watching validation
accuracy sees) and log the mean training loss of those steps. Metrics:

- steps_to_target: first evaluation step with accuracy >= bn_benefit.target_acc; a run that never
  gets there is censored at train.batches + eval_every (reached_target = 0);
- steps_to_target_batchstats: the same with batch-statistics (training-mode) accuracy, which is
  free of the lag of the moving statistics (claim C01) early in training; for norm=none both agree;
- steps_to_loss: first evaluation step whose mean training loss is <= bn_benefit.target_loss,
  censored the same way;
- acc_test_final: inference-mode test accuracy after training (plus the batch-statistics /
  moving-statistics decomposition for BN, without precise BN);
- diverged: 1 if the training loss became NaN or infinite. Divergence is the measured outcome here, so
  a diverged run stays an `ok` record with diverged=1 (training stops at the first non-finite loss;
  acc_test_final is then whatever the broken network predicts, about chance).
"""

from __future__ import annotations

import math

from bnexp.toolkit import data, probes, protocol, training
from bnexp.errors import UserError


def run(cfg, ctx) -> dict:
    bb = cfg.bn_benefit
    steps, every = int(cfg.train.batches), int(bb.eval_every)
    if steps % every:
        raise UserError(f"train.batches={steps} must be a multiple of bn_benefit.eval_every={every}")
    d = ctx.data()
    model = protocol.build_model(cfg, ctx, d)
    curve = train_with_evaluations(cfg, ctx, model, d, steps, every, int(bb.eval_samples))
    ctx.history.extend(curve)
    diverged = any(not math.isfinite(row["loss"]) for row in curve)
    censored = steps + every
    out = {
        "diverged": float(diverged),
        "steps_done": curve[-1]["step"] if curve else 0,
        "steps_to_target": first_step(curve, lambda r: r["acc_eval"] >= float(bb.target_acc), censored),
        "steps_to_target_batchstats": first_step(curve, lambda r: r["acc_eval_batchstats"] >= float(bb.target_acc),
                                                 censored),
        "steps_to_loss": first_step(curve, lambda r: r["loss"] <= float(bb.target_loss), censored),
        "loss_final": curve[-1]["loss"] if curve else math.nan,
        "acc_eval_best": max((r["acc_eval"] for r in curve if math.isfinite(r["acc_eval"])), default=math.nan),
    }
    out["reached_target"] = float(out["steps_to_target"] < censored)
    out["acc_test_final"] = probes.accuracy(model, d.x_test, d.y_test, False, int(cfg.probe.eval_batch_size))
    if not diverged:
        out.update(protocol.decompose(cfg, model, d, precise=False))
    return out


def train_with_evaluations(cfg, ctx, model, d, steps: int, every: int, samples: int) -> list[dict]:
    """One model.fit over `steps` batches in chunks of `every`, evaluating after each chunk."""
    keras = ctx.fw.keras
    x_eval, y_eval = d.x_test[:samples], d.y_test[:samples]
    bs = int(cfg.probe.eval_batch_size)
    curve: list[dict] = []

    class Evaluate(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            loss = float((logs or {}).get("loss", math.nan))
            ok = math.isfinite(loss)
            curve.append({"step": (epoch + 1) * every, "loss": loss,
                          "acc_train_fit": float((logs or {}).get("accuracy", math.nan)),
                          "acc_eval": probes.accuracy(model, x_eval, y_eval, False, bs) if ok else math.nan,
                          "acc_eval_batchstats": probes.accuracy(model, x_eval, y_eval, True, bs) if ok else math.nan})
            if not math.isfinite(loss):
                self.model.stop_training = True  # divergence is the outcome: stop, keep the record

    training.compile_model(ctx.fw, model, cfg.train.optimizer, float(cfg.train.lr))
    ds = data.train_batches(d.x_train, d.y_train, int(cfg.train.batch_size), steps, int(cfg.seed))
    model.fit(ds, epochs=steps // every, steps_per_epoch=every, callbacks=[Evaluate()], verbose=int(cfg.verbose))
    return curve


def first_step(curve: list[dict], reached, censored: int) -> int:
    return next((r["step"] for r in curve if math.isfinite(r["loss"]) and reached(r)), censored)
