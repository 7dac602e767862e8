"""C09: a checkpoint of the trainable variables only has no BN moving statistics; restoring it for
prediction fails, or (if the missing statistics are initialized instead) predicts with 0/1 statistics.
Adding the moving statistics found among the global variables is said to fix it.

Protocol, semantics=tf1: train small_cnn with tf.compat.v1.layers.batch_normalization in a graph (train
op depending on UPDATE_OPS), then save with tf.compat.v1.train.Saver over `checkpoint.strategy`'s list:
  trainable         tf.compat.v1.trainable_variables()                                   (a)
  trainable_moving  the trainable variables + global variables named moving_mean/variance  (b)
  global            tf.compat.v1.global_variables() (optimizer slots included)           (c)
Build the same model in a fresh graph (different seed) and restore with a default Saver(), as a
prediction script would; record whether that fails and the error. If it fails, initialize every
variable and restore only those the checkpoint has, then measure inference accuracy.

Keras 3 analogue, semantics=keras3 (model.fit training, then a fresh model of the same config). Keras 3
has no trainable-only save, so the weights file model.save_weights writes (.weights.h5) is cut down to
what the strategy keeps, and restored with the framework's own fresh.load_weights:
  trainable         the file without the optimizer's variables and without every BN layer's moving
                    statistics: exactly the trainable weights (checked). If Keras refuses it, the
                    trainable arrays are assigned to fresh.trainable_weights (moving stats stay 0/1)
  trainable_moving  the file without the optimizer's variables (trainable weights + moving statistics)
  global            the whole file (with the optimizer state); also model.save / load_model (.keras),
                    reported as keras_file.*
(Until issue #12 the keras3 arm saved an .npz by hand and called fresh.set_weights(list) itself; its
"failure" was that call's own length check, i.e. the harness's, not evidence about Keras.)
Metrics: checkpoint contents (keys, moving-statistic keys; for tf1 also how many variables
tf.compat.v1.moving_average_variables() lists), restore outcome and error, accuracy of the
trained model (acc_test_saved) and of the restored one (acc_test_restored, and with batch statistics),
acc_drop = saved - restored, and whether the restored moving statistics are exactly the trained ones or
exactly the initial 0/1; `restore_error_origin`: the package whose code raised the restore error
(tensorflow or keras: the framework; anything else: this harness). The trained model's moving statistics
are compared with precise-BN population statistics (stat_err_max, stat_converged: converged statistics,
so acc_drop measures the lost statistics, not an EMA that had not caught up yet), and its precise-BN
accuracy is acc_test_saved_precise. Checkpoint files are deleted before the run returns; the list of keys written
stays with the record (checkpoint_keys.txt).
"""

from __future__ import annotations

import re
import shutil
import traceback

import numpy as np

from bnexp.toolkit import probes, protocol, tf1_graph
from experiments import seeds

MOVING = ("moving_mean", "moving_variance")


def run(cfg, ctx) -> dict:
    strategy = cfg.checkpoint.strategy
    d = ctx.data()
    folder = ctx.workdir / "checkpoint_tmp"
    folder.mkdir(exist_ok=True)
    try:
        out = (_tf1 if ctx.fw.name == "tf1" else _keras3)(cfg, ctx, d, strategy, folder)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    (ctx.workdir / "checkpoint_keys.txt").write_text("\n".join(out.pop("keys")) + "\n")
    out["acc_drop"] = out["acc_test_saved"] - out["acc_test_restored"]
    return {**out, **tf1_graph.process_identity(ctx.fw)}


def short_error(e: Exception) -> str:
    """`ErrorClass: the line that says what is missing`, at most ~160 characters."""
    text = str(e)
    # TF1's Saver: "Key <name> not found in checkpoint"; Keras 3's load_weights: "Layer '<name>' expected 4
    # variables, but received 2 variables during loading", after a summary line
    found = re.search(r"Key \S+ not found in checkpoint|Layer '\S+' expected \d+ variables, but received \d+ variables",
                      text)
    line = found.group(0) if found else (text.strip().splitlines() or [""])[0]
    return f"{type(e).__name__}: {line[:160]}"


def error_origin(e: Exception) -> str:
    """`framework` if the innermost frame of `e`'s traceback is TensorFlow's or Keras' code, else `harness`."""
    frames = traceback.extract_tb(e.__traceback__)
    path = frames[-1].filename.replace("\\", "/") if frames else ""
    return "framework" if re.search(r"/(tensorflow|keras|tf_keras)/", path) else "harness"


