"""The update_ops scenario (C08, TF1 graph mode) end to end through the real CLI, at tiny size."""

import math

import pytest
from conftest import run_batch
from rule_metrics import missing_rule_metrics

KEYS = ("moving_unchanged", "moving_max_abs_dev", "acc_test_batchstats", "acc_test_moving", "acc_test_precise",
        "acc_train_precise", "gap_test", "n_update_ops", "n_update_ops_collection", "trainable_abs_sum",
        "steps", "proc.pid", "proc.eager", "proc.legacy_keras", "stat_err_max", "stat_converged", "zero_debias")


# Every run this file asserts on, all tf1: one multirun and one warm tf1 worker serve them (conftest.run_batch).
RUNS = {"tf_layers_on": ["update_ops.impl=tf_layers", "update_ops.attach=true"],
        "tf_layers_off": ["update_ops.impl=tf_layers", "update_ops.attach=false"],
        "manual_debiased": ["update_ops.impl=manual", "update_ops.zero_debias=true"],
        "manual_plain": ["update_ops.impl=manual", "update_ops.zero_debias=false"],
        "keras_session_off": ["update_ops.impl=keras_session", "update_ops.attach=false"],
        "manual_off": ["update_ops.impl=manual", "update_ops.attach=false"]}


@pytest.fixture(scope="module")
def runs(tmp_path_factory, cache_dir) -> dict:
    results = tmp_path_factory.mktemp("update_ops") / "results"
    return dict(zip(RUNS, run_batch([["scenario=update_ops", *o] for o in RUNS.values()], results, cache_dir)))


def _ok(rec):
    assert rec["status"] == "ok", rec["error"]
    for key in KEYS:
        assert key in rec, key
    assert rec["semantics"] == "tf1" and rec["proc.eager"] == 0.0 and rec["proc.legacy_keras"] == 1.0
    assert rec["steps"] == 4
    return rec


def test_tf_layers_dependency_moves_only_the_statistics(runs):
    on, off = _ok(runs["tf_layers_on"]), _ok(runs["tf_layers_off"])
    assert off["moving_unchanged"] == 1.0 and off["moving_max_abs_dev"] == 0.0  # exactly the initial 0/1
    assert on["moving_unchanged"] == 0.0 and on["moving_max_abs_dev"] > 0.0
    assert on["n_update_ops"] == on["n_update_ops_collection"] == 6  # 3 BN layers x (mean, variance)
    # The dependency adds ops but changes neither the forward nor the backward pass.
    assert on["trainable_abs_sum"] == off["trainable_abs_sum"]
    assert on["acc_test_batchstats"] == off["acc_test_batchstats"]
    # 4 steps at momentum 0.9 leave 0.9^4 = 66% of the initial 0/1: far from converged; unattached stays 0/1
    assert on["stat_err_max"] > 0.1 and on["stat_converged"] == 0.0 == off["stat_converged"]
    assert math.isnan(on["zero_debias"])  # tf.layers has no such switch
    assert missing_rule_metrics(on, "update_ops") == set()


def test_zero_debias_is_manual_bns_factor(runs):
    """De-biasing divides by 1 - momentum^t: after 4 steps it removes the initial 0/1 that plain EMA keeps."""
    debiased, plain = _ok(runs["manual_debiased"]), _ok(runs["manual_plain"])
    assert debiased["zero_debias"] == 1.0 and plain["zero_debias"] == 0.0
    assert debiased["trainable_abs_sum"] == plain["trainable_abs_sum"]  # the switch touches only the statistics
    assert debiased["stat_err_max"] < plain["stat_err_max"]


@pytest.mark.parametrize("impl, in_collection", [("keras_session", 0), ("manual", 6)])
def test_statistics_exactly_unchanged_without_the_dependency(runs, impl, in_collection):
    rec = _ok(runs[f"{impl}_off"])
    assert rec["moving_unchanged"] == 1.0 and rec["moving_max_abs_dev"] == 0.0
    assert rec["n_update_ops"] == 6
    # tf-keras layers keep their updates in model.updates; only tf.layers and hand-made ops use UPDATE_OPS.
    assert rec["n_update_ops_collection"] == in_collection
