"""The run store: one folder per run, written atomically, read back as a table.

    <results_dir>/runs/<scenario>/<run_id>/metrics.json   the record (last thing written)
                                           config.yaml    the resolved config
                                           history.csv    training log, if any
                                           log.txt        the child process' output
    <results_dir>/records.jsonl.gz                        the records a report used (committed for results/)

A run is built in a sibling temp folder and renamed into place, so a reader sees a whole record or
none, and a killed run leaves only a temp folder that the next start removes. The run id is a hash of
the resolved config minus what cannot change the numbers (paths, launcher, timeouts); the record's
`fingerprint` (bnexp.fingerprint) says which code computed it. A record in records.jsonl.gz counts like one
in runs/ (runs/ wins for the same run), so a fresh clone of the committed reference has every run it holds.
"""

from __future__ import annotations

import errno
import hashlib
import json
import math
import os
import re
import shutil
import sys
import uuid
from pathlib import Path

from filelock import FileLock

from bnexp.atomic import write_text
from bnexp.errors import UserError

# Config keys that do not change a run's numbers, so they are not part of its identity.
# What a run's identity leaves out: where it writes, how it is launched and logged, and how the report
# judges and draws a scenario (claim texts, rules, figures, allowed choices): none of these changes the run.
NOT_IDENTITY = ("paths", "hydra", "sweep", "force", "verbose", "log", "train.timeout_s", "worker",
                "scenario.claims", "scenario.description", "scenario.claim_text", "scenario.verdicts",
                "scenario.report", "scenario.figures", "scenario.allowed")
RECORD = "metrics.json"
RECORDS_FILE = "records.jsonl.gz"  # the report's records, one JSON object per line: it rebuilds without training
STATUSES = ("ok", "failed", "diverged")
# The accuracy decomposition every scenario measures (bnexp.toolkit.protocol.decomposition), under any prefix:
# counted from predictions, always a finite number in a finished run.
DECOMPOSITION = re.compile(r"(^|\.)acc_(train|test)_(batchstats|moving|precise)$")


def record_problem(rec) -> str | None:
    """Why `rec` (parsed JSON) is not a usable record, or None: a JSON object with a run id, a known status
    and numbers in every accuracy field; an ok run has no null or infinite accuracy, and finite numbers in
    its accuracy decomposition (null, NaN or infinity there: the run did not finish as recorded)."""
    if not isinstance(rec, dict):
        return f"not a JSON object but {type(rec).__name__}"
    if not isinstance(rec.get("run_id"), str) or not isinstance(rec.get("scenario"), str):
        return "no run_id or scenario"
    if rec.get("status") not in STATUSES:
        return f"status {rec.get('status')!r} is not one of {', '.join(STATUSES)}"
    for key, value in rec.items():
        metric = key.rsplit(".", 1)[-1]
        if metric.startswith("acc_") and value is not None and (
                isinstance(value, bool) or not isinstance(value, (int, float))):
            return f"{key}={value!r} is not a number"
        if metric.startswith("acc_") and rec["status"] == "ok" and (
                value is None or math.isinf(value) or (DECOMPOSITION.search(key) and math.isnan(value))):
            return f"{key}={'null' if value is None else value} in an ok record (an accuracy must be a finite number)"
    return None


def os_error_line(e: OSError) -> str:
    """One line for a failed write or read: which file, and what the system said."""
    what = {errno.ENOSPC: "the disk is full", errno.EDQUOT: "the disk quota is exceeded",
            errno.EROFS: "the folder is read-only", errno.EACCES: "permission denied"}.get(e.errno)
    where = e.filename or "a file"
    return f"cannot write {where}: {what}" if what else f"{where}: {e.strerror or e}"

# Keys added after runs were stored, left out of the identity at their default so those runs keep their ids.
DEFAULTS_LEFT_OUT = {"backend": "tensorflow", "keras_version": None}


def identity(cfg: dict) -> dict:
    """The part of a resolved config (plain dict) that defines a run."""
    out = json.loads(json.dumps(cfg, default=str))
    for key, default in DEFAULTS_LEFT_OUT.items():
        if key in out and out[key] == default:
            del out[key]
    for key in NOT_IDENTITY:
        node, *rest = key.split(".")
        if not rest:
            out.pop(node, None)
        elif isinstance(out.get(node), dict):
            out[node].pop(rest[0], None)
    return out


def run_id(cfg: dict) -> str:
    blob = json.dumps(identity(cfg), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def flatten(d: dict, prefix: str = "") -> dict:
    """{'bn': {'momentum': 0.9}} -> {'bn.momentum': 0.9}; lists become JSON strings."""
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "."))
        else:
            out[key] = json.dumps(v) if isinstance(v, (list, tuple)) else v
    return out


def write_test(folder: Path) -> None:
    """Create `folder` (and its parents) if needed and write a probe file into it through the atomic path;
    raise OSError if that fails. Leaves no probe and, on failure, no folder it created."""
    folder = Path(folder).expanduser()
    created = [p for p in (folder, *folder.parents) if not p.exists()]
    probe = folder / f".write-test-{uuid.uuid4().hex}"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        write_text(probe, "ok")
    except OSError:
        probe.unlink(missing_ok=True)
        for p in created:  # innermost first; only what this test created, and only if still empty
            try:
                p.rmdir()
            except OSError:
                break
        raise
    probe.unlink(missing_ok=True)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True



