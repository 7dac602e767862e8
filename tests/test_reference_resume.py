"""The committed reference as a build artifact: in a clean clone, a reference sweep interrupted with kill -9
resumes with the same command, labels every record clean (what the sweep writes under results/ is no code
change), and a fresh clone that has only the committed records runs nothing again."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import ROOT, TINY, bnexp_env, records

TINY_REFERENCE = """\
name: reference
requires_clean_tree: true
results_dir: results
seeds: [0, 1]
grids:
  momentum:
    train.batches: 4
"""


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True, text=True).stdout


def _clean_clone(tmp_path: Path) -> Path:
    """The tracked files of this checkout as they are now, committed in a new repository, with a 2-run
    reference grid (so the test checks the working tree's code, committed or not)."""
    repo = tmp_path / "clone"
    for name in _git(ROOT, "ls-files", "-z").split("\0"):
        if name and (ROOT / name).is_file():
            (repo / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, repo / name)
    (repo / "configs" / "sweep" / "reference.yaml").write_text(TINY_REFERENCE)
    _git(repo, "init", "-q")
    _git(repo, "add", "-A")
    _git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "clone")
    return repo


def _sweep(repo: Path, cache_dir: Path, **kw) -> subprocess.Popen:
    env = {**bnexp_env(cache_dir), "PYTHONPATH": str(repo)}
    return subprocess.Popen([sys.executable, "-m", "bnexp", "sweep", "sweep=reference", *TINY], cwd=repo, env=env,
                            text=True, **kw)


@pytest.mark.slow  # ~1 min: three sweeps of two tiny runs
def test_a_killed_reference_sweep_resumes_clean_in_a_clone_and_a_fresh_clone_reruns_nothing(tmp_path, cache_dir):
    repo = _clean_clone(tmp_path)
    results = repo / "results"
    proc = _sweep(repo, cache_dir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 240
    while not records(results, "momentum") and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert len(records(results, "momentum")) == 1
    assert _git(repo, "status", "--porcelain", "--untracked-files=no").strip()  # the sweep wrote its manifest

    again = _sweep(repo, cache_dir, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = again.communicate(timeout=300)
    assert again.returncode == 0, err
    assert "1 of 2 runs current; running 1 in scenarios momentum" in out
    head = _git(repo, "rev-parse", "--short=12", "HEAD").strip()
    recs = records(results, "momentum")
    assert len(recs) == 2 and all(r["git_commit"] == head and r["git_clean"] is True for r in recs)
    assert "uncommitted changes" not in (results / "report.md").read_text()

    # what a fresh clone of the committed reference has: the records file and the manifest, no runs/
    shutil.rmtree(results / "runs")
    fresh = _sweep(repo, cache_dir, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = fresh.communicate(timeout=300)
    assert fresh.returncode == 0, err
    assert "2 of 2 runs current; running 0 in scenarios none" in out
    assert not (results / "runs" / "momentum").exists() or not any((results / "runs" / "momentum").iterdir())
    assert json.loads((results / "sweeps" / "reference.json").read_text())["planned"]["momentum"]
