"""C03, C04, C07, C14: what BN's `training` flag, fixed inside the model, does to fit, predict and evaluate.

Protocol. Build small_cnn with every BN layer called with training = bn.training (null: not given,
true, false), fixed either while building a functional model (model.flag_style=functional) or
hard-coded in a subclassed model's call() (subclass). Train it with model.fit for train.batches
steps, then probe it with the public Keras API, restoring the moving statistics after each probe so
that no probe sees another's side effects:

- moving statistics before/after fit, predict, evaluate and a direct call `model(x)` without a
  training argument: changed at all (exact comparison), and still exactly the initial values after fit;
- test accuracy from predict and from evaluate, and the same architecture without BN trained the
  same way (same seed, same batches; shared between runs through the disk cache, as it does not
  depend on bn.training): the difference (C03: training=False should look like no BN);
- accuracy from predict at eval batch sizes training_flag.eval_batch_sizes on the first
  training_flag.eval_samples test images, and the max |logit| difference of 64 test images
  predicted one at a time vs together (C04);
- on one training batch, the output of a fit-mode forward pass (model(x, training=True), what
  fit's train step computes) vs model.predict; and the outputs `fit` itself computes on that batch,
  taken inside fit by a metric (one step at learning rate 0, so no weight moves; moving statistics
  restored after), vs model.predict: `fitcap_predict_agree` (C07: a hard-coded flag should make them
  agree, training=None should not);
- `flag_honoured` (bn.training true/false): every BN layer normalizes with batch statistics when the
  model is called as fit calls it (training=True) and as predict calls it (training=False) exactly when
  the flag says so (probes.bn_modes, decided from each layer's output). Keras 3 functional models ignore
  a flag fixed while building; there the flag claims are untestable (a rule precondition). NaN for null;
- precise BN: accuracy with batch, moving and population statistics (protocol.decompose), the moving
  statistics' error against the population's (`stat_err_max`, `stat_converged`);
- whether the framework still has a learning phase (keras.backend.set_learning_phase), and, under
  tf_keras, fresh models with the learning phase set to 0 or 1 before vs after building the model,
  each fitted for training_flag.probe_steps steps: do fit, predict and a direct call update the
  moving statistics, and does a direct call follow the learning phase (columns lp<v>_<when>.*).
  Under eager execution tf-keras has no graph learning phase to fix at build time, so these cannot
  differ there; with training_flag.graph_probes (tf_keras, bn.training=null) the same before/after
  probes also run in a child process with eager execution disabled, where Keras 2's learning phase
  exists (graph.lp<v>_<when>.*: fit changes the moving statistics, predict is batch-dependent or
  changes them; graph_lp_before_after_differ).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
from omegaconf import OmegaConf

from bnexp import launcher
from bnexp.toolkit import data, probes, protocol, training
from bnexp.toolkit.base_cache import BaseCache


def run(cfg, ctx) -> dict:
    fw, tfc = ctx.fw, cfg.training_flag
    d = ctx.data()
    model = protocol.build_model(cfg, ctx, d)
    initial = probes.moving_stats(model)
    fit = protocol.train(cfg, ctx, model, d)
    out = {**fit, "variant": f"{cfg.semantics}/{cfg.model.flag_style}",
           "learning_phase_api": float(hasattr(fw.keras.backend, "set_learning_phase"))}
    out.update(probes.stat_changes(model, d, initial, int(cfg.probe.eval_batch_size)))
    out.update(test_accuracy(model, d, int(cfg.probe.eval_batch_size)))
    out.update(batch_size_dependence(model, d, list(tfc.eval_batch_sizes), int(tfc.eval_samples)))
    out.update(fit_vs_predict(model, d, int(cfg.train.batch_size)))
    out["flag_honoured"] = flag_honoured(model, d.x_train[:int(cfg.train.batch_size)], cfg.bn.training)
    out.update(protocol.decompose(cfg, model, d))
    out.update(fit_captured_vs_predict(fw, model, d, int(cfg.train.batch_size)))  # recompiles: after the rest
    if tfc.compare_nobn:
        out["acc_test_nobn"], hit = no_bn_accuracy(cfg, ctx, d)
        out["nobn_from_cache"] = float(hit)
        out["acc_vs_nobn"] = out["acc_test_predict"] - out["acc_test_nobn"]
        out["acc_vs_nobn_abs"] = abs(out["acc_vs_nobn"])
    if tfc.learning_phase_probes and out["learning_phase_api"]:
        out.update(learning_phase_probes(cfg, ctx, d, int(tfc.probe_steps)))
    if tfc.graph_probes and out["learning_phase_api"] and cfg.bn.training is None:
        out.update(graph_learning_phase(cfg, ctx, d))
    return out


def test_accuracy(model, d, bs: int) -> dict:
    with probes.moving_stats_kept(model):
        pred = model.predict(d.x_test, batch_size=bs, verbose=0)
    with probes.moving_stats_kept(model):
        ev = model.evaluate(d.x_test, d.y_test, batch_size=bs, verbose=0, return_dict=True)
    return {"acc_test_predict": float(np.mean(np.argmax(pred, -1) == d.y_test)),
            "acc_test_evaluate": float(ev["accuracy"])}


def batch_size_dependence(model, d, sizes: list[int], samples: int) -> dict:
    """Accuracy of predict at each eval batch size; a sample predicted alone vs inside a batch of 64."""
    x, y = d.x_test[:samples], d.y_test[:samples]
    out = {}
    for bs in sizes:
        with probes.moving_stats_kept(model):
            out[f"acc_test_bs{bs}"] = float(np.mean(np.argmax(model.predict(x, batch_size=bs, verbose=0), -1) == y))
    accs = [out[f"acc_test_bs{bs}"] for bs in sizes]
    out["acc_bs_spread"] = max(accs) - min(accs)
    with probes.moving_stats_kept(model):
        alone = model.predict(x[:64], batch_size=1, verbose=0)
        together = model.predict(x[:64], batch_size=64, verbose=0)
    out["logit_diff_alone_vs_batch"] = float(np.max(np.abs(alone - together)))
    return out


def fit_vs_predict(model, d, batch_size: int) -> dict:
    """On one training batch: the fit-mode forward pass vs model.predict."""
    x = d.x_train[:batch_size]
    fit_mode = probes.logits(model, x, True, batch_size)  # restores the moving statistics itself
    with probes.moving_stats_kept(model):
        pred = model.predict(x, batch_size=batch_size, verbose=0)
    diff = float(np.max(np.abs(fit_mode - pred)))
    scale = max(1.0, float(np.max(np.abs(pred))))
    return {"fit_predict_max_diff": diff, "fit_predict_agree": float(diff <= probes.AGREE_TOL * scale)}


def flag_honoured(model, x, flag) -> float:
    """1 if every BN layer uses batch statistics exactly when the hard-coded `flag` says so, both when the
    model is called as fit calls it and as predict calls it; 0 if not; NaN for flag None (nothing fixed)."""
    if flag is None:
        return float("nan")
    modes = probes.bn_modes(model, x, True)[0] + probes.bn_modes(model, x, False)[0]
    return float(all(uses_batch == bool(flag) for uses_batch in modes))


def fit_captured_vs_predict(fw, model, d, batch_size: int) -> dict:
    """The outputs model.fit itself computes on one training batch vs model.predict on that batch.

    A metric keeps the y_pred of fit's train step (a callback never sees it); one step at learning rate
    0 with plain SGD leaves every weight as it is, and the moving statistics are restored after. The
    model is recompiled for this, so it runs after every other use of the trained model's optimizer.
    """
    x, y = d.x_train[:batch_size], d.y_train[:batch_size]
    captured = _output_capture(fw, (len(x), d.num_classes))
    model.compile(optimizer=fw.keras.optimizers.SGD(learning_rate=0.0),
                  loss=fw.keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=[captured])
    with probes.moving_stats_kept(model):
        model.fit(x, y, batch_size=len(x), epochs=1, shuffle=False, verbose=0)
    in_fit = np.array(captured.outputs)
    with probes.moving_stats_kept(model):
        pred = model.predict(x, batch_size=len(x), verbose=0)
    diff = float(np.max(np.abs(in_fit - pred)))
    return {"fitcap_predict_max_diff": diff,
            "fitcap_predict_agree": float(diff <= probes.AGREE_TOL * max(1.0, float(np.max(np.abs(pred)))))}


def _output_capture(fw, shape):
    """A Keras metric whose state is the last y_pred it saw (shape: the batch's outputs)."""
    ops = getattr(fw.keras, "ops", None)  # Keras 3 on any backend; tf-keras has no ops: TensorFlow's own
    cast, total = (ops.cast, ops.sum) if ops is not None else (fw.tf.cast, fw.tf.reduce_sum)

    class OutputCapture(fw.keras.metrics.Metric):
        def __init__(self):
            super().__init__(name="output_capture")
            self.outputs = self.add_weight(name="outputs", shape=shape, initializer="zeros")

        def update_state(self, y_true, y_pred, sample_weight=None):
            self.outputs.assign(cast(y_pred, self.outputs.dtype))

        def result(self):
            return total(self.outputs)

    return OutputCapture()


def no_bn_accuracy(cfg, ctx, d) -> tuple[float, bool]:
    """Test accuracy of the same architecture without BN (conv/dense biases on), same seed and batches.

    It does not depend on bn.training, so runs that differ only in that share it through the disk
    cache (training is deterministic: op determinism and the seed are set). Returns (accuracy, hit).
    """
    spec = {"purpose": "training_flag.nobn", "semantics": cfg.semantics, "seed": int(cfg.seed),
            "data": OmegaConf.to_container(cfg.data, resolve=True), "model": OmegaConf.to_container(cfg.model),
            "train": {k: v for k, v in OmegaConf.to_container(cfg.train).items() if k != "timeout_s"},
            "eval_batch_size": int(cfg.probe.eval_batch_size)}

    def build():
        ctx.fw.set_seed(int(cfg.seed))
        model = protocol.build_model(cfg, ctx, d, norm="none")
        protocol.train(cfg, ctx, model, d)
        acc = probes.accuracy(model, d.x_test, d.y_test, False, int(cfg.probe.eval_batch_size))
        return model.get_weights(), {"acc_test": acc}

    entry = BaseCache(ctx.cache_dir).get_or_build(spec, build)
    return float(entry.meta["acc_test"]), entry.hit


def learning_phase_probes(cfg, ctx, d, steps: int) -> dict:
    """tf_keras: fresh models with set_learning_phase(v) called before vs after building them."""
    backend = ctx.fw.keras.backend
    out = {}
    for value in (0, 1):
        for when in ("before", "after"):
            backend.clear_session()
            ctx.fw.set_seed(int(cfg.seed))
            if when == "before":
                backend.set_learning_phase(value)
            model = protocol.build_model(cfg, ctx, d)
            if when == "after":
                backend.set_learning_phase(value)
            out.update({f"lp{value}_{when}.{k}": v for k, v in phase_probe(cfg, ctx, model, d, steps).items()})
    backend.clear_session()  # the learning phase is global: unset it again
    for key in ("stats_changed_fit", "stats_changed_predict", "stats_changed_call", "call_batchstats"):
        out[f"lp_before_after_differ.{key}"] = float(any(out[f"lp{v}_before.{key}"] != out[f"lp{v}_after.{key}"]
                                                         for v in (0, 1)))
    out["lp_before_after_differ"] = float(any(v for k, v in out.items() if k.startswith("lp_before_after_differ.")))
    return out


def phase_probe(cfg, ctx, model, d, steps: int) -> dict:
    """Short fit, then which mode fit, predict and a direct call ran BN in (from stat changes and outputs)."""
    bs = int(cfg.train.batch_size)
    x = d.x_train[:bs]
    before = probes.moving_stats(model)
    training.compile_model(ctx.fw, model, cfg.train.optimizer, float(cfg.train.lr))
    model.fit(data.train_batches(d.x_train, d.y_train, bs, steps, int(cfg.seed)), epochs=1, steps_per_epoch=steps,
              verbose=0)
    after = probes.moving_stats(model)
    out = {"stats_changed_fit": float(probes.stats_changed(before, after))}
    with probes.moving_stats_kept(model):
        model.predict(x, batch_size=bs, verbose=0)
        out["stats_changed_predict"] = float(probes.stats_changed(after, probes.moving_stats(model)))
    with probes.moving_stats_kept(model):
        direct = np.asarray(model(x))
        out["stats_changed_call"] = float(probes.stats_changed(after, probes.moving_stats(model)))
    batch_mode = probes.logits(model, x, True, bs)
    moving_mode = probes.logits(model, x, False, bs)
    out["call_batchstats"] = probes.closer_to(direct, batch_mode, moving_mode)
    return out


# ---------------------------------------------------------------- the learning phase in graph mode (tf_keras)


def graph_learning_phase(cfg, ctx, d) -> dict:
    """The before/after learning-phase probes in a child process with eager execution disabled (it can
    only be disabled before anything runs, and not undone): columns graph.lp<v>_<when>.*. The child has
    tf_keras' environment on the run's device and the run's own time limit."""
    bs, steps = int(cfg.train.batch_size), int(cfg.training_flag.probe_steps)
    path, result, log_path = (ctx.workdir / f"graph_probe.{ext}" for ext in ("npz", "json", "log"))
    np.savez(path, x=d.x_train[:bs * steps], y=d.y_train[:bs * steps])
    spec = {"model": cfg.model.name, "flag_style": cfg.model.flag_style, "num_classes": d.num_classes,
            "momentum": float(cfg.bn.momentum), "epsilon": float(cfg.bn.epsilon), "lr": float(cfg.train.lr),
            "optimizer": cfg.train.optimizer, "batch_size": bs, "seed": int(cfg.seed), "data": str(path),
            "result": str(result)}
    env = launcher.child_env("tf_keras", cfg.device)
    try:
        with open(log_path, "w") as log:
            code = launcher.run("experiments.training_flag", [json.dumps(spec)], env, float(cfg.train.timeout_s), log)
        if code != 0:
            why = "timed out" if code is None else f"exited with code {code}"
            raise RuntimeError(f"graph-mode learning-phase probe {why}: {log_path.read_text().strip()[-600:]}")
        return json.loads(result.read_text())
    finally:
        for done in (path, result, log_path):
            done.unlink(missing_ok=True)


def _graph_probe_main(spec: dict) -> dict:
    """Runs in the child: tf-keras with eager execution disabled (a graph learning phase exists)."""
    from bnexp.toolkit import framework, models

    fw = framework.activate("tf_keras")
    fw.tf.compat.v1.disable_eager_execution()
    keras, get = fw.keras, fw.keras.backend.get_value
    with np.load(spec["data"]) as z:
        x, y = z["x"], z["y"]
    bs, tol = spec["batch_size"], probes.AGREE_TOL

    def moving(model):
        return {f"{b.name}.{k}": np.array(get(getattr(b, k))) for b in models.batch_norm_layers(model)
                for k in ("moving_mean", "moving_variance")}

    out = {}
    for value in (0, 1):
        for when in ("before", "after"):
            keras.backend.clear_session()
            fw.set_seed(spec["seed"])
            if when == "before":
                keras.backend.set_learning_phase(value)
            model = models.build(fw, name=spec["model"], input_shape=x.shape[1:], num_classes=spec["num_classes"],
                                 norm="bn", momentum=spec["momentum"], epsilon=spec["epsilon"], bn_training=None,
                                 flag_style=spec["flag_style"])
            if when == "after":
                keras.backend.set_learning_phase(value)
            # graph-mode Keras 2 needs a graph optimizer (its v1 training loop calls get_updates)
            model.compile(optimizer=training.optimizer(fw, spec["optimizer"], spec["lr"], graph=True),
                          loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
            m0 = moving(model)
            model.fit(x, y, batch_size=bs, epochs=1, shuffle=False, verbose=0)
            m1 = moving(model)
            alone = np.concatenate([model.predict(x[i:i + 1], verbose=0) for i in range(8)])
            together = model.predict(x[:bs], batch_size=bs, verbose=0)[:8]
            m2 = moving(model)
            diff = float(np.max(np.abs(alone - together)))
            tag = f"graph.lp{value}_{when}"
            out.update({f"{tag}.stats_changed_fit": float(probes.stats_changed(m0, m1)),
                        f"{tag}.predict_batch_dependent": float(diff > tol * max(1.0, float(np.max(np.abs(together))))),
                        f"{tag}.stats_changed_predict": float(probes.stats_changed(m1, m2))})
    keys = ("stats_changed_fit", "predict_batch_dependent", "stats_changed_predict")
    for key in keys:
        out[f"graph_lp_before_after_differ.{key}"] = float(any(
            out[f"graph.lp{v}_before.{key}"] != out[f"graph.lp{v}_after.{key}"] for v in (0, 1)))
    out["graph_lp_before_after_differ"] = float(any(out[f"graph_lp_before_after_differ.{k}"] for k in keys))
    out["graph_eager"] = float(fw.tf.executing_eagerly())
    return out


if __name__ == "__main__":  # the graph-mode child of graph_learning_phase
    _spec = json.loads(sys.argv[1])
    Path(_spec["result"]).write_text(json.dumps(_graph_probe_main(_spec)))