def _is_moving(name: str) -> bool:
    return any(m in name for m in MOVING)


def _converged(decomposed: dict) -> dict:
    """The trained model's precise-BN test accuracy and how far its moving statistics are from the
    population's (probes.convergence over the decomposition's per-layer stat.* errors)."""
    errors = {k: v for k, v in decomposed.items() if k.startswith("stat.")}
    return {"acc_test_saved_precise": decomposed["acc_test_precise"], **errors, **probes.convergence(errors)}


def _stats_flags(restored: dict, trained: dict) -> dict:
    """Exact comparisons of the restored moving statistics with the trained and the initial ones."""
    initial = all(np.array_equal(v, np.zeros_like(v) if k.endswith("moving_mean") else np.ones_like(v))
                  for k, v in restored.items())
    return {"restored_stats_exact": float(all(np.array_equal(restored[k], trained[k]) for k in trained)),
            "restored_stats_initial": float(initial)}


# ---------------------------------------------------------------- TF1: tf.compat.v1.train.Saver


def _save_list(tf, strategy: str) -> list:
    trainable = tf.compat.v1.trainable_variables()
    if strategy == "trainable":
        return trainable
    if strategy == "trainable_moving":  # the fix the source gives: filter the global variables by name
        return trainable + [g for g in tf.compat.v1.global_variables() if _is_moving(g.name)]
    return tf.compat.v1.global_variables()


def _tf1(cfg, ctx, d, strategy: str, folder) -> dict:
    fw, tf = ctx.fw, ctx.fw.tf
    bs = int(cfg.probe.eval_batch_size)

    def build(seed):
        return tf1_graph.build(fw, "tf_layers", cfg.model.name, d.input_shape, d.num_classes,
                               float(cfg.bn.momentum), float(cfg.bn.epsilon), seed)

    gm = build(int(cfg.seed))
    train_op, loss = tf1_graph.add_train_op(fw, gm, cfg.train.optimizer, float(cfg.train.lr), attach=True)
    with tf1_graph.session(fw, gm) as sess:
        fit = tf1_graph.train(sess, gm, train_op, loss, d, int(cfg.train.batch_size), int(cfg.train.batches),
                              int(cfg.seed), ctx.history)
        saved_acc = tf1_graph.accuracy(sess, gm, d.x_test, d.y_test, False, bs)
        converged = _converged(tf1_graph.decompose(cfg, sess, gm, d))
        trained = tf1_graph.moving_values(sess, gm)
        with gm.graph.as_default():
            n_mav = len(tf.compat.v1.moving_average_variables())
            path = tf.compat.v1.train.Saver(var_list=_save_list(tf, strategy)).save(sess, str(folder / "model"))
    keys = sorted(name for name, _ in tf.train.list_variables(path))

    fresh = build(int(cfg.seed) + seeds.NEXT_STAGE)  # a prediction script: same graph code, nothing trained
    with tf.compat.v1.Session(graph=fresh.graph) as sess, fresh.graph.as_default():
        failed, error, origin, initialized = 0.0, "", "", []
        try:
            tf.compat.v1.train.Saver().restore(sess, path)
        except Exception as e:  # the outcome under test; NotFoundError expected for a partial checkpoint
            failed, error, origin = 1.0, short_error(e), error_origin(e)
            sess.run(tf.compat.v1.global_variables_initializer())
            present = [v for v in tf.compat.v1.global_variables() if v.op.name in keys]
            initialized = [v.op.name for v in tf.compat.v1.global_variables() if v.op.name not in keys]
            tf.compat.v1.train.Saver(var_list=present).restore(sess, path)
        restored_acc = tf1_graph.accuracy(sess, fresh, d.x_test, d.y_test, False, bs)
        restored_bs = tf1_graph.accuracy(sess, fresh, d.x_test, d.y_test, True, bs)
        restored = tf1_graph.moving_values(sess, fresh)
    return {**fit, **converged, "keys": keys, "ckpt_keys": len(keys), "ckpt_moving_keys": sum(map(_is_moving, keys)),
            "ckpt_bytes": sum(p.stat().st_size for p in folder.glob("model.*") if p.suffix != ".meta"),
            "n_moving_average_variables": n_mav, "restore_failed": failed, "restore_error": error,
            "restore_error_origin": origin,
            "n_initialized": len(initialized), "acc_test_saved": saved_acc, "acc_test_restored": restored_acc,
            "acc_test_restored_batchstats": restored_bs, **_stats_flags(restored, trained)}


