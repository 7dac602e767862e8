"""C12: inference should normalize with the unbiased population variance m/(m-1) * E[var_B]; the biased
E[var_B] is said to hurt at small batch sizes. R1: how many batches precise BN needs.

Protocol: small_cnn with BN is trained for `train.epochs` epochs over `data.train_size` samples at batch size
B = `train.batch_size` (the batch_size scenario's budget). With the weights frozen, every BN layer's
population statistics are recomputed (precise BN, R1) from batches of the training size B, the batches
whose biased variance var_B the model was normalized with during training and that Keras' moving variance
averages. Inference then uses either E[var_B] (biased) or m/(m-1) * E[var_B] (unbiased), where m is the
number of values per channel in a batch: B*H*W for a conv layer (large even at B = 2), B for a dense layer.
Measured on the same test data:
  - test accuracy with Keras' moving statistics, with the biased and with the unbiased recomputed variance;
  - per BN layer, m and the ratio of each variance (moving, biased, unbiased) to a reference population
    variance: the unbiased variance recomputed from the largest R1 count of `probe.precise_batch_size` batches;
  - R1 convergence: test accuracy after precise BN from the first n of those batches (biased variance, as
    Keras stores it), n in `variance.curve_batches`, and the fewest n (and samples) from which the accuracy
    stays within `variance.tolerance` of the accuracy at the largest n.
The usual decomposition (batch statistics, moving statistics, R1 at probe.precise_batches) is recorded too.
"""

from __future__ import annotations

import math

import numpy as np

from bnexp.toolkit import data, precise_bn, precise_curve, probes, protocol
from bnexp.toolkit.models import batch_norm_layers
from experiments import seeds


def run(cfg, ctx) -> dict:
    d, model, fit = protocol.train_epochs(cfg, ctx)
    batch_size = int(cfg.train.batch_size)

    curve = r1_curve(cfg, model, d)
    reference = curve[max(curve)]
    out = {**fit, **protocol.decompose(cfg, model, d, stats=curve.get(int(cfg.probe.precise_batches))),
           "train_samples": len(d.x_train)}

    at_b = precise_bn.population_stats(model, data.train_batches(
        d.x_train, d.y_train, batch_size, math.ceil(int(cfg.variance.recompute_samples) / batch_size),
        int(cfg.seed) + seeds.POPULATION))
    out.update(biased_vs_unbiased(cfg, model, d, at_b))
    out.update(variance_ratios(model, at_b, reference))
    out.update(convergence(cfg, model, d, curve))
    return out


def r1_curve(cfg, model, d) -> dict[int, precise_bn.Recompute]:
    """Precise-BN statistics from the first n batches of one stream, for every n in variance.curve_batches.

    The stream is the one protocol.precise_stats draws (same seed and batch size), so its first
    probe.precise_batches batches are exactly the R1 statistics of the decomposition.
    """
    counts = [int(n) for n in cfg.variance.curve_batches]
    stream = data.train_batches(d.x_train, d.y_train, int(cfg.probe.precise_batch_size), max(counts),
                                int(cfg.seed) + seeds.PRECISE)
    return precise_curve.prefix_stats(model, stream, counts)


def biased_vs_unbiased(cfg, model, d, at_b: precise_bn.Recompute) -> dict:
    """Test accuracy with the variance recomputed at the training batch size, biased and unbiased."""
    bs = int(cfg.probe.eval_batch_size)
    biased = probes.accuracy_precise(model, d.x_test, d.y_test, at_b, unbiased=False, batch_size=bs)
    unbiased = probes.accuracy_precise(model, d.x_test, d.y_test, at_b, unbiased=True, batch_size=bs)
    return {"acc_test_var_biased": biased, "acc_test_var_unbiased": unbiased, "unbiased_gain": unbiased - biased,
            "recompute_passes": at_b.forward_passes, "recompute_s": at_b.seconds}


def variance_ratios(model, at_b: precise_bn.Recompute, reference: precise_bn.Recompute) -> dict:
    """Per BN layer: m at the training batch size, and moving / biased / unbiased variance over the
    reference population variance."""
    out = {}
    for layer, s, ref in zip(batch_norm_layers(model), at_b.layers, reference.layers):
        pop = ref.var(unbiased=True)
        out[f"stat.{s.name}.m"] = s.m
        out[f"stat.{s.name}.var_ratio_moving"] = probes.variance_ratio(np.asarray(layer.moving_variance, np.float64),
                                                                      pop)
        out[f"stat.{s.name}.var_ratio_biased"] = probes.variance_ratio(s.var_biased, pop)
        out[f"stat.{s.name}.var_ratio_unbiased"] = probes.variance_ratio(s.var_unbiased, pop)
    return out


def convergence(cfg, model, d, curve: dict[int, precise_bn.Recompute]) -> dict:
    """R1 test accuracy per number of recomputation batches, and how many it needs to converge."""
    bs = int(cfg.probe.eval_batch_size)
    acc = {n: probes.accuracy_precise(model, d.x_test, d.y_test, stats, batch_size=bs) for n, stats in curve.items()}
    need = precise_curve.batches_to_converge(acc, float(cfg.variance.tolerance))
    largest = curve[max(curve)]
    return {**{f"acc_test_r1_n{n}": a for n, a in acc.items()},
            "r1_batches_needed": need, "r1_samples_needed": need * int(cfg.probe.precise_batch_size),
            "r1_curve_passes": largest.forward_passes, "r1_curve_s": largest.seconds}
