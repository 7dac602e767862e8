"""Child processes that run the runs: a fresh one per run, or warm workers that stay alive across runs.

TensorFlow takes seconds to start, so by default (`worker.warm=true`) each launcher process (a Hydra job
process: a joblib/loky worker of a multirun, or a submitit job) keeps a pool of long-lived workers
(bnexp.toolkit.worker), one per kind of semantics and device, and hands each run to the right one. A run
in a warm worker starts from the same clean state as in a fresh process (bnexp.toolkit.child.reset), so
its numbers are the same bit for bit (tests/test_workers.py). A worker is recycled after worker.max_runs
runs and after any run that is not ok, a timeout or a crash. `worker.warm=false` starts a fresh
`python -m bnexp.toolkit.child RUN_DIR` for every run.

Children are started by bnexp.launcher: each gets SIGKILL when its launcher dies (PR_SET_PDEATHSIG), so a
`kill -9` of a sweep leaves no orphan; a warm worker also exits at the end of its stdin. Imports no TensorFlow.
"""

from __future__ import annotations

import atexit
import select
import subprocess
import time
from pathlib import Path

from bnexp import backends, launcher
from bnexp.launcher import child_env

# Semantics that can share a worker: the same TF_USE_LEGACY_KERAS and eager mode (keras2_v1 differs from
# tf_keras only in the BN class a model is built with). tf1 switches eager execution off for good.
KINDS = {"keras3": "keras3", "tf_keras": "tf_keras", "keras2_v1": "tf_keras", "tf1": "tf1"}


def env_for(cfg: dict) -> dict[str, str]:
    """The child environment of a resolved run config (semantics, device, Keras backend and release)."""
    return child_env(cfg["semantics"], cfg["device"], backend=backends.backend_of(cfg),
                     keras_path=backends.child_env_extra(cfg).get("PYTHONPATH"))


def run_fresh(env: dict, run_dir: Path, timeout: float) -> int | None:
    """`python -m bnexp.toolkit.child RUN_DIR` with its output in log.txt; its exit code, None on timeout."""
    with open(run_dir / "log.txt", "w") as log:
        return launcher.run("bnexp.toolkit.child", [str(run_dir)], env, timeout, log)


class Worker:
    """One warm worker process and the number of runs it has done."""

    def __init__(self, env: dict):
        self.proc = launcher.start("bnexp.toolkit.worker", [], env, stdin=subprocess.PIPE,
                                   stdout=subprocess.PIPE, text=True, bufsize=1)
        self.runs = 0

    def alive(self) -> bool:
        return self.proc.poll() is None

    def run(self, run_dir: Path, timeout: float) -> str | None:
        """The run's status as the worker answers it; None on a timeout or if the worker died (then it is
        killed and must not be used again)."""
        self.runs += 1
        try:
            self.proc.stdin.write(f"{run_dir}\n")
            self.proc.stdin.flush()
            ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
            answer = self.proc.stdout.readline().strip() if ready else ""
        except BrokenPipeError:
            answer = ""
        except BaseException:  # Ctrl-C: take the worker down too, then let the interrupt through
            self.close()
            raise
        if not answer:
            self.close()
            return None
        return answer

    def close(self) -> None:
        launcher.kill(self.proc)


def worker_key(cfg: dict) -> tuple:
    """The kind of warm worker a resolved run config needs: semantics kind, device, Keras backend, release."""
    return KINDS[cfg["semantics"]], cfg["device"], backends.backend_of(cfg), cfg.get("keras_version") or ""


_pool: dict[tuple, Worker] = {}  # least recently used first


def run_warm(cfg: dict, run_dir: Path, timeout: float, max_runs: int, pool_size: int = 2) -> int | None:
    """Run in this process' warm worker for the run's kind of semantics, device, Keras backend and release
    (started if there is none; the least recently used worker is stopped when that would make more than
    `pool_size`: each holds a framework's memory). Returns 0 if the worker answered, None on a timeout,
    else the code the worker died with."""
    key = worker_key(cfg)
    worker = _pool.pop(key, None)
    if worker is None or not worker.alive():
        while len(_pool) >= pool_size:
            _pool.pop(next(iter(_pool))).close()
        worker = Worker(env_for(cfg))
    _pool[key] = worker
    (run_dir / "log.txt").touch()  # the worker appends the run's output here
    deadline = time.monotonic() + timeout
    status = worker.run(run_dir, timeout)
    code = 0 if status is not None else (None if time.monotonic() >= deadline else worker.proc.returncode)
    if status != "ok" or worker.runs >= max_runs:  # recycle: a failed run may have left anything behind
        worker.close()
        del _pool[key]
    return code


def run(cfg: dict, run_dir: Path) -> int | None:
    """Run the resolved config whose folder is `run_dir` in a child process, as `worker` says: the
    child's exit code (0: result.json written, if the run got that far), None on a timeout."""
    opts = cfg.get("worker") or {}
    timeout = float(cfg["train"]["timeout_s"])
    if not opts.get("warm", True):
        return run_fresh(env_for(cfg), run_dir, timeout)
    return run_warm(cfg, run_dir, timeout, int(opts.get("max_runs", 50)), int(opts.get("pool_size", 2)))


@atexit.register
def close_all() -> None:
    """Stop every warm worker of this process (they would also exit at the end of their stdin)."""
    while _pool:
        _pool.popitem()[1].close()
