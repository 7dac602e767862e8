"""Parent side of one run: skip if done, hand it to a child process for the run's semantics (a warm worker
or a fresh process, bnexp.workers), which enforces the timeout, and commit the record (ok, failed or
diverged; never dropped). Imports no TensorFlow."""

from __future__ import annotations

import json
import shutil
import time
from datetime import datetime, timezone
from pathlib import Path

import yaml

from bnexp import fingerprint, workers
from bnexp.provenance import checkout, git_commit, onednn_setting, processor
from bnexp.store import Store, flatten, identity, run_id

LOG_TAIL = 1500  # characters of the child's output kept in a failed record's error




def execute(cfg: dict, store: Store, force: bool = False) -> tuple[dict, Path]:
    """Run one resolved config (plain dict) unless a current `ok` record exists (bnexp.fingerprint); return
    (record, its folder under runs/: absent for a record held only in the committed records.jsonl.gz)."""
    scenario = cfg["scenario"]["name"]
    rid = run_id(cfg)
    done = store.get(scenario, rid)
    if fingerprint.is_current(done) and not force:
        return done, store.path(scenario, rid)
    tmp = store.begin(scenario, rid)
    try:
        return _execute(cfg, store, scenario, rid, tmp)
    except OSError:  # disk full, folder gone read-only: leave no temp folder with a truncated file behind
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _execute(cfg: dict, store: Store, scenario: str, rid: str, tmp: Path) -> tuple[dict, Path]:
    (tmp / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    started = datetime.now(timezone.utc).isoformat(timespec="seconds")
    t0 = time.perf_counter()
    timeout = float(cfg["train"]["timeout_s"])
    code = workers.run(cfg, tmp)  # a warm worker or a fresh process (worker.warm); None: timed out
    wall = time.perf_counter() - t0
    result = _read_result(tmp / "result.json")
    if code is None:
        result.update(status="failed", error=f"timeout: no result after train.timeout_s={timeout:g} s")
    elif not result:
        result = {"status": "failed", "error": f"child process exited with code {code} without a result:\n"
                                               + (tmp / "log.txt").read_text()[-LOG_TAIL:]}
    (tmp / "result.json").unlink(missing_ok=True)
    factors = flatten(identity(cfg))
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
        "cpu": processor(),
        "onednn": onednn_setting(),
        "tensorflow": result.get("versions", {}).get("tensorflow"),
        "keras": result.get("versions", {}).get("keras"),
        "keras_backend": result.get("versions", {}).get("keras_backend"),
        "fingerprint": fingerprint.of(scenario),
        "git_commit": git_commit(),
        "git_clean": checkout()[1],
        "started_at": started,
    }
    return record, store.commit(tmp, scenario, rid, record)


def _read_result(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
