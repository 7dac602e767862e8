"""TF1 graph-mode helpers (semantics=tf1): one model, three BN implementations, a session training loop.

Every helper works on a `GraphModel` built in its own `tf.Graph` (seeded inside the graph), fed from the
NumPy arrays of `ctx.data()` through placeholders, as TF1 code was written:

  tf_layers      tf.compat.v1.layers.batch_normalization(x, training=is_training); its moving-average
                 updates go into the UPDATE_OPS collection.
  keras_session  the tf-keras model of bnexp.models driven by a session; BN follows the Keras learning
                 phase (fed), and its updates are in `model.updates`, not in UPDATE_OPS.
  manual         gamma/beta/moving variables + tf.nn.moments + tf.nn.batch_normalization, the moving
                 averages updated by `assign_moving_average` ops that are added to UPDATE_OPS by hand.

`GraphModel.update_ops` is what a train op must depend on for the moving statistics to move
(UPDATE_OPS for tf_layers and manual, model.updates for keras_session). Precise BN (R1) in a graph:
run the BN inputs over N training batches with batch statistics, average the per-batch moments and
assign them to the moving variables.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from dataclasses import dataclass, field

import numpy as np

from bnexp.errors import Diverged, UserError
from bnexp.toolkit import data, probes, protocol, training

IMPLS = {
    "tf_layers": "tf.compat.v1.layers.batch_normalization, updates in the UPDATE_OPS collection",
    "keras_session": "tf-keras model in a TF1 session, learning phase fed, updates in model.updates",
    "manual": "tf.nn.batch_normalization + assign_moving_average ops added to UPDATE_OPS by hand",
}
GRAPH_MODELS = ("small_cnn", "mlp")


@dataclass
class BNLayer:
    """One BN layer of a graph: the tensor it normalizes and its moving-statistic variables."""

    name: str
    inputs: object
    moving_mean: object
    moving_variance: object


@dataclass
class GraphModel:
    impl: str
    graph: object
    x: object  # float32 images placeholder
    y: object  # int64 labels placeholder
    training: object  # bool placeholder: BN with batch statistics (True) or moving statistics (False)
    logits: object
    bn: list[BNLayer]
    update_ops: list  # what the train op must depend on for the moving statistics to update
    update_ops_collection: int  # how many ops the graph's UPDATE_OPS collection holds
    extra: dict = field(default_factory=dict)


# ---------------------------------------------------------------- building


def build(fw, impl: str, model_name: str, input_shape, num_classes: int, momentum: float, epsilon: float,
          seed: int, zero_debias: bool = True) -> GraphModel:
    """The model in a fresh, seeded tf.Graph with BN implementation `impl` (see IMPLS)."""
    if impl not in IMPLS:
        raise UserError(f"unknown update_ops.impl {impl!r}; valid: {', '.join(IMPLS)}")
    if model_name not in GRAPH_MODELS:
        raise UserError(f"TF1 graph scenarios build {', '.join(GRAPH_MODELS)} only, not model={model_name}")
    tf = fw.tf
    graph = tf.Graph()
    with graph.as_default():
        tf.compat.v1.set_random_seed(int(seed))
        y = tf.compat.v1.placeholder(tf.int64, [None], name="labels")
        if impl == "keras_session":
            return _keras_model(fw, graph, y, model_name, input_shape, num_classes, momentum, epsilon)
        x = tf.compat.v1.placeholder(tf.float32, [None, *input_shape], name="image")
        training = tf.compat.v1.placeholder_with_default(False, [], name="is_training")
        bns: list[BNLayer] = []

        def norm(h, tag):
            name = f"{tag}_norm"
            if impl == "tf_layers":
                out = tf.compat.v1.layers.batch_normalization(h, momentum=momentum, epsilon=epsilon,
                                                              training=training, name=name)
                mm, mv = _variable(tf, f"{name}/moving_mean"), _variable(tf, f"{name}/moving_variance")
            else:
                out, mm, mv = manual_batch_norm(tf, h, training, momentum, epsilon, name, zero_debias)
            bns.append(BNLayer(name, h, mm, mv))
            return out

        logits = _body(tf, x, model_name, num_classes, norm)
        updates = tf.compat.v1.get_collection(tf.compat.v1.GraphKeys.UPDATE_OPS)
        return GraphModel(impl, graph, x, y, training, logits, bns, list(updates), len(updates))


def _body(tf, x, model_name, num_classes, norm):
    """small_cnn / mlp of bnexp.models with tf.compat.v1.layers (no bias before BN)."""
    L = tf.compat.v1.layers

    def block(h, tag):
        return tf.nn.relu(norm(h, tag))

    if model_name == "small_cnn":
        h = block(L.conv2d(x, 16, 3, padding="same", use_bias=False, name="conv1"), "conv1")
        h = L.max_pooling2d(h, 2, 2, name="pool1")
        h = block(L.conv2d(h, 32, 3, padding="same", use_bias=False, name="conv2"), "conv2")
        h = L.max_pooling2d(h, 2, 2, name="pool2")
        h = block(L.dense(L.flatten(h, name="flatten"), 64, use_bias=False, name="fc1"), "fc1")
    else:
        h = L.flatten(x, name="flatten")
        h = block(L.dense(h, 128, use_bias=False, name="fc1"), "fc1")
        h = block(L.dense(h, 64, use_bias=False, name="fc2"), "fc2")
    return L.dense(h, num_classes, name="logits")


def manual_batch_norm(tf, x, training, momentum, epsilon, name, zero_debias=True):
    """BN by hand, as TF1 tutorials wrote it: (output, moving_mean, moving_variance).

    The two assign_moving_average ops are built unconditionally and only registered in UPDATE_OPS: they
    run only if something (the train op's control dependency) asks for them. `zero_debias=True` is
    assign_moving_average's default, which the hand-written recipes keep.
    """
    from tensorflow.python.training import moving_averages  # not exported under tf.compat.v1

    channels = x.shape[-1]
    with tf.compat.v1.variable_scope(name):
        beta = tf.compat.v1.get_variable("beta", [channels], initializer=tf.compat.v1.zeros_initializer())
        gamma = tf.compat.v1.get_variable("gamma", [channels], initializer=tf.compat.v1.ones_initializer())
        moving_mean = tf.compat.v1.get_variable("moving_mean", [channels], trainable=False,
                                                initializer=tf.compat.v1.zeros_initializer())
        moving_variance = tf.compat.v1.get_variable("moving_variance", [channels], trainable=False,
                                                    initializer=tf.compat.v1.ones_initializer())
        mean, variance = tf.nn.moments(x, axes=list(range(len(x.shape) - 1)))
        for var, value in ((moving_mean, mean), (moving_variance, variance)):
            update = moving_averages.assign_moving_average(var, value, momentum, zero_debias=zero_debias)
            tf.compat.v1.add_to_collection(tf.compat.v1.GraphKeys.UPDATE_OPS, update)
        use_mean, use_var = tf.cond(training, lambda: (mean, variance),
                                    lambda: (tf.identity(moving_mean), tf.identity(moving_variance)))
        out = tf.nn.batch_normalization(x, use_mean, use_var, beta, gamma, epsilon)
    return out, moving_mean, moving_variance


def _keras_model(fw, graph, y, model_name, input_shape, num_classes, momentum, epsilon) -> GraphModel:
    from bnexp.toolkit import models

    tf = fw.tf
    model = models.build(fw, model_name, input_shape, num_classes, "bn", momentum, epsilon)
    # Use the model's own graph tensors: calling it again would add a second set of updates.
    bns = [BNLayer(layer.name, layer.input, layer.moving_mean, layer.moving_variance)
           for layer in models.batch_norm_layers(model)]
    updates = list(model.updates)
    collection = len(graph.get_collection(tf.compat.v1.GraphKeys.UPDATE_OPS))
    return GraphModel("keras_session", graph, model.input, y, fw.keras.backend.learning_phase(), model.output,
                      bns, updates, collection, extra={"model": model})


def _variable(tf, op_name: str):
    found = [v for v in tf.compat.v1.global_variables() if v.op.name == op_name]
    if len(found) != 1:
        raise RuntimeError(f"expected one variable {op_name}, found {len(found)}")
    return found[0]


def add_train_op(fw, gm: GraphModel, optimizer: str, lr: float, attach: bool):
    """(train_op, loss): the optimizer step, under a control dependency on gm.update_ops if `attach`."""
    tf = fw.tf
    with gm.graph.as_default():
        loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=gm.y, logits=gm.logits))
        opt = training.optimizer(fw, optimizer, lr, graph=True)
        with tf.control_dependencies(gm.update_ops if attach else []):
            train_op = opt.minimize(loss)
    return train_op, loss


def session(fw, gm: GraphModel):
    """A session on gm's graph with every variable initialized."""
    tf = fw.tf
    sess = tf.compat.v1.Session(graph=gm.graph)
    with gm.graph.as_default():
        sess.run(tf.compat.v1.global_variables_initializer())
    return sess


# ---------------------------------------------------------------- training and probes


def train(sess, gm: GraphModel, train_op, loss, d, batch_size: int, steps: int, seed: int,
          history: list | None = None, log_points: int = 10) -> dict:
    """`steps` session steps on feed_dict batches with is_training=True; fit metrics like bnexp.training."""
    order = data.batch_order(len(d.x_train), batch_size, steps, seed)
    every = max(1, steps // log_points)
    losses, start = [], time.perf_counter()
    for step, idx in enumerate(order, 1):
        _, value = sess.run([train_op, loss], {gm.x: d.x_train[idx], gm.y: d.y_train[idx], gm.training: True})
        losses.append(float(value))
        if not math.isfinite(losses[-1]):
            raise Diverged(f"loss became {losses[-1]} at step {step} (lower train.lr)")
        if history is not None and (step % every == 0 or step == steps):
            history.append({"step": step, "loss": float(np.mean(losses[-every:]))})
    seconds = time.perf_counter() - start
    return {"loss_final": float(np.mean(losses[-every:])), "steps": steps, "steps_per_s": steps / seconds,
            "fit_s": seconds}


def logits(sess, gm: GraphModel, x: np.ndarray, training: bool, batch_size: int = 256) -> np.ndarray:
    """Outputs in batches; training=True normalizes with each batch's statistics (no update op runs)."""
    return np.concatenate([sess.run(gm.logits, {gm.x: x[i:i + batch_size], gm.training: training})
                           for i in range(0, len(x), batch_size)])


def accuracy(sess, gm: GraphModel, x, y, training: bool, batch_size: int = 256) -> float:
    return float(np.mean(np.argmax(logits(sess, gm, x, training, batch_size), -1) == y))


def moving_values(sess, gm: GraphModel) -> dict[str, np.ndarray]:
    """Every BN layer's moving mean and variance, by `<layer>.moving_mean|moving_variance`."""
    out = {}
    for layer in gm.bn:
        mm, mv = sess.run([layer.moving_mean, layer.moving_variance])
        out[f"{layer.name}.moving_mean"], out[f"{layer.name}.moving_variance"] = mm, mv
    return out


def moving_summary(before: dict, after: dict) -> dict:
    """Did the moving statistics change at all (exact), by how much, and where they ended up."""
    dev = max(float(np.max(np.abs(after[k].astype(np.float64) - before[k]))) for k in before)
    means = np.concatenate([v for k, v in after.items() if k.endswith("moving_mean")])
    variances = np.concatenate([v for k, v in after.items() if k.endswith("moving_variance")])
    return {"moving_unchanged": float(all(np.array_equal(before[k], after[k]) for k in before)),
            "moving_max_abs_dev": dev, "moving_mean_abs": float(np.mean(np.abs(means))),
            "moving_var_mean": float(np.mean(variances))}


@dataclass
class GraphStats:
    """Precise-BN population statistics of each BN layer's input (biased per-batch variance averaged)."""

    mean: list
    var: list
    forward_passes: int
    seconds: float


def population_stats(sess, gm: GraphModel, x: np.ndarray, batch_size: int, batches: int, seed: int) -> GraphStats:
    """Average per-batch moments of every BN input over `batches` training batches (batch statistics on)."""
    order = data.batch_order(len(x), batch_size, batches, seed)
    moments = _batch_moments(gm)
    sums = [[0.0, 0.0] for _ in gm.bn]
    start = time.perf_counter()
    for idx in order:
        values = sess.run(moments, {gm.x: x[idx], gm.training: True})
        for acc, (mean, var) in zip(sums, values):
            acc[0] = acc[0] + mean.astype(np.float64)
            acc[1] = acc[1] + var.astype(np.float64)
    n = len(order)
    return GraphStats([s[0] / n for s in sums], [s[1] / n for s in sums], n, time.perf_counter() - start)


def _batch_moments(gm: GraphModel) -> list:
    """Per-channel (mean, biased variance) tensors of every BN input, built once per graph."""
    if "moments" not in gm.extra:
        import tensorflow as tf

        with gm.graph.as_default():
            gm.extra["moments"] = [tf.nn.moments(b.inputs, axes=list(range(len(b.inputs.shape) - 1)))
                                   for b in gm.bn]
    return gm.extra["moments"]


def assign_stats(sess, gm: GraphModel, means, variances) -> None:
    """Write values into the moving-statistic variables."""
    for layer, m, v in zip(gm.bn, means, variances):
        layer.moving_mean.load(np.asarray(m, np.float32), sess)
        layer.moving_variance.load(np.asarray(v, np.float32), sess)


@contextlib.contextmanager
def swapped(sess, gm: GraphModel, means, variances):
    """Inside the block the moving-statistic variables hold `means` and `variances`; then their values again."""
    saved = moving_values(sess, gm)
    assign_stats(sess, gm, means, variances)
    try:
        yield
    finally:
        assign_stats(sess, gm, [saved[f"{b.name}.moving_mean"] for b in gm.bn],
                     [saved[f"{b.name}.moving_variance"] for b in gm.bn])


def decompose(cfg, sess, gm: GraphModel, d) -> dict:
    """bnexp.toolkit.protocol.decompose for a graph: accuracy with batch, moving and precise-BN statistics
    (R1, assigned for the measurement and restored), the precise-BN cost and per-layer stat errors."""
    bs = int(cfg.probe.eval_batch_size)
    stats = population_stats(sess, gm, d.x_train, int(cfg.probe.precise_batch_size),
                             int(cfg.probe.precise_batches), int(cfg.seed) + 10_000)

    def measured(x, y, which):
        if which == "precise":
            with swapped(sess, gm, stats.mean, stats.var):
                return accuracy(sess, gm, x, y, False, bs)
        return accuracy(sess, gm, x, y, which == "batchstats", bs)

    out = protocol.decomposition(d, measured, precise=True)
    moving = moving_values(sess, gm)
    for layer, mean, var in zip(gm.bn, stats.mean, stats.var):
        out.update({f"stat.{k}": v for k, v in probes.layer_errors(
            layer.name, moving[f"{layer.name}.moving_mean"], moving[f"{layer.name}.moving_variance"], mean,
            var).items()})
    out.update(probes.convergence(out))
    out["precise_forward_passes"] = stats.forward_passes
    out["precise_s"] = stats.seconds
    return out



def trainable_abs_sum(fw, sess, gm: GraphModel) -> float:
    """Sum of |w| over the trainable variables: equal runs have equal weights."""
    with gm.graph.as_default():
        values = sess.run(fw.tf.compat.v1.trainable_variables())
    return float(sum(np.abs(np.asarray(v, np.float64)).sum() for v in values))


def process_identity(fw) -> dict:
    """Which process and framework state a run had: tf1 and keras3 runs must never share a process."""
    return {"proc.pid": os.getpid(),
            "proc.legacy_keras": float(os.environ.get("TF_USE_LEGACY_KERAS") == "1"),
            "proc.eager": float(fw.tf.executing_eagerly()) if fw.tf is not None else 1.0,  # JAX/PyTorch: eager
            "proc.keras": fw.keras.__name__}
