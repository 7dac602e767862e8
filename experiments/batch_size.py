"""C11: BN is said to lose accuracy when the batch is small, while normalizations that do not use the
batch (GroupNorm, LayerNorm) or correct for it (Batch Renormalization, BN with renorm=True) do not.

Protocol: small_cnn with the norm layer `norm` (bn | gn | ln | brn | none) is trained for `train.epochs`
epochs over the same training subset (`data.train_size` samples, drawn by seed) at batch size
`train.batch_size`, so every batch size sees the same number of samples (a practitioner's fixed epoch
budget) and takes steps = epochs * train_size / batch_size optimizer steps. On the same test data we then
measure accuracy
  - with the moving statistics Keras kept (inference mode: what a user gets),
  - with batch statistics, in eval batches of `probe.eval_batch_size`, and in batches of the training
    batch size (the normalization the model was trained under),
  - with precise-BN population statistics recomputed after training (R1).
If R1 brings a small-batch BN model back to its large-batch accuracy, the loss sat in the inference
statistics; if it does not, training itself suffered (noisy batch statistics, and a model fitted to them).
Steps, fit seconds and steps/s record what tiny batches cost.
"""

from __future__ import annotations

from bnexp.toolkit import models, probes, protocol


def run(cfg, ctx) -> dict:
    d, model, fit = protocol.train_epochs(cfg, ctx)
    batch_size = int(cfg.train.batch_size)
    out = {**fit, **protocol.decompose(cfg, model, d),
           "train_samples": len(d.x_train), "samples_seen": fit["steps"] * batch_size}
    if models.batch_norm_layers(model):
        out["acc_test_batchstats_trainbs"] = probes.accuracy(model, d.x_test, d.y_test, True, batch_size)
    return out