class Store:
    def __init__(self, results_dir: str | os.PathLike):
        self.root = Path(results_dir)
        self.runs = self.root / "runs"
        self._reported: set[Path] = set()  # bad records already reported by this process
        self._committed: dict | None = None

    def lock(self, scenario: str, rid: str) -> FileLock:
        """Held while a run is checked, run and committed: a second sweep on this folder waits, then skips."""
        folder = self.root / ".locks"
        folder.mkdir(parents=True, exist_ok=True)
        return FileLock(folder / f"{scenario}-{rid}.lock")

    def _read(self, f: Path, then: str) -> dict | None:
        """The record in `f`, or None if it is unreadable or invalid (reported once per process)."""
        try:
            rec = json.loads(f.read_text())
            problem = record_problem(rec)
        except (OSError, ValueError) as e:
            problem = str(e)
        if problem is None:
            return rec
        if f not in self._reported:
            self._reported.add(f)
            print(f"bnexp: bad record {f} ({problem}); {then}", file=sys.stderr)
        return None

    def check_writable(self) -> None:
        """Fail fast, before any training, if records could not be written; leave nothing behind either way."""
        try:
            write_test(self.runs)
        except OSError as e:
            raise UserError(f"results folder {self.root} is not writable ({e.strerror}); choose another with "
                            f"paths.results_dir=... or fix its permissions") from None

    def path(self, scenario: str, rid: str) -> Path:
        return self.runs / scenario / rid

    def get(self, scenario: str, rid: str) -> dict | None:
        """The stored record (runs/, else records.jsonl.gz), or None if there is none or it is unreadable (then
        it is reported)."""
        f = self.path(scenario, rid) / RECORD
        if not f.exists():
            return self.committed().get((scenario, rid))
        return self._read(f, "the run will be redone")

    def where(self, scenario: str, rid: str) -> Path:
        """The file that holds a run's record: its metrics.json, or the records file it was committed in."""
        f = self.path(scenario, rid) / RECORD
        return f if f.exists() or (scenario, rid) not in self.committed() else self.root / RECORDS_FILE

    def committed(self) -> dict[tuple[str, str], dict]:
        """{(scenario, run id): record} of the folder's records.jsonl.gz (empty without one), read once."""
        if self._committed is None:
            self._committed = {}
            path = self.root / RECORDS_FILE
            try:
                rows = read_records(path) if path.exists() else []
            except (OSError, ValueError, EOFError) as e:
                print(f"bnexp: unreadable {path} ({e}); its runs will be redone", file=sys.stderr)
                rows = []
            for rec in rows:
                if record_problem(rec) is None:
                    self._committed[(rec["scenario"], rec["run_id"])] = rec
        return self._committed

    def begin(self, scenario: str, rid: str) -> Path:
        """A fresh temp folder where a run writes its files before `commit`."""
        parent = self.runs / scenario
        parent.mkdir(parents=True, exist_ok=True)
        self.clean_stale(parent)
        tmp = parent / f".tmp-{rid}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        tmp.mkdir()
        return tmp

    def commit(self, tmp: Path, scenario: str, rid: str, record: dict) -> Path:
        """Write the record into `tmp` (fsynced), then rename the folder into place atomically."""
        try:
            write_text(tmp / RECORD, json.dumps(record, indent=1, sort_keys=True, default=str))
        except OSError:  # disk full, folder gone read-only: leave no half run behind
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        final = self.path(scenario, rid)
        if final.exists():  # a failed or corrupt earlier attempt: move it aside, then replace
            old = final.with_name(f".old-{rid}-{os.getpid()}-{uuid.uuid4().hex[:6]}")
            os.rename(final, old)
            os.rename(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(tmp, final)
        return final

    def clean_stale(self, parent: Path) -> None:
        """Remove temp folders left by runs whose process is gone (killed, machine rebooted)."""
        for p in parent.glob(".*-*-*"):
            if p.name.startswith((".tmp-", ".old-")):
                try:
                    pid = int(p.name.split("-")[2])
                except (IndexError, ValueError):
                    continue
                if not _pid_alive(pid):
                    shutil.rmtree(p, ignore_errors=True)

    def records(self, scenario: str | None = None) -> list[dict]:
        """Every valid record, of runs/ and of records.jsonl.gz (bad ones are reported and left out)."""
        pattern = f"{scenario}/*/{RECORD}" if scenario else f"*/*/{RECORD}"
        found = (self._read(f, "left out; rerun its scenario to redo it") for f in sorted(self.runs.glob(pattern)))
        mine = {(rec["scenario"], rec["run_id"]): rec for rec in found if rec is not None}
        older = {key: rec for key, rec in self.committed().items()
                 if key not in mine and scenario in (None, key[0])}
        return [rec for _, rec in sorted({**older, **mine}.items())]

    def table(self, scenario: str | None = None):
        """All records as a pandas DataFrame, one row per run."""
        import pandas as pd

        return pd.DataFrame(self.records(scenario))


def write_records(records: list[dict], path: Path) -> None:
    """Records as gzipped JSON lines sorted by run, byte-identical for the same records; complete or absent."""
    import gzip

    from bnexp.atomic import atomic_open

    rows = sorted(records, key=lambda r: (r["scenario"], r["run_id"]))
    text = "".join(json.dumps(r, sort_keys=True, default=str) + "\n" for r in rows)
    with atomic_open(path, "wb") as f, gzip.GzipFile(filename="", fileobj=f, mode="wb", mtime=0) as gz:
        gz.write(text.encode())


def read_records(path: Path) -> list[dict]:
    import gzip

    with gzip.open(path, "rt") as f:
        return [json.loads(line) for line in f if line.strip()]
