"""Parent side of one run: skip if done, start the child process for the run's semantics, enforce the
timeout, and commit the record (ok, failed or diverged; never dropped). Imports no TensorFlow."""

from __future__ import annotations

import ctypes
import json
import os
import signal
import subprocess
import sys
import time
from datetime import datetime, timezone
from functools import lru_cache
from pathlib import Path

import yaml

from bnexp import PACKAGE_DIR, backends
from bnexp.names import LEGACY
from bnexp.store import Store, flatten, identity, run_id

LOG_TAIL = 1500  # characters of the child's output kept in a failed record's error


@lru_cache(maxsize=1)
def git_commit() -> str:
    """The commit of the bnexp checkout (with +dirty), or 'unknown' outside git."""
    def git(*args):
        return subprocess.run(["git", *args], cwd=PACKAGE_DIR, capture_output=True, text=True, timeout=10)

    try:
        head = git("rev-parse", "--short=12", "HEAD")
        if head.returncode != 0:
            return "unknown"
        dirty = git("status", "--porcelain", "--untracked-files=no").stdout.strip()
        return head.stdout.strip() + ("+dirty" if dirty else "")
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"


def child_env(semantics: str, device: str, base: dict[str, str] | None = None,
              backend: str = "tensorflow") -> dict[str, str]:
    """Environment for a child process that will run `semantics` (on Keras 3's `backend`) on `device`."""
    env = dict(os.environ if base is None else base)
    env.pop("TF_USE_LEGACY_KERAS", None)
    env.pop("KERAS_BACKEND", None)
    if semantics in LEGACY:
        env["TF_USE_LEGACY_KERAS"] = "1"
    if semantics == "keras3":
        env["KERAS_BACKEND"] = backend  # read once, when Keras is first imported
    if device == "cpu":
        env["CUDA_VISIBLE_DEVICES"] = "-1"
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    return env


def _die_with_parent():
    """In the child: get SIGKILL when the parent dies, so a killed sweep leaves no orphan training."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def execute(cfg: dict, store: Store, force: bool = False) -> tuple[dict, Path]:
    """Run one resolved config (plain dict) unless an `ok` record exists; return (record, its folder)."""
    scenario = cfg["scenario"]["name"]
    rid = run_id(cfg)
    done = store.get(scenario, rid)
    if done is not None and done.get("status") == "ok" and not force:
        return done, store.path(scenario, rid)
    tmp = store.begin(scenario, rid)
    (tmp / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    started = datetime.now(timezone.utc).isoformat(timespec="seconds")
    t0 = time.perf_counter()
    timeout = float(cfg["train"]["timeout_s"])
    env = child_env(cfg["semantics"], cfg["device"], backend=backends.backend_of(cfg))
    release = backends.child_env_extra(cfg).get("PYTHONPATH")  # a pinned Keras release goes first on the path
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [release, str(PACKAGE_DIR.parent), env.get("PYTHONPATH")]))
    with open(tmp / "log.txt", "w") as log:
        proc = subprocess.Popen([sys.executable, "-m", "bnexp.toolkit.child", str(tmp)], env=env, stdout=log,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                preexec_fn=_die_with_parent, start_new_session=True)
        try:
            code = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            code = None
        except BaseException:  # Ctrl-C: take the child down too, then let the interrupt through
            os.killpg(proc.pid, signal.SIGKILL)
            raise
    wall = time.perf_counter() - t0
    result = _read_result(tmp / "result.json")
    if code is None:
        result.update(status="failed", error=f"timeout: no result after train.timeout_s={timeout:g} s")
    elif not result:
        result = {"status": "failed", "error": f"child process exited with code {code} without a result:\n"
                                               + (tmp / "log.txt").read_text()[-LOG_TAIL:]}
    (tmp / "result.json").unlink(missing_ok=True)
    factors = {k: v for k, v in flatten(identity(cfg)).items() if k != "scenario.description"}
    record = {
        **factors,
        "run_id": rid,
        "scenario": scenario,
        "claims": ",".join(cfg["scenario"].get("claims", [])),
        "seed": cfg["seed"],
        "semantics": cfg["semantics"],
        "dataset": cfg["data"]["name"],
        "status": result.get("status", "failed"),
        "error": result.get("error"),
        **result.get("metrics", {}),
        "wall_s": wall,
        "child_s": result.get("child_s"),
        "peak_rss_mb": result.get("peak_rss_mb"),
        "device": result.get("device"),
        "tensorflow": result.get("versions", {}).get("tensorflow"),
        "keras": result.get("versions", {}).get("keras"),
        "keras_backend": result.get("versions", {}).get("keras_backend"),
        "git_commit": git_commit(),
        "started_at": started,
    }
    return record, store.commit(tmp, scenario, rid, record)


def _read_result(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
