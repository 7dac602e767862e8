"""The checkpoint scenario (C09) end to end through the real CLI, at tiny size, and the process
isolation of tf1 and keras3 runs."""

from pathlib import Path

import pytest
from conftest import TINY, bnexp, records, run_batch


def _run_dir(results: Path, rec: dict) -> Path:
    return results / "runs" / "checkpoint" / rec["run_id"]


def _keys(results: Path, rec: dict) -> list[str]:
    return (_run_dir(results, rec) / "checkpoint_keys.txt").read_text().split()


def _is_moving(key: str) -> bool:
    return "moving_mean" in key or "moving_variance" in key


@pytest.mark.slow  # ~11 s; each strategy's restore has a faster test below
def test_trainable_only_checkpoints_in_separate_processes(tmp_path, cache_dir):
    """One multirun (one parent, reused launcher workers) with a tf1 and a keras3 run of strategy (a):
    each run must have had its own child process and framework state, and neither checkpoint holds a
    moving statistic."""
    results = tmp_path / "r"
    bnexp(["run", "-m", *TINY, "scenario=checkpoint", "semantics=tf1,keras3", "checkpoint.strategy=trainable"],
          results, cache_dir)
    recs = {r["semantics"]: r for r in records(results, "checkpoint")}
    assert set(recs) == {"tf1", "keras3"}
    tf1, k3 = recs["tf1"], recs["keras3"]
    for rec in (tf1, k3):
        assert rec["status"] == "ok", rec["error"]
        keys = _keys(results, rec)
        assert len(keys) == rec["ckpt_keys"] == 11  # 3 kernels, 3 x (gamma, beta), logits kernel + bias
        assert not any(map(_is_moving, keys)) and rec["ckpt_moving_keys"] == 0
        assert rec["n_initialized"] == 6 and rec["restored_stats_initial"] == 1.0
        assert rec["restore_failed"] == 1.0
        assert rec["acc_drop"] == rec["acc_test_saved"] - rec["acc_test_restored"]
        assert not (_run_dir(results, rec) / "checkpoint_tmp").exists()  # temporary files removed
    assert tf1["proc.pid"] != k3["proc.pid"]
    assert (tf1["proc.legacy_keras"], tf1["proc.eager"], tf1["proc.keras"]) == (1.0, 0.0, "tf_keras")
    assert (k3["proc.legacy_keras"], k3["proc.eager"], k3["proc.keras"]) == (0.0, 1.0, "keras")
    # TF1: the default Saver of the prediction graph misses a moving statistic; Keras 3: load_weights
    # refuses a weights file without the BN layers' moving statistics. Both errors are the framework's.
    assert tf1["restore_error"].startswith("NotFoundError: Key ") and "moving_" in tf1["restore_error"]
    assert k3["restore_error"].startswith("ValueError: Layer ") and "expected 4 variables" in k3["restore_error"]
    assert tf1["restore_error_origin"] == k3["restore_error_origin"] == "framework"
    for rec in (tf1, k3):  # convergence of the trained statistics is recorded (rule precondition)
        assert rec["stat_converged"] in (0.0, 1.0) and rec["stat_err_max"] > 0
        assert 0 <= rec["acc_test_saved_precise"] <= 1


def test_error_origin_names_the_code_that_raised():
    from experiments.checkpoint import error_origin

    try:
        raise ValueError("ours")
    except ValueError as e:
        assert error_origin(e) == "harness"


@pytest.fixture(scope="module")
def restores(tmp_path_factory, cache_dir) -> tuple[Path, dict]:
    """(results folder, {(semantics, strategy): record}) of the runs the restore tests below read: one multirun,
    one warm worker per semantics (conftest.run_batch)."""
    results = tmp_path_factory.mktemp("checkpoint") / "r"
    keys = [("tf1", "trainable_moving"), ("keras3", "trainable_moving"), ("keras3", "global")]
    recs = run_batch([["scenario=checkpoint", f"semantics={sem}", f"checkpoint.strategy={strategy}"]
                      for sem, strategy in keys], results, cache_dir)
    return results, dict(zip(keys, recs))


def test_tf1_trainable_plus_moving_restores_exactly(restores):
    results, recs = restores
    rec = recs[("tf1", "trainable_moving")]
    assert rec["status"] == "ok", rec["error"]
    assert rec["ckpt_moving_keys"] == 6 and rec["restore_failed"] == 0.0 and rec["n_initialized"] == 0
    assert sum(map(_is_moving, _keys(results, rec))) == 6
    assert rec["restored_stats_exact"] == 1.0
    assert rec["acc_test_restored"] == rec["acc_test_saved"]
    assert not (_run_dir(results, rec) / "checkpoint_tmp").exists()


@pytest.mark.parametrize("strategy", ["trainable_moving", "global"])
def test_keras3_weights_files_with_the_moving_statistics_restore_exactly(restores, strategy):
    results, recs = restores
    rec = recs[("keras3", strategy)]
    assert rec["status"] == "ok", rec["error"]
    assert rec["restore_failed"] == 0.0 and rec["restore_error_origin"] == "" and rec["ckpt_moving_keys"] == 6
    assert rec["restored_stats_exact"] == 1.0 and rec["acc_test_restored"] == rec["acc_test_saved"]
    optimizer_keys = [k for k in _keys(results, rec) if k.startswith("optimizer")]
    assert bool(optimizer_keys) == (strategy == "global")  # only the whole file keeps the optimizer state
    if strategy == "global":
        assert rec["keras_file.restore_failed"] == 0.0 and rec["keras_file.restored_stats_exact"] == 1.0
