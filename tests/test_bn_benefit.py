"""The bn_benefit scenario end to end through the real CLI, at tiny size."""

import math

import pytest
from conftest import run_batch
from rule_metrics import missing_rule_metrics

EVERY = ["scenario=bn_benefit", "bn_benefit.eval_every=2", "bn_benefit.eval_samples=128",
         "bn_benefit.precise_batches=2"]


# The runs of the tests below: one multirun, one warm keras3 worker (conftest.run_batch).
RUNS = {"bn": [],
        "diverging": ["norm=none", "train.optimizer=sgd", "train.lr=1000000"],
        "high_bar": ["norm=none", "bn_benefit.fail_below=0.99"]}


@pytest.fixture(scope="module")
def runs(tmp_path_factory, cache_dir) -> dict:
    recs = run_batch([[*EVERY, *o] for o in RUNS.values()], tmp_path_factory.mktemp("bn_benefit") / "results",
                     cache_dir)
    return dict(zip(RUNS, recs))


def test_bn_benefit_record_scores_bn_with_precise_statistics(runs):
    rec = runs["bn"]
    assert rec["status"] == "ok", rec["error"]
    for key in ("steps_to_target", "steps_to_loss", "reached_target", "acc_test_final", "acc_test_final_moving",
                "diverged", "failed", "steps_done", "evaluations", "acc_test_batchstats", "acc_test_moving",
                "acc_test_precise"):
        assert key in rec, key
    assert "steps_to_target_batchstats" not in rec  # test-batch statistics score nothing any more
    assert rec["diverged"] == 0 and rec["steps_done"] == 4 and rec["evaluations"] == 2
    assert rec["steps_to_target"] in (2, 4, 6)  # an evaluation step, or censored at 4 + 2
    assert rec["reached_target"] == float(rec["steps_to_target"] < 6)
    assert rec["acc_test_final"] == rec["acc_test_precise"] and rec["acc_test_final_moving"] == rec["acc_test_moving"]
    assert rec["failed"] == float(rec["acc_test_final"] < 0.2)
    assert missing_rule_metrics(rec, "bn_benefit") == set()


def test_divergence_is_an_ok_record_that_failed(runs):
    rec = runs["diverging"]
    assert rec["status"] == "ok", rec["error"]
    assert rec["diverged"] == 1 and rec["failed"] == 1
    assert rec["reached_target"] == 0 and rec["steps_to_target"] == 6 and rec["steps_to_loss"] == 6
    assert not math.isfinite(rec["loss_final"])


def test_a_model_below_the_failure_accuracy_failed_without_diverging(runs):
    """No NaN, yet not trained: `failed` counts it (here by a bar no 4-step model clears)."""
    rec = runs["high_bar"]
    assert rec["status"] == "ok", rec["error"]
    assert rec["diverged"] == 0 and rec["failed"] == 1 and math.isfinite(rec["acc_test_final"])
    assert rec["acc_test_final"] == rec["acc_test_final_moving"]  # no BN: its one inference accuracy
