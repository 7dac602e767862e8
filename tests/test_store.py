"""The run store: ids, atomic records, skip, corrupt records, stale temp folders."""

import json
import os

import pytest

from bnexp.errors import UserError
from bnexp.store import Store, flatten, identity, run_id

CFG = {"scenario": {"name": "momentum"}, "seed": 1, "bn": {"momentum": 0.9},
       "train": {"batches": 10, "timeout_s": 60}, "paths": {"results_dir": "a"}, "sweep": {"name": "quick"}}


def test_run_id_depends_on_science_not_on_paths_or_timeouts():
    other_paths = {**CFG, "paths": {"results_dir": "b"}, "train": {"batches": 10, "timeout_s": 5}}
    assert run_id(CFG) == run_id(other_paths)
    assert run_id(CFG) != run_id({**CFG, "seed": 2})
    assert run_id(CFG) != run_id({**CFG, "bn": {"momentum": 0.99}})
    assert "paths" not in identity(CFG) and "timeout_s" not in identity(CFG)["train"]


def test_flatten_uses_dotted_keys():
    assert flatten({"bn": {"momentum": 0.9}, "data": {"classes": [1, 2]}}) == {"bn.momentum": 0.9,
                                                                               "data.classes": "[1, 2]"}


def test_commit_is_atomic_and_replaces_a_failed_attempt(tmp_path):
    store = Store(tmp_path)
    tmp = store.begin("momentum", "abc")
    (tmp / "history.csv").write_text("step\n1\n")
    assert store.get("momentum", "abc") is None  # nothing visible before commit
    final = store.commit(tmp, "momentum", "abc", {"status": "failed", "error": "x"})
    assert store.get("momentum", "abc")["status"] == "failed"
    assert (final / "history.csv").exists()
    tmp2 = store.begin("momentum", "abc")
    store.commit(tmp2, "momentum", "abc", {"status": "ok"})
    assert store.get("momentum", "abc") == {"status": "ok"}
    assert [p.name for p in (tmp_path / "runs" / "momentum").iterdir()] == ["abc"]


def test_corrupt_record_is_reported_and_treated_as_missing(tmp_path, capsys):
    store = Store(tmp_path)
    store.commit(store.begin("m", "good"), "m", "good", {"status": "ok", "seed": 0})
    bad = tmp_path / "runs" / "m" / "bad"
    bad.mkdir()
    (bad / "metrics.json").write_text('{"status": "o')
    assert store.get("m", "bad") is None
    assert [r["status"] for r in store.records()] == ["ok"]
    assert "corrupt record" in capsys.readouterr().err


def test_stale_temp_folders_of_dead_processes_are_removed(tmp_path):
    store = Store(tmp_path)
    parent = tmp_path / "runs" / "m"
    parent.mkdir(parents=True)
    dead = parent / ".tmp-abc-999999999-ffffff"
    dead.mkdir()
    alive = parent / f".tmp-def-{os.getpid()}-ffffff"
    alive.mkdir()
    store.begin("m", "xyz")
    assert not dead.exists() and alive.exists()


def test_unwritable_results_folder_is_a_clear_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(UserError, match="not writable.*paths.results_dir"):
        Store(blocker / "results").check_writable()


def test_records_round_trip_through_pandas(tmp_path):
    store = Store(tmp_path)
    for i in range(3):
        store.commit(store.begin("m", f"r{i}"), "m", f"r{i}", {"status": "ok", "seed": i, "acc": i / 10})
    df = store.table()
    assert sorted(df["seed"]) == [0, 1, 2]
    assert json.loads((tmp_path / "runs" / "m" / "r1" / "metrics.json").read_text())["acc"] == 0.1
