"""The bn_benefit scenario end to end through the real CLI, at tiny size."""

import math

from rule_metrics import missing_rule_metrics

EVERY = ["scenario=bn_benefit", "bn_benefit.eval_every=2", "bn_benefit.eval_samples=128"]


def test_bn_benefit_record(run_cli):
    rec = run_cli(*EVERY)
    assert rec["status"] == "ok", rec["error"]
    for key in ("steps_to_target", "steps_to_target_batchstats", "steps_to_loss", "reached_target",
                "acc_test_final", "diverged", "steps_done", "acc_test_batchstats", "acc_test_moving"):
        assert key in rec, key
    assert rec["diverged"] == 0 and rec["steps_done"] == 4
    assert rec["steps_to_target"] in (2, 4, 6)  # an evaluation step, or censored at 4 + 2
    assert rec["reached_target"] == float(rec["steps_to_target"] < 6)
    assert missing_rule_metrics(rec, "bn_benefit") == set()


def test_divergence_is_an_ok_record_with_diverged_1(run_cli):
    rec = run_cli(*EVERY, "norm=none", "train.optimizer=sgd", "train.lr=1000000")
    assert rec["status"] == "ok", rec["error"]
    assert rec["diverged"] == 1
    assert rec["reached_target"] == 0 and rec["steps_to_target"] == 6
    assert not math.isfinite(rec["loss_final"])
