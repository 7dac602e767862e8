"""Code fingerprints: which files decide a scenario's numbers, and what a change to one of them re-runs."""

from __future__ import annotations

import shutil
from pathlib import Path

from bnexp import fingerprint
from bnexp.store import Store

ROOT = Path(__file__).resolve().parents[1]
VERSIONS = {"tensorflow": "2.21.0", "keras": "3.15.1"}


def _project(tmp_path: Path) -> Path:
    """A copy of the code a fingerprint reads (bnexp/, experiments/), to change files in."""
    for folder in ("bnexp", "experiments"):
        shutil.copytree(ROOT / folder, tmp_path / folder, ignore=shutil.ignore_patterns("__pycache__"))
    return tmp_path


def test_code_files_follow_imports_from_the_experiment_and_the_child(tmp_path):
    files = {p.relative_to(fingerprint.ROOT).as_posix() for p in fingerprint.code_files("frozen_base")}
    assert {"experiments/frozen_base.py", "bnexp/toolkit/child.py", "bnexp/toolkit/worker.py",
            "bnexp/toolkit/base_cache.py", "bnexp/toolkit/training.py", "bnexp/toolkit/__init__.py",
            "experiments/__init__.py"} <= files
    assert "experiments/momentum.py" not in files
    assert not {"bnexp/report.py", "bnexp/verdicts.py", "bnexp/figures.py", "bnexp/doctor.py",
                "bnexp/toolkit/diagnose.py"} & files  # judging, drawing and the doctor decide no run's numbers


def test_a_change_re_runs_exactly_the_scenarios_whose_code_it_touches(tmp_path):
    root = _project(tmp_path)
    scenarios = sorted(p.stem for p in (root / "experiments").glob("*.py") if p.stem != "__init__")
    before = {s: fingerprint.compute(s, root, VERSIONS) for s in scenarios}
    assert before == {s: fingerprint.compute(s, root, VERSIONS) for s in scenarios}  # deterministic
    with open(root / "experiments" / "momentum.py", "a") as f:
        f.write("\n# a comment is a change too: the fingerprint hashes bytes\n")
    after = {s: fingerprint.compute(s, root, VERSIONS) for s in scenarios}
    assert [s for s in scenarios if after[s] != before[s]] == ["momentum"]
    users = [s for s in scenarios if root / "bnexp/toolkit/base_cache.py" in fingerprint.code_files(s, root)]
    assert users and len(users) < len(scenarios)
    (root / "bnexp/toolkit/base_cache.py").write_text((root / "bnexp/toolkit/base_cache.py").read_text() + "\n")
    again = {s: fingerprint.compute(s, root, VERSIONS) for s in scenarios}
    assert [s for s in scenarios if again[s] != after[s]] == users
    (root / "bnexp/report.py").write_text("")  # the report judges runs; it computes none
    assert {s: fingerprint.compute(s, root, VERSIONS) for s in scenarios} == again
    bumped = fingerprint.compute("momentum", root, {**VERSIONS, "tensorflow": "2.22.0"})
    assert bumped != again["momentum"]  # a framework upgrade makes every run stale


def test_imports_are_read_from_every_form(tmp_path):
    (tmp_path / "bnexp" / "toolkit").mkdir(parents=True)
    for name in ("bnexp/__init__.py", "bnexp/toolkit/__init__.py", "bnexp/toolkit/a.py", "bnexp/toolkit/b.py",
                 "bnexp/toolkit/c.py", "bnexp/errors.py"):
        (tmp_path / name).write_text("")
    (tmp_path / "bnexp/toolkit/a.py").write_text(
        "import numpy\nfrom . import b\nfrom ..errors import X\ndef f():\n    import bnexp.toolkit.c\n")
    closure = fingerprint.closure([tmp_path / "bnexp/toolkit/a.py"], tmp_path)
    found = {p.relative_to(tmp_path).as_posix() for p in closure}
    assert found == {"bnexp/__init__.py", "bnexp/toolkit/__init__.py", "bnexp/toolkit/a.py", "bnexp/toolkit/b.py",
                     "bnexp/toolkit/c.py", "bnexp/errors.py"}


def test_committed_records_count_as_done_and_runs_win_over_them(tmp_path):
    import pandas as pd

    from bnexp.report import write_records

    rec = {"scenario": "momentum", "run_id": "abc", "status": "ok", "fingerprint": fingerprint.of("momentum"),
           "acc_test_moving": 0.5}
    write_records(pd.DataFrame([rec, {**rec, "run_id": "def", "fingerprint": "stale"}]),
                  tmp_path / "records.jsonl.gz")
    store = Store(tmp_path)
    assert store.get("momentum", "abc") == rec and fingerprint.is_current(store.get("momentum", "abc"))
    assert not fingerprint.is_current(store.get("momentum", "def"))  # stale: a sweep redoes it
    assert store.where("momentum", "abc") == tmp_path / "records.jsonl.gz"
    newer = {**rec, "run_id": "def", "fingerprint": fingerprint.of("momentum"), "acc_test_moving": 0.7}
    store.commit(store.begin("momentum", "def"), "momentum", "def", newer)
    assert Store(tmp_path).get("momentum", "def")["acc_test_moving"] == 0.7
    assert [r["run_id"] for r in Store(tmp_path).records()] == ["abc", "def"]
