"""Shared test helpers: run the real CLI in a subprocess against a temporary results folder."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# Small, fast settings every end-to-end test starts from (real Fashion-MNIST, few samples and steps).
TINY = ["data.train_size=512", "data.test_size=256", "train.batches=4", "train.batch_size=32",
        "probe.precise_batches=4", "probe.precise_batch_size=32"]


@pytest.fixture(scope="session")
def fw():
    """Keras 3 activated in this test process (one interpreter holds one flavour: the other flavours are
    tested in subprocesses), seeded."""
    from bnexp.toolkit.framework import activate

    f = activate("keras3")
    f.set_seed(0)
    return f


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory) -> Path:
    """One data cache for the whole session (the first load decodes the IDX files once)."""
    return tmp_path_factory.mktemp("cache")


def bnexp_env(cache_dir: Path, **extra) -> dict:
    env = dict(os.environ)
    env.update(BNEXP_CACHE=str(cache_dir), BNEXP_JOBS="1", PYTHONPATH=str(ROOT), **extra)
    env.pop("TF_USE_LEGACY_KERAS", None)
    return env


def bnexp(args: list[str], results: Path, cache_dir: Path, timeout: float = 300, check: bool = True,
          **env) -> subprocess.CompletedProcess:
    """`python -m bnexp ARGS paths.results_dir=RESULTS` (for run/sweep) in a fresh process."""
    extra = [f"paths.results_dir={results}"] if args and args[0] in ("run", "sweep") else []
    proc = subprocess.run([sys.executable, "-m", "bnexp", *args, *extra], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout, env=bnexp_env(cache_dir, **env))
    if check and proc.returncode != 0:
        raise AssertionError(f"bnexp {' '.join(args)} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
    return proc


def records(results: Path, scenario: str = "*") -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(results.glob(f"runs/{scenario}/*/metrics.json"))]


@pytest.fixture
def run_cli(tmp_path, cache_dir):
    """run_cli(*overrides) -> the single record a `python -m bnexp run` wrote (asserting it exited 0)."""
    def _run(*overrides, tiny: bool = True, results: Path | None = None):
        res = results or tmp_path / "results"
        proc = bnexp(["run", *(TINY if tiny else []), *overrides], res, cache_dir)
        line = [ln for ln in proc.stdout.splitlines() if ln.startswith("bnexp: ")][-1]
        path = Path(line.rsplit(": ", 1)[1])
        return json.loads(path.read_text())
    return _run
