"""The real CLI in subprocesses: list, determinism, process isolation per semantics, status of failed
and diverged runs, skip of finished runs, and independence from the working directory."""

import json
import subprocess
import sys

from tests.conftest import ROOT, TINY, bnexp, bnexp_env, records

TIMING = {"wall_s", "child_s", "fit_s", "steps_per_s", "precise_s", "peak_rss_mb", "started_at", "paths.results_dir"}


def _science(rec: dict) -> dict:
    """The record without wall-clock measurements (every `*_s` column is seconds)."""
    return {k: v for k, v in rec.items() if k not in TIMING and not k.endswith("_s")}


def test_list_prints_scenarios_datasets_and_semantics(tmp_path, cache_dir):
    out = bnexp(["list"], tmp_path, cache_dir).stdout
    for word in ("momentum", "C01", "fashion_mnist", "cifar10", "keras2_v1", "tf1", "resnet_tiny", "brn"):
        assert word in out


def test_same_seed_gives_identical_metrics(tmp_path, cache_dir):
    for name in ("a", "b"):
        bnexp(["run", "scenario=momentum", *TINY, "seed=3"], tmp_path / name, cache_dir)
    a, b = records(tmp_path / "a")[0], records(tmp_path / "b")[0]
    assert a["status"] == "ok"
    assert _science(a) == _science(b)


def test_finished_run_is_skipped_unless_forced(tmp_path, cache_dir):
    first = bnexp(["run", "scenario=momentum", *TINY], tmp_path, cache_dir)
    rec = records(tmp_path)[0]
    again = bnexp(["run", "scenario=momentum", *TINY], tmp_path, cache_dir)
    assert records(tmp_path)[0]["started_at"] == rec["started_at"]  # not redone
    assert again.stdout.strip().splitlines()[-1] == first.stdout.strip().splitlines()[-1]
    bnexp(["run", "scenario=momentum", *TINY, "force=true"], tmp_path, cache_dir)
    assert len(records(tmp_path)) == 1


def test_mixed_semantics_multirun_matches_runs_started_alone(tmp_path, cache_dir):
    """keras3 and tf_keras jobs launched by one parent give the numbers they give when started alone."""
    bnexp(["run", "-m", "scenario=momentum", *TINY, "semantics=keras3,tf_keras", "hydra/launcher=basic"],
          tmp_path / "together", cache_dir)
    for sem in ("keras3", "tf_keras"):
        bnexp(["run", "scenario=momentum", *TINY, f"semantics={sem}"], tmp_path / sem, cache_dir)
    together = {r["semantics"]: _science(r) for r in records(tmp_path / "together")}
    assert set(together) == {"keras3", "tf_keras"}
    for sem in ("keras3", "tf_keras"):
        assert together[sem] == _science(records(tmp_path / sem)[0])
    assert together["keras3"]["keras"].startswith("3.") and together["tf_keras"]["keras"].startswith("2.")


def test_nan_loss_is_recorded_as_diverged(tmp_path, cache_dir):
    proc = bnexp(["run", "scenario=momentum", *TINY, "norm=none", "data.scaling=raw", "train.optimizer=sgd",
                  "train.lr=1e6"], tmp_path, cache_dir, check=False)
    assert proc.returncode == 1 and "run diverged" in proc.stderr
    rec = records(tmp_path)[0]
    assert rec["status"] == "diverged" and "loss became nan" in rec["error"].lower()


def test_gpu_requested_without_gpu_is_a_recorded_clear_failure(tmp_path, cache_dir):
    proc = bnexp(["run", "scenario=momentum", *TINY, "device=gpu"], tmp_path, cache_dir, check=False)
    assert proc.returncode == 1
    rec = records(tmp_path)[0]
    assert rec["status"] == "failed" and rec["error"].startswith("device=gpu but TensorFlow sees no GPU")


def test_timeout_kills_the_run_and_records_it(tmp_path, cache_dir):
    proc = bnexp(["run", "scenario=momentum", *TINY, "train.timeout_s=1"], tmp_path, cache_dir, check=False)
    assert proc.returncode == 1
    rec = records(tmp_path)[0]
    assert rec["status"] == "failed" and rec["error"].startswith("timeout")
    assert not list((tmp_path / "runs" / "momentum").glob(".tmp-*"))


def test_works_from_another_working_directory(tmp_path, cache_dir):
    proc = subprocess.run([sys.executable, "-m", "bnexp", "run", "scenario=momentum", *TINY,
                           "paths.results_dir=out"], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                          env=bnexp_env(cache_dir))
    assert proc.returncode == 0, proc.stderr
    path = proc.stdout.strip().splitlines()[-1].rsplit(": ", 1)[1]
    assert json.loads(open(tmp_path / path if not path.startswith("/") else path).read())["status"] == "ok"
    assert (tmp_path / "out" / "runs" / "momentum").is_dir()
    assert ROOT != tmp_path
