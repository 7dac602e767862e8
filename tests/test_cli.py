"""The real CLI in subprocesses: list, determinism, process isolation per semantics, status of failed
and diverged runs, skip of finished runs, progress and key numbers, fault paths (full disk, read-only
folder, broken pipe), and independence from the working directory."""

import json
import shutil
import subprocess
import sys

import pytest

from tests.conftest import ROOT, TINY, bnexp, bnexp_env, records

TIMING = {"wall_s", "child_s", "fit_s", "steps_per_s", "precise_s", "peak_rss_mb", "started_at", "paths.results_dir"}


def _science(rec: dict) -> dict:
    """The record without wall-clock measurements (every `*_s` column is seconds)."""
    return {k: v for k, v in rec.items() if k not in TIMING and not k.endswith("_s")}


def test_list_prints_scenarios_datasets_and_semantics(tmp_path, cache_dir):
    out = bnexp(["list"], tmp_path, cache_dir).stdout
    for word in ("momentum", "C01", "fashion_mnist", "cifar10", "keras2_v1", "tf1", "resnet_tiny", "brn"):
        assert word in out


def test_single_run_shows_progress_and_key_numbers_a_rerun_is_skipped_and_forced_gives_identical_metrics(
        tmp_path, cache_dir):
    first = bnexp(["run", "scenario=momentum", *TINY], tmp_path, cache_dir).stdout
    rec = records(tmp_path)[0]
    assert "  step 4/4 accuracy" in first  # Keras' numbers, one line per logged chunk
    assert (f"  test accuracy: batch statistics {rec['acc_test_batchstats']:.3f}, moving statistics "
            f"{rec['acc_test_moving']:.3f}, population statistics (precise BN) {rec['acc_test_precise']:.3f}") in first
    assert f"gap (batch - moving statistics): {rec['gap_test']:+.3f}" in first
    assert first.strip().splitlines()[-1].startswith("  ")  # ends with one sentence on what they mean
    header = (tmp_path / "runs" / "momentum" / rec["run_id"] / "history.csv").read_text().splitlines()[0]
    assert header.startswith("epoch,accuracy,loss")  # Keras' CSVLogger
    again = bnexp(["run", "scenario=momentum", *TINY], tmp_path, cache_dir).stdout
    assert records(tmp_path)[0]["started_at"] == rec["started_at"]  # not redone
    assert f"momentum {rec['run_id']} already done (force=true to redo)" in again
    bnexp(["run", "scenario=momentum", *TINY, "force=true"], tmp_path, cache_dir)
    [forced] = records(tmp_path)  # redone in place, in a fresh process: the same seed gives the same numbers
    assert forced["started_at"] != rec["started_at"]
    assert rec["status"] == "ok" and _science(forced) == _science(rec)


@pytest.mark.slow  # ~20 s; test_workers' bit-identity test mixes semantics in make test
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
    proc = bnexp(["run", "scenario=batch_size", *TINY, "train.epochs=1", "norm=none", "data.scaling=raw",
                  "train.optimizer=sgd", "train.lr=1e6"], tmp_path, cache_dir, check=False)
    assert proc.returncode == 1 and "run diverged" in proc.stderr
    rec = records(tmp_path)[0]
    assert rec["status"] == "diverged" and "loss became nan" in rec["error"].lower()


def test_gpu_requested_without_gpu_is_a_recorded_clear_failure(tmp_path, cache_dir):
    """A failure only TensorFlow can detect: one line that names the run's log file."""
    proc = bnexp(["run", "scenario=momentum", *TINY, "device=gpu"], tmp_path, cache_dir, check=False)
    assert proc.returncode == 1
    rec = records(tmp_path)[0]
    assert rec["status"] == "failed" and rec["error"].startswith("device=gpu but TensorFlow sees no GPU")
    log = tmp_path / "runs" / "momentum" / rec["run_id"] / "log.txt"
    assert proc.stderr.strip() == f"bnexp: error: run failed: {rec['error']} (log: {log})"


def test_multirun_with_a_failed_run_exits_nonzero(tmp_path, cache_dir):
    proc = bnexp(["run", "-m", "scenario=momentum", *TINY, "seed=0,1", "train.timeout_s=1",
                  "hydra/launcher=basic"], tmp_path, cache_dir, check=False)
    assert proc.returncode == 1 and "2 of 2 runs did not end ok" in proc.stderr
    assert [r["status"] for r in records(tmp_path)] == ["failed", "failed"]


