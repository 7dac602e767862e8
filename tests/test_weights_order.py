"""The weights_order scenario end to end through the real CLI, at tiny size."""

import pytest
from conftest import run_batch
from rule_metrics import missing_rule_metrics

CANONICAL = "gamma,beta,moving_mean,moving_variance"


SEMANTICS = ("keras3", "keras2_v1")


@pytest.fixture(scope="module")
def runs(tmp_path_factory, cache_dir) -> dict:
    """Both semantics' runs from one multirun (conftest.run_batch): one parent process, not two."""
    recs = run_batch([["scenario=weights_order", f"semantics={s}"] for s in SEMANTICS],
                     tmp_path_factory.mktemp("weights_order") / "results", cache_dir)
    return dict(zip(SEMANTICS, recs))


@pytest.mark.parametrize("semantics", SEMANTICS)
def test_weights_order_record(runs, semantics):
    rec = runs[semantics]
    assert rec["status"] == "ok", rec["error"]
    assert rec["order_by_name"] == CANONICAL and rec["order_by_value"] == CANONICAL
    assert rec["order_by_name_ok"] == 1 and rec["order_by_value_ok"] == 1
    assert rec["weights_per_layer"] == 4
    for key in ("acc_test_moving", "acc_test_slot4_variance", "acc_test_slot4_std", "slot4_over_pop_var",
                "slot4_over_pop_std", "slot4_closer_to_variance"):
        assert key in rec, key
    assert rec["acc_var_minus_std"] == rec["acc_test_slot4_variance"] - rec["acc_test_slot4_std"]
    # slot4/std = (slot4/var) * sqrt(var): the two ratios differ unless every variance is 1
    assert rec["slot4_over_pop_var"] > 0 and rec["slot4_over_pop_std"] > 0
    # momentum 0 for one training-mode pass: slot 4 is that batch's variance, up to float32 summation (Keras 3)
    # and tf-keras' fused conv BN storing the unbiased variance (m/(m-1), m = 32*14*14 values per channel here)
    assert rec["slot4_is_batch_variance"] == 1 and rec["slot4_variance_channel_share"] == 1
    assert rec["slot4_vs_batch_var_max_rel_err"] < (1e-4 if semantics == "keras3" else 1 / 6271 + 1e-4)
    assert rec["slot4_vs_batch_std_median_rel_err"] > 0.1
    assert missing_rule_metrics(rec, "weights_order") == set()
