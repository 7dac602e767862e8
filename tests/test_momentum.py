"""The momentum scenario end to end through the real CLI, at tiny size."""

import math

import pytest
from conftest import TINY, bnexp, run_batch
from rule_metrics import missing_rule_metrics

LAYERS = ("conv1_norm", "conv2_norm", "fc1_norm")


@pytest.fixture(scope="module")
def runs(tmp_path_factory, cache_dir) -> dict:
    """The runs the tests below read, from one multirun with one warm keras3 worker (conftest.run_batch):
    momentum 0.9; momentum 0; momentum exp(-1/B) that also replays momentum 0."""
    recs = run_batch([["scenario=momentum", "bn.momentum=0.9"], ["scenario=momentum", "bn.momentum=0"],
                      ["scenario=momentum", "momentum.rule=exp", "momentum.replay=[0,exp]"]],
                     tmp_path_factory.mktemp("momentum") / "results", cache_dir)
    return dict(zip(("m0.9", "zero", "rule"), recs))


def test_momentum_record_has_the_decomposition(runs):
    rec = runs["m0.9"]
    assert rec["status"] == "ok", rec["error"]
    for key in ("acc_train_fit", "acc_train_batchstats", "acc_train_moving", "acc_test_batchstats",
                "acc_test_moving", "acc_test_precise", "gap_test", "steps", "wall_s", "run_id", "claims",
                "semantics", "dataset", "device", "cpu", "onednn", "git_commit", "git_clean", "tensorflow", "keras",
                "momentum_used",
                "recorded_steps", "replay_check.mean_err", "last_batch.var_rel_err"):
        assert key in rec, key
    assert rec["steps"] == rec["recorded_steps"] == 4
    assert math.isclose(rec["init_weight"], 0.9 ** 4)
    assert math.isclose(rec["gap_test"], rec["acc_test_batchstats"] - rec["acc_test_moving"])
    assert math.isclose(rec["gap_precise"], rec["acc_test_precise"] - rec["acc_test_moving"])
    for tag, m in (("m0.5", 0.5), ("m0.9", 0.9), ("m0.99", 0.99), ("m0.999", 0.999), ("mexp", math.exp(-1 / 4))):
        assert math.isclose(rec[f"{tag}.momentum"], m)
        assert math.isclose(rec[f"{tag}.init_weight"], m ** 4)
        assert math.isclose(rec[f"{tag}.gap_test"], rec["acc_test_batchstats"] - rec[f"{tag}.acc_test_moving"])
        assert math.isclose(rec[f"{tag}.gap_precise"], rec["acc_test_precise"] - rec[f"{tag}.acc_test_moving"])
        for layer in LAYERS:
            assert rec[f"{tag}.{layer}.var_ratio"] > 0
    # replaying the trained momentum reproduces the layers' own moving statistics bit for bit (Keras 3)
    assert rec["replay_check.mean_err"] == 0 and rec["replay_check.var_rel_err"] == 0
    assert rec["m0.9.acc_test_moving"] == rec["acc_test_moving"]
    assert missing_rule_metrics(rec, "momentum") == set()


def test_momentum_zero_moving_stats_equal_the_last_batch(runs):
    zero = runs["zero"]
    assert zero["status"] == "ok", zero["error"]
    assert zero["momentum_used"] == 0
    # m = 0: moving <- batch, so the moving statistics are the last training batch's moments, exactly
    assert zero["last_batch.mean_err"] == 0 and zero["last_batch.var_rel_err"] == 0


def test_rule_momentum_and_replay_match_a_real_run(runs):
    zero, rule = runs["zero"], runs["rule"]
    assert rule["status"] == "ok", rule["error"]
    assert math.isclose(rule["momentum_used"], math.exp(-1 / 4))
    assert math.isclose(rule["init_weight"], math.exp(-1))
    assert math.isclose(rule["mexp.momentum"], rule["momentum_used"])
    # BN in training mode never reads its moving statistics: the same weights whatever the momentum ...
    assert rule["weights_l1"] == zero["weights_l1"]
    assert rule["acc_test_batchstats"] == zero["acc_test_batchstats"]
    # ... so momentum 0 replayed inside the exp(-1/B) run is the momentum-0 run
    assert rule["m0.acc_test_moving"] == zero["acc_test_moving"]
    for layer in LAYERS:
        assert math.isclose(rule[f"m0.{layer}.var_ratio"], zero[f"stat.{layer}.var_ratio"], rel_tol=1e-9)
        assert math.isclose(rule[f"m0.{layer}.mean_err"], zero[f"stat.{layer}.mean_err"], rel_tol=1e-9, abs_tol=1e-12)


def test_bad_replay_value_is_a_clear_error(tmp_path, cache_dir):
    proc = bnexp(["run", "scenario=momentum", *TINY, "momentum.replay=[1.5]"], tmp_path, cache_dir, check=False)
    assert proc.returncode != 0
    assert "momentum.replay" in proc.stderr
