"""The variance scenario end to end through the real CLI at tiny size: m per layer, the unbiased factor,
the R1 convergence curve and its reuse as the decomposition's precise BN."""

import math


def test_variance_record(run_cli):
    bs = 4
    rec = run_cli("scenario=variance", f"train.batch_size={bs}", "train.epochs=0.5",
                  "variance.recompute_samples=32", "variance.curve_batches=[1,2,4]")
    assert rec["status"] == "ok", rec["error"]
    for key in ("acc_test_moving", "acc_test_batchstats", "acc_test_precise", "acc_test_var_biased",
                "acc_test_var_unbiased", "unbiased_gain", "recompute_s", "r1_batches_needed",
                "r1_samples_needed", "r1_curve_s", "acc_test_r1_n1", "acc_test_r1_n2", "acc_test_r1_n4"):
        assert key in rec, key
    assert rec["steps"] == 512 // 2 // bs
    # m: values per channel in a training batch (valid for small_cnn on 28x28: conv 28x28, then 14x14)
    m = {"conv1_norm": bs * 28 * 28, "conv2_norm": bs * 14 * 14, "fc1_norm": bs}
    for layer, expected in m.items():
        assert rec[f"stat.{layer}.m"] == expected
        ratio = rec[f"stat.{layer}.var_ratio_unbiased"] / rec[f"stat.{layer}.var_ratio_biased"]
        assert math.isclose(ratio, expected / (expected - 1), rel_tol=1e-6)
    assert rec["recompute_passes"] == 32 // bs
    assert math.isclose(rec["unbiased_gain"], rec["acc_test_var_unbiased"] - rec["acc_test_var_biased"])
    # the decomposition's R1 (probe.precise_batches=4) is the convergence stream's first 4 batches
    assert rec["precise_forward_passes"] == 4 and rec["acc_test_precise"] == rec["acc_test_r1_n4"]
    assert rec["r1_curve_passes"] == 4 and rec["r1_batches_needed"] in (1, 2, 4)
    assert rec["r1_samples_needed"] == rec["r1_batches_needed"] * 32
