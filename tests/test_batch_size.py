"""The batch_size scenario end to end through the real CLI at tiny size, and the epoch budget."""

import math

import pytest
from conftest import run_batch
from rule_metrics import missing_rule_metrics

from bnexp.errors import UserError
from bnexp.toolkit import budget

DECOMPOSITION = ("acc_train_fit", "acc_train_batchstats", "acc_train_moving", "acc_test_batchstats",
                 "acc_test_moving", "gap_test", "steps", "fit_s", "steps_per_s", "train_samples", "samples_seen",
                 "wall_s", "norm", "train.batch_size", "train.epochs")
PRECISE = ("acc_test_precise", "acc_train_precise", "precise_forward_passes", "precise_s",
           "acc_test_batchstats_trainbs")


def test_epoch_budget():
    assert budget.epoch_steps(2, 2048, 2) == 2048
    assert budget.epoch_steps(2, 2048, 128) == 32
    assert budget.epoch_steps(0.5, 100, 8) == 6  # rounded, at least 1
    with pytest.raises(UserError, match="exceeds"):
        budget.epoch_steps(1, 100, 128)
    with pytest.raises(UserError, match="train.epochs"):
        budget.epoch_steps(0, 100, 8)


# The runs of the tests below: one multirun, one warm keras3 worker (conftest.run_batch).
RUNS = {"bn": ["norm=bn", "train.batch_size=8", "train.epochs=1"],
        "gn": ["norm=gn", "train.batch_size=16", "train.epochs=0.5"],
        "brn_clip": ["norm=brn_clip", "model.norm_layers=conv", "train.batch_size=8", "train.epochs=0.5"]}


@pytest.fixture(scope="module")
def runs(tmp_path_factory, cache_dir) -> dict:
    recs = run_batch([["scenario=batch_size", *o] for o in RUNS.values()],
                     tmp_path_factory.mktemp("batch_size") / "results", cache_dir)
    return dict(zip(RUNS, recs))


def test_bn_run_records_steps_and_the_decomposition(runs):
    rec = runs["bn"]
    assert rec["status"] == "ok", rec["error"]
    for key in DECOMPOSITION + PRECISE:
        assert key in rec, key
    assert rec["train_samples"] == 512
    assert rec["steps"] == 512 // 8 and rec["samples_seen"] == 512  # 1 epoch of the 512-sample subset
    assert rec["precise_forward_passes"] == 4
    assert math.isclose(rec["gap_test"], rec["acc_test_batchstats"] - rec["acc_test_moving"])
    assert rec["stat.fc1_norm.m"] == 8 and rec["stat.conv1_norm.m"] == 8 * 28 * 28  # dense: m is the batch


def test_group_norm_does_not_depend_on_the_mode(runs):
    """GroupNorm has no batch statistics: training and inference mode give the same accuracy, and
    there is nothing for precise BN to recompute."""
    rec = runs["gn"]
    assert rec["status"] == "ok", rec["error"]
    assert rec["steps"] == 16
    assert rec["acc_test_batchstats"] == rec["acc_test_moving"] and rec["gap_test"] == 0
    for key in PRECISE:
        assert key not in rec, key
    assert rec["acc_test_inference"] == rec["acc_test_moving"]  # no BN: its only inference accuracy


def test_conv_only_brn_clip_records_group_sizes_and_the_fair_accuracy(runs):
    """The new factors end to end: the norm on the convolutions only, clipped BRN; m per BN layer."""
    rec = runs["brn_clip"]
    assert rec["status"] == "ok", rec["error"]
    assert rec["model.norm_layers"] == "conv" and rec["norm"] == "brn_clip"
    assert rec["stat.conv1_norm.m"] == 8 * 28 * 28 and rec["stat.conv2_norm.m"] == 8 * 14 * 14
    assert "stat.fc1_norm.m" not in rec  # fc1 carries no norm
    assert rec["acc_test_inference"] == rec["acc_test_precise"]
    assert missing_rule_metrics(rec, "batch_size") <= {"stat.fc1_norm.m"}

