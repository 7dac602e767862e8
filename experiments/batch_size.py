"""C11: BN is said to lose accuracy when the batch is small, while normalizations that do not use the
batch (GroupNorm, LayerNorm) or correct for it (Batch Renormalization, BN with renorm=True) do not.

Protocol: small_cnn with the norm layer `norm` (bn | gn | ln | brn | brn_clip | none) on the layers
`model.norm_layers` names (conv_dense: conv1, conv2 and the dense fc1; conv: the convolutions only) is
trained for `train.epochs` epochs over the same training subset (`data.train_size` samples, drawn by seed)
at batch size `train.batch_size`, so every batch size sees the same number of samples (a practitioner's
fixed epoch budget) and takes steps = epochs * train_size / batch_size optimizer steps. On the same test data we then
measure accuracy
  - with the moving statistics Keras kept (inference mode: what a user gets),
  - with batch statistics, in eval batches of `probe.eval_batch_size`, and in batches of the training
    batch size (the normalization the model was trained under),
  - with precise-BN population statistics recomputed after training (R1), in batches of
    probe.precise_batch_size (`acc_test_precise`) and in batches of the training batch size
    (`acc_test_precise_trainbs`: the variance estimate the model was trained with, C12's concern).
If R1 brings a small-batch BN model back to its large-batch accuracy, the loss sat in the inference
statistics; if it does not, training itself suffered (noisy batch statistics, and a model fitted to them).
Steps, fit seconds and steps/s record what tiny batches cost.

Per BN layer, `stat.<layer>.m` is its normalization group size at the training batch size: the values per
channel one batch statistic is computed over (batch x height x width for a conv layer, batch for a dense
one: at batch 2 every fc1 feature is normalized over 2 values, i.e. to about +-1). `acc_test_inference`
is the accuracy a fair comparison uses: precise-BN statistics for BN/BRN (no single momentum converges at
every batch size of a fixed epoch budget: batch 128 has 32 steps, batch 2 noisy 2-image averages), the
model's only inference accuracy for gn/ln/none. The no-norm model is the control: it changes over batch
sizes too (more, smaller steps), so the verdict rules read BN's drop against it (`baseline`).
"""

from __future__ import annotations

import math

from bnexp.toolkit import data, models, precise_bn, probes, protocol
from experiments import seeds


def run(cfg, ctx) -> dict:
    d, model, fit = protocol.train_epochs(cfg, ctx)
    batch_size = int(cfg.train.batch_size)
    out = {**fit, **protocol.decompose(cfg, model, d),
           "train_samples": len(d.x_train), "samples_seen": fit["steps"] * batch_size}
    bns = models.batch_norm_layers(model)
    if bns:
        out["acc_test_batchstats_trainbs"] = probes.accuracy(model, d.x_test, d.y_test, True, batch_size)
        out["acc_test_precise_trainbs"] = probes.accuracy_precise(
            model, d.x_test, d.y_test, precise_at_training_batch_size(cfg, model, d),
            batch_size=int(cfg.probe.eval_batch_size))
        out.update(group_sizes(bns, batch_size))
    out["acc_test_inference"] = out["acc_test_precise"] if bns else out["acc_test_moving"]
    return out


def precise_at_training_batch_size(cfg, model, d) -> precise_bn.Recompute:
    """R1 statistics recomputed in batches of the training batch size (probe.precise_batches of them): the
    per-batch variances average the same biased estimate the model was normalized with in training, where
    acc_test_precise recomputes them at probe.precise_batch_size (issue #26: report both)."""
    stream = data.train_batches(d.x_train, d.y_train, int(cfg.train.batch_size), int(cfg.probe.precise_batches),
                                int(cfg.seed) + seeds.PRECISE)
    return precise_bn.population_stats(model, stream)


def group_sizes(bn_layers, batch_size: int) -> dict:
    """`stat.<layer>.m`: how many values one batch statistic of the layer averages over, per channel."""
    return {f"stat.{layer.name}.m": batch_size * math.prod(int(n) for n in layer.input.shape[1:-1])
            for layer in bn_layers}