# ---------------------------------------------------------------- Keras 3: by hand, save_weights, .keras


def _keras3(cfg, ctx, d, strategy: str, folder) -> dict:
    bs = int(cfg.probe.eval_batch_size)
    model = protocol.build_model(cfg, ctx, d)
    fit = protocol.train(cfg, ctx, model, d)
    trained = probes.moving_stats(model)
    out = {**fit, "acc_test_saved": probes.accuracy(model, d.x_test, d.y_test, False, bs),
           **_converged(protocol.decompose(cfg, model, d))}
    fresh = protocol.build_model(cfg, ctx, d)  # new initial weights, moving statistics 0/1
    out.update(_weights_file(model, fresh, folder, strategy))
    if strategy == "global":
        out.update(_keras_file(cfg, ctx, model, d, folder, trained))
    out.update({"acc_test_restored": probes.accuracy(fresh, d.x_test, d.y_test, False, bs),
                "acc_test_restored_batchstats": probes.accuracy(fresh, d.x_test, d.y_test, True, bs),
                **_stats_flags(probes.moving_stats(fresh), trained)})
    return out


BN_GROUP = re.compile(r"(^|/)batch_normalization(_\d+)?/vars$")  # Keras 3 names a layer's h5 group by class
BN_MOVING_SLOTS = ("2", "3")  # a Keras 3 BN layer's variables: gamma, beta, moving_mean, moving_variance


def _weights_file(model, fresh, folder, strategy: str) -> dict:
    """model.save_weights, cut down to `strategy`'s weights, then fresh.load_weights (see the module
    docstring). The keys are the file's datasets."""
    import h5py

    path = folder / "model.weights.h5"
    model.save_weights(path)
    with h5py.File(path, "a") as f:
        if strategy != "global":
            del f["optimizer"]
        if strategy == "trainable":
            groups = []
            f.visititems(lambda name, obj: groups.append(name) if BN_GROUP.search(name) else None)
            for name in groups:
                for slot in BN_MOVING_SLOTS:
                    del f[name][slot]
        datasets = {}
        f.visititems(lambda name, obj: datasets.update({name: obj.nbytes}) if isinstance(obj, h5py.Dataset) else None)
    keys = list(datasets)
    if strategy == "trainable" and len(keys) != len(model.trainable_weights):
        raise RuntimeError(f"the cut-down weights file holds {len(keys)} arrays, the model has "
                           f"{len(model.trainable_weights)} trainable weights")
    kept = [w for w in model.weights if strategy != "trainable" or w.trainable]
    out = {"keys": keys, "ckpt_keys": len(keys), "ckpt_moving_keys": sum(_is_moving(w.path) for w in kept),
           "ckpt_bytes": sum(datasets.values()),  # the arrays' bytes: HDF5 keeps the space of deleted ones
           "restore_failed": 0.0, "restore_error": "", "restore_error_origin": "", "n_initialized": 0}
    try:
        fresh.load_weights(path)
    except Exception as e:  # the outcome under test: Keras' own check of the file against the model
        out.update(restore_failed=1.0, restore_error=short_error(e), restore_error_origin=error_origin(e))
        if strategy == "trainable":  # what a user can still do: put the trainable arrays back by hand
            for var, value in zip(fresh.trainable_weights, model.trainable_weights):
                var.assign(np.asarray(value))
            out["n_initialized"] = len(fresh.weights) - len(fresh.trainable_weights)
    return out


def _keras_file(cfg, ctx, model, d, folder, trained) -> dict:
    """model.save(.keras) and keras.models.load_model: the whole-model format."""
    path = folder / "model.keras"
    model.save(path)
    try:
        loaded = ctx.fw.keras.models.load_model(path)
    except Exception as e:
        return {"keras_file.restore_failed": 1.0, "keras_file.restore_error": short_error(e)}
    acc = probes.accuracy(loaded, d.x_test, d.y_test, False, int(cfg.probe.eval_batch_size))
    exact = _stats_flags(probes.moving_stats(loaded), trained)["restored_stats_exact"]
    return {"keras_file.restore_failed": 0.0, "keras_file.restore_error": "", "keras_file.acc_test_restored": acc,
            "keras_file.restored_stats_exact": exact}