def test_broken_pipe_is_one_line(tmp_path):
    proc = subprocess.run(f"{sys.executable} -m bnexp list | head -1; exit ${{PIPESTATUS[0]}}", shell=True,
                          executable="/bin/bash", cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 141 and proc.stdout == "scenarios (scenario=NAME):\n"
    assert proc.stderr == "bnexp: output closed early (broken pipe); nothing else was affected\n"


def _in_small_tmpfs(shell: str, folder, timeout=300) -> subprocess.CompletedProcess:
    """`shell` in a private mount namespace where `folder` is a 64 KiB tmpfs (unprivileged: user namespace)."""
    script = f"mount -t tmpfs -o size=64k none {folder} && {shell}"
    return subprocess.run(["unshare", "-r", "-m", "bash", "-c", script], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT)


def _tmpfs_works(tmp_path) -> bool:
    if shutil.which("unshare") is None:
        return False
    (tmp_path / "probe").mkdir()
    return _in_small_tmpfs("true", tmp_path / "probe", 30).returncode == 0


def test_read_only_results_folder_is_one_line(tmp_path, cache_dir):
    if not _tmpfs_works(tmp_path):
        pytest.skip("no unprivileged mount namespaces here")
    results = tmp_path / "ro"
    results.mkdir()
    cmd = (f"mount -o remount,ro {results} && BNEXP_CACHE={cache_dir} PYTHONPATH={ROOT} "
           f"{sys.executable} -m bnexp run scenario=momentum paths.results_dir={results}")
    proc = _in_small_tmpfs(cmd, results)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr == (f"bnexp: error: results folder {results} is not writable (Read-only file system); "
                           f"choose another with paths.results_dir=... or fix its permissions\n")


def test_full_disk_is_one_line(tmp_path, cache_dir):
    """The tmpfs is filled up once the run has started: its record cannot be written."""
    if not _tmpfs_works(tmp_path):
        pytest.skip("no unprivileged mount namespaces here")
    results = tmp_path / "full"
    results.mkdir()
    env = f"BNEXP_CACHE={cache_dir} PYTHONPATH={ROOT} BNEXP_JOBS=1"
    run = f"{sys.executable} -m bnexp run scenario=momentum {' '.join(TINY)} paths.results_dir={results}"
    started = f"ls {results}/runs/momentum/.tmp-*/log.txt >/dev/null 2>&1"
    cmd = (f"({env} {run} & until {started}; do sleep 0.1; done; "
           f"dd if=/dev/zero of={results}/filler bs=4k count=1000 2>/dev/null; wait %1)")
    proc = _in_small_tmpfs(cmd, results)
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr and proc.stderr.count("\n") == 1, proc.stderr
    assert "the disk is full; this run was not kept" in proc.stderr
    assert "run the same command again" in proc.stderr


def test_full_disk_before_a_run_leaves_no_write_test_files(tmp_path, cache_dir):
    """0 bytes free from the start: `run` and `sweep` stop at their write test with one line, exit 2, and leave
    nothing in the results folder (no empty `.write-test-*` file, no runs/ folder they created)."""
    if not _tmpfs_works(tmp_path):
        pytest.skip("no unprivileged mount namespaces here")
    results = tmp_path / "full"
    results.mkdir()
    env = f"BNEXP_CACHE={cache_dir} PYTHONPATH={ROOT}"
    cmd = (f"dd if=/dev/zero of={results}/filler bs=4k count=1000 2>/dev/null; cd {ROOT}; "
           f"{env} {sys.executable} -m bnexp run scenario=momentum paths.results_dir={results}; echo rc=$?; "
           f"{env} {sys.executable} -m bnexp sweep sweep=quick scenarios=momentum paths.results_dir={results}; "
           f"echo rc=$?; echo left: $(ls -A {results})")
    proc = _in_small_tmpfs(cmd, results)
    assert proc.stdout.splitlines()[-3:] == ["rc=2", "rc=2", "left: filler"], (proc.stdout, proc.stderr)
    line = (f"bnexp: error: results folder {results} is not writable (No space left on device); choose another "
            f"with paths.results_dir=... or fix its permissions")
    assert proc.stderr.splitlines() == [line, line], proc.stderr


def test_full_disk_while_reporting_leaves_no_half_written_file(tmp_path, cache_dir):
    """`report` on a full disk: one line, exit 1, and every table, summary and report.md is whole or absent
    (written through bnexp.atomic), never a 0-byte or truncated file, no temp file left."""
    if not _tmpfs_works(tmp_path):
        pytest.skip("no unprivileged mount namespaces here")
    results = tmp_path / "full"
    results.mkdir()
    make = ("from bnexp.store import Store\ns = Store('RESULTS')\nfor i in range(3):\n"
            "    r = {'run_id': f'r{i}', 'scenario': 'momentum', 'status': 'ok', 'seed': i, 'semantics': 'keras3',"
            " 'acc_test_moving': 0.5, 'acc_test_batchstats': 0.6, 'gap_test': 0.1, 'bn.momentum': 0.9}\n"
            "    s.commit(s.begin('momentum', r['run_id']), 'momentum', r['run_id'], r)\n"
            ).replace("RESULTS", str(results))
    (tmp_path / "make.py").write_text(make)
    env = f"BNEXP_CACHE={cache_dir} PYTHONPATH={ROOT}"
    cmd = (f"cd {ROOT} && {env} {sys.executable} {tmp_path / 'make.py'} && "
           f"dd if=/dev/zero of={results}/filler bs=1k count=1000 2>/dev/null; "
           f"{env} {sys.executable} -m bnexp report sweep=all paths.results_dir={results}; echo rc=$?; "
           f"echo empty: $(find {results} -type f -empty); "
           f"echo tmp: $(find {results} -name '*.tmp' -o -name '.*.tmp'); "
           f"test -e {results}/report.md && echo report.md: $(tail -c 40 {results}/report.md | tr -d '\\n')")
    proc = _in_small_tmpfs(cmd, results)
    out = proc.stdout.splitlines()
    assert "rc=1" in out and "empty:" in out and "tmp:" in out, (proc.stdout, proc.stderr)  # none of either
    assert not any(ln.startswith("report.md:") for ln in out), proc.stdout  # report.md is written last: absent
    assert "Traceback" not in proc.stderr and proc.stderr.count("\n") == 1, proc.stderr
    assert proc.stderr.startswith(f"bnexp: error: cannot write {results}/") and "the disk is full" in proc.stderr


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
    path = [ln for ln in proc.stdout.splitlines() if ln.startswith("bnexp: ")][-1].rsplit(": ", 1)[1]
    assert json.loads(open(tmp_path / path if not path.startswith("/") else path).read())["status"] == "ok"
    assert (tmp_path / "out" / "runs" / "momentum").is_dir()
    assert ROOT != tmp_path


@pytest.mark.parametrize("batch,moving,precise,says", [
    (0.80, 0.80, 0.80, "costs nothing here"),
    (0.80, 0.50, 0.79, "loses 30.0 points that recomputed population statistics recover"),
    (0.80, 0.50, 0.60, "loses 30.0 points against batch statistics and population statistics do not close it"),
    # frozen_base's case: precise BN (0.258) below moving (0.328); it used to say "loses -6.6 points ... recover"
    (0.262, 0.328, 0.258, "scores 6.6 points above batch statistics and 7.0 points above population statistics"),
    (0.262, 0.328, None, "scores 6.6 points above batch statistics: here"),
])
def test_the_closing_sentence_is_right_for_either_sign_of_the_gap(batch, moving, precise, says):
    from bnexp.cli import key_numbers

    rec = {"acc_test_batchstats": batch, "acc_test_moving": moving, "acc_test_precise": precise}
    last = key_numbers(rec)[-1]
    assert says in last and "-" not in last.split(":")[0], last  # never a negative number of points


def test_run_m_ends_with_a_table_of_its_runs_key_numbers(tmp_path):
    from bnexp.cli import runs_table
    from bnexp.store import Store

    store = Store(tmp_path)
    for rid, status, extra in (("aaa", "ok", {"acc_test_batchstats": 0.8, "acc_test_moving": 0.5, "gap_test": 0.3,
                                               "acc_test_precise": 0.79}), ("bbb", "failed", {"error": "x"})):
        store.commit(store.begin("momentum", rid), "momentum", rid,
                     {"run_id": rid, "scenario": "momentum", "status": status, **extra})
    lines = runs_table([(store, "momentum", "aaa"), (store, "momentum", "bbb"), (store, "momentum", "ccc")])
    assert lines[0].startswith("bnexp: runs (test accuracy with batch, moving and population statistics")
    assert lines[2].split() == ["momentum", "aaa", "ok", "0.800", "0.500", "0.790", "+0.300"]
    assert lines[3].split() == ["momentum", "bbb", "failed", "-", "-", "-", "-"]
    assert lines[4].split() == ["momentum", "ccc", "missing", "-", "-", "-", "-"]
