"""C08: in TF1 graph mode the moving-average updates of BN are separate ops; unless the train op
depends on them (UPDATE_OPS, or model.updates for a Keras model) the moving statistics never change
and inference, which uses them, is poor.

Protocol (semantics=tf1, each run in its own tf.Graph and session): build the model (model=small_cnn)
with one of three BN implementations (`update_ops.impl`): tf.compat.v1.layers.batch_normalization,
a tf-keras model driven by the session with the learning phase fed, or a hand-written BN from
tf.nn.batch_normalization + assign_moving_average registered in UPDATE_OPS. The train op is the
optimizer's minimize, built under `tf.control_dependencies(update_ops)` if `update_ops.attach`, else
without. Train train.batches steps on feed_dict batches with is_training=True. Measure: whether the
moving statistics differ at all from their values right after initialization (exact 0/1 flag) and the
largest deviation, and how far they are from the precise-BN population statistics (`stat_err_max`,
`stat_converged`: the attached runs must converge, else inference re-measures C01); accuracy on
train/test data with batch statistics, with the moving statistics (inference) and with precise-BN
statistics recomputed in the graph (R1); how many ops the UPDATE_OPS
collection and the implementation's update list hold. The dependency does not change the forward or
backward pass, so runs that differ only in `attach` should train identical weights
(`trainable_abs_sum`).

`update_ops.zero_debias` is a factor of the manual implementation only: assign_moving_average's default
(true) divides the average by 1 - momentum^t, which removes the initial 0/1 however few the steps; with
false the moving statistics lag like Keras' (C01). tf.layers and tf-keras have no such switch: their runs
record `zero_debias` = NaN whatever the setting.
"""

from __future__ import annotations

import math

from bnexp.toolkit import tf1_graph


def run(cfg, ctx) -> dict:
    fw, opts = ctx.fw, cfg.update_ops
    d = ctx.data()
    gm = tf1_graph.build(fw, opts.impl, cfg.model.name, d.input_shape, d.num_classes, float(cfg.bn.momentum),
                         float(cfg.bn.epsilon), int(cfg.seed), zero_debias=opts.zero_debias)
    train_op, loss = tf1_graph.add_train_op(fw, gm, cfg.train.optimizer, float(cfg.train.lr), bool(opts.attach))
    with tf1_graph.session(fw, gm) as sess:
        initial = tf1_graph.moving_values(sess, gm)
        fit = tf1_graph.train(sess, gm, train_op, loss, d, int(cfg.train.batch_size), int(cfg.train.batches),
                              int(cfg.seed), ctx.history)
        after = tf1_graph.moving_values(sess, gm)
        return {
            **fit,
            **tf1_graph.moving_summary(initial, after),
            **tf1_graph.decompose(cfg, sess, gm, d),
            "zero_debias": float(opts.zero_debias) if opts.impl == "manual" else math.nan,  # manual's switch only
            "n_update_ops": len(gm.update_ops),  # what the dependency would attach
            "n_update_ops_collection": gm.update_ops_collection,  # what tf.GraphKeys.UPDATE_OPS holds
            "trainable_abs_sum": tf1_graph.trainable_abs_sum(fw, sess, gm),
            **tf1_graph.process_identity(fw),
        }
