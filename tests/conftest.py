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


def run_batch(configs: list[list[str]], results: Path, cache_dir: Path, tiny: bool = True,
              timeout_per_run: float = 300, **env) -> list[dict]:
    """The record of each config (conftest.TINY, then its overrides), all run by ONE `python -m bnexp run
    --multirun` through the bnexp_grids sweeper, the way `bnexp sweep` launches its runs: one parent process
    and one warm worker per kind of semantics serve every run, instead of a fresh interpreter and framework
    import per run. Records come back in the order of `configs`, whatever their status (the test asserts it);
    the multirun may take `timeout_per_run` per config, what `bnexp` allows one run."""
    from bnexp import config_check
    from bnexp.store import run_id

    jobs = []
    for overrides in configs:
        last = {o.split("=", 1)[0]: o for o in [*(TINY if tiny else []), *overrides]}  # later values win
        [resolved] = config_check.compose([*last.values(), f"paths.results_dir={results}"])
        jobs.append({"overrides": list(last.values()), "scenario": resolved["scenario"]["name"],
                     "run_id": run_id(resolved), "results_dir": str(results)})
    jobs_file = results.with_name(results.name + ".jobs.json")
    jobs_file.parent.mkdir(parents=True, exist_ok=True)
    jobs_file.write_text(json.dumps({"jobs": jobs}))
    proc = bnexp(["run", "--multirun", "hydra/sweeper=bnexp_grids", f"hydra.sweeper.jobs_file={jobs_file}",
                  "hydra/launcher=basic"], results, cache_dir, timeout=timeout_per_run * len(jobs), check=False, **env)
    out = []
    for job in jobs:
        path = results / "runs" / job["scenario"] / job["run_id"] / "metrics.json"
        if not path.exists():
            raise AssertionError(f"no record for {job['overrides']} (exit {proc.returncode})\n{proc.stdout}\n"
                                 f"{proc.stderr}")
        out.append(json.loads(path.read_text()))
    return out


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
