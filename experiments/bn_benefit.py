"""C13: with BN the loss falls faster, final accuracy is better and higher learning rates become usable.

Protocol. Train small_cnn with norm=bn or norm=none (the no-BN network has conv/dense biases) for
train.batches steps with train.optimizer (adam, or sgd with momentum 0.9) at learning rate train.lr,
same seed and same batches for both. Every bn_benefit.eval_every steps, log the mean training loss of
those steps and measure test accuracy on the first bn_benefit.eval_samples test images. BN is scored
fairly: at inference with precise-BN population statistics recomputed from bn_benefit.precise_batches
training batches of probe.precise_batch_size (R1), never with the test batch's own statistics (which
would use the test set transductively) and never with a moving average that may still lag after few
steps (claim C01; its accuracy is recorded beside, `acc_eval_moving`). norm=none has one inference
accuracy. Metrics:

- steps_to_loss: first evaluation step whose mean training loss is <= bn_benefit.target_loss; a run
  that never gets there is censored at train.batches + eval_every (reached_loss = 0); the verdict rule
  leaves out a seed where both arms are censored (`reached: reached_loss`): it holds no information;
- steps_to_target: first evaluation step with accuracy >= bn_benefit.target_acc, censored the same way
  (reached_target = 0);
- acc_test_final: test accuracy after training (precise BN from probe.precise_batches batches for BN),
  acc_test_final_moving beside it,
  plus the batch / moving / precise decomposition and the moving statistics' error (stat_err_max);
- diverged: 1 if the training loss became NaN or infinite (training stops there);
- failed: 1 if diverged, or if the final test accuracy is below bn_benefit.fail_below (default 2 /
  10 classes): a network that collapsed to chance without a NaN has not trained either.
A diverged or failed run stays an `ok` record: it is the measured outcome.
"""

from __future__ import annotations

import math

from bnexp.toolkit import data, models, probes, protocol, training


def run(cfg, ctx) -> dict:
    bb = cfg.bn_benefit
    steps, every = int(cfg.train.batches), int(bb.eval_every)
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
        "steps_to_loss": first_step(curve, lambda r: r["loss"] <= float(bb.target_loss), censored),
        "loss_final": curve[-1]["loss"] if curve else math.nan,
        "acc_eval_best": max((r["acc_eval"] for r in curve if math.isfinite(r["acc_eval"])), default=math.nan),
        "evaluations": len(curve),
    }
    out["reached_target"] = float(out["steps_to_target"] < censored)
    out["reached_loss"] = float(out["steps_to_loss"] < censored)
    bs = int(cfg.probe.eval_batch_size)
    out["acc_test_final_moving"] = probes.accuracy(model, d.x_test, d.y_test, False, bs)
    out["acc_test_final"] = out["acc_test_final_moving"]
    if not diverged:
        out.update(protocol.decompose(cfg, model, d))  # final: precise BN from probe.precise_batches
        out["acc_test_final"] = out.get("acc_test_precise", out["acc_test_final_moving"])
    out["failed"] = float(diverged or not out["acc_test_final"] >= float(bb.fail_below))
    return out


def eval_stats(cfg, model, d):
    """Precise-BN statistics for one evaluation (None without BN): always the same training batches."""
    if not models.batch_norm_layers(model):
        return None
    return protocol.precise_stats(cfg, model, d, batches=int(cfg.bn_benefit.precise_batches))


def train_with_evaluations(cfg, ctx, model, d, steps: int, every: int, samples: int) -> list[dict]:
    """One model.fit over `steps` batches in chunks of `every`, evaluating after each chunk."""
    keras = ctx.fw.keras
    x_eval, y_eval = d.x_test[:samples], d.y_test[:samples]
    bs = int(cfg.probe.eval_batch_size)
    curve: list[dict] = []

    def evaluate() -> tuple[float, float]:
        """(fair accuracy, moving-statistics accuracy) on the evaluation images."""
        moving = probes.accuracy(model, x_eval, y_eval, False, bs)
        stats = eval_stats(cfg, model, d)
        return (moving if stats is None else probes.accuracy_precise(model, x_eval, y_eval, stats, batch_size=bs),
                moving)

    class Evaluate(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            loss = float((logs or {}).get("loss", math.nan))
            ok = math.isfinite(loss)
            fair, moving = evaluate() if ok else (math.nan, math.nan)
            curve.append({"step": (epoch + 1) * every, "loss": loss,
                          "acc_train_fit": float((logs or {}).get("accuracy", math.nan)),
                          "acc_eval": fair, "acc_eval_moving": moving})
            if not ok:
                self.model.stop_training = True  # divergence is the outcome: stop, keep the record

    training.compile_model(ctx.fw, model, cfg.train.optimizer, float(cfg.train.lr), epoch_steps=every)
    ds = data.train_batches(d.x_train, d.y_train, int(cfg.train.batch_size), steps, int(cfg.seed))
    model.fit(ds, epochs=steps // every, steps_per_epoch=every, callbacks=[Evaluate()], verbose=int(cfg.verbose))
    return curve


def first_step(curve: list[dict], reached, censored: int) -> int:
    return next((r["step"] for r in curve if math.isfinite(r["loss"]) and reached(r)), censored)
