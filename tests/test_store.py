"""The run store: ids, atomic records, skip, bad records (validated on read), stale temp folders, locks,
a full disk."""

import json
import os

import pytest

from bnexp.errors import UserError
from bnexp.store import Store, flatten, identity, os_error_line, run_id


def rec(rid: str, status: str = "ok", **extra) -> dict:
    return {"run_id": rid, "scenario": "m", "status": status, **extra}

CFG = {"scenario": {"name": "momentum"}, "seed": 1, "bn": {"momentum": 0.9},
       "train": {"batches": 10, "timeout_s": 60}, "paths": {"results_dir": "a"}, "sweep": {"name": "quick"}}


def test_run_id_depends_on_science_not_on_paths_or_timeouts():
    other_paths = {**CFG, "paths": {"results_dir": "b"}, "train": {"batches": 10, "timeout_s": 5}}
    assert run_id(CFG) == run_id(other_paths)
    assert run_id(CFG) != run_id({**CFG, "seed": 2})
    assert run_id(CFG) != run_id({**CFG, "bn": {"momentum": 0.99}})
    assert "paths" not in identity(CFG) and "timeout_s" not in identity(CFG)["train"]
    # what a scenario accepts and where a run logs are no part of it either
    documented = {**CFG, "scenario": {"name": "momentum", "allowed": {"norm": ["bn"]}}, "log": {"tensorboard": True}}
    assert run_id(documented) == run_id(CFG)


def test_flatten_uses_dotted_keys():
    assert flatten({"bn": {"momentum": 0.9}, "data": {"classes": [1, 2]}}) == {"bn.momentum": 0.9,
                                                                               "data.classes": "[1, 2]"}


def test_commit_is_atomic_and_replaces_a_failed_attempt(tmp_path):
    store = Store(tmp_path)
    tmp = store.begin("momentum", "abc")
    (tmp / "history.csv").write_text("step\n1\n")
    assert store.get("momentum", "abc") is None  # nothing visible before commit
    final = store.commit(tmp, "momentum", "abc", {**rec("abc", "failed"), "error": "x"})
    assert store.get("momentum", "abc")["status"] == "failed"
    assert (final / "history.csv").exists()
    tmp2 = store.begin("momentum", "abc")
    store.commit(tmp2, "momentum", "abc", rec("abc"))
    assert store.get("momentum", "abc") == rec("abc")
    assert [p.name for p in (tmp_path / "runs" / "momentum").iterdir()] == ["abc"]


def test_corrupt_record_is_reported_and_treated_as_missing(tmp_path, capsys):
    store = Store(tmp_path)
    store.commit(store.begin("m", "good"), "m", "good", rec("good", seed=0))
    bad = tmp_path / "runs" / "m" / "bad"
    bad.mkdir()
    (bad / "metrics.json").write_text('{"status": "o')
    assert store.get("m", "bad") is None
    assert [r["status"] for r in store.records()] == ["ok"]
    assert "bad record" in capsys.readouterr().err


@pytest.mark.parametrize("text,problem", [
    ('[1, 2]', "not a JSON object but list"),
    ('"ok"', "not a JSON object but str"),
    ('{"run_id": "x", "scenario": "m", "status": "done"}', "status 'done' is not one of ok, failed, diverged"),
    ('{"run_id": "x", "scenario": "m", "status": "ok", "acc_test_moving": "abc"}',
     "acc_test_moving='abc' is not a number"),
    ('{"run_id": "x", "scenario": "m", "status": "ok", "m0.9.acc_test": true}', "m0.9.acc_test=True is not a number"),
    ('{"status": "ok"}', "no run_id or scenario"),
    # an ok run without its numbers: null, NaN or infinity where a finished run always has a finite accuracy
    ('{"run_id": "x", "scenario": "m", "status": "ok", "acc_test_moving": null}',
     "acc_test_moving=null in an ok record (an accuracy must be a finite number)"),
    ('{"run_id": "x", "scenario": "m", "status": "ok", "acc_test_moving": NaN}', "acc_test_moving=nan in an ok record"),
    ('{"run_id": "x", "scenario": "m", "status": "ok", "base.acc_train_precise": NaN}', "base.acc_train_precise=nan"),
    ('{"run_id": "x", "scenario": "m", "status": "ok", "acc_test_batchstats": Infinity}', "acc_test_batchstats=inf"),
    ('{"run_id": "x", "scenario": "m", "status": "ok", "acc_eval_best": -Infinity}', "acc_eval_best=-inf"),
    ('{"run_id": "x", "scenario": "m", "status": "ok", "keras_file.acc_test_restored": null}',
     "keras_file.acc_test_restored=null in an ok record"),
])
def test_invalid_records_are_reported_once_redone_and_never_counted(tmp_path, capsys, text, problem):
    store = Store(tmp_path)
    folder = tmp_path / "runs" / "m" / "x"
    folder.mkdir(parents=True)
    (folder / "metrics.json").write_text(text)
    assert store.get("m", "x") is None and store.get("m", "x") is None  # None: the runner redoes the run
    assert store.records() == [] and store.table().empty
    err = capsys.readouterr().err
    assert err.count("bad record") == 1 and problem in err  # reported once, however often it is read


def test_unfinished_numbers_are_valid_outside_an_ok_record_and_where_nan_is_measured(tmp_path):
    """A failed or diverged run has no accuracy to show; bn_benefit's best evaluation accuracy is NaN when no
    evaluation was finite (a measured outcome): these stay valid records."""
    from bnexp.store import record_problem

    assert record_problem(rec("x", "failed", acc_test_moving=None)) is None
    assert record_problem(rec("x", "diverged", acc_test_moving=float("nan"))) is None
    assert record_problem(rec("x", acc_eval_best=float("nan"), acc_test_moving=0.5)) is None


def test_an_ok_record_without_numbers_is_redone_by_the_next_sweep(tmp_path, capsys):
    from bnexp import fingerprint
    from bnexp.sweep import state

    store = Store(tmp_path)
    current = fingerprint.of("momentum")
    store.commit(store.begin("momentum", "x"), "momentum", "x",
                 {**rec("x", acc_test_moving=float("nan")), "scenario": "momentum", "fingerprint": current})
    assert state(store.get("momentum", "x")) == "missing" and not fingerprint.is_current(store.get("momentum", "x"))
    assert store.records() == []
    assert capsys.readouterr().err.count("bad record") == 1


def test_report_survives_invalid_records(tmp_path):
    from bnexp import report

    folder = tmp_path / "runs" / "momentum" / "x"
    folder.mkdir(parents=True)
    (folder / "metrics.json").write_text('[{"status": "ok"}]')
    assert "not measured (no records)" in report.build(tmp_path).read_text()


def test_lock_is_per_run_and_exclusive(tmp_path):
    from filelock import Timeout

    a, b = Store(tmp_path), Store(tmp_path)
    with a.lock("m", "r1"):
        with pytest.raises(Timeout):
            b.lock("m", "r1").acquire(timeout=0.1)
        with b.lock("m", "r2"):  # another run is not blocked
            pass


def test_full_disk_at_commit_leaves_no_half_run(tmp_path, monkeypatch):
    import errno

    from bnexp import store as store_mod

    def full(path, text):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(store_mod, "write_text", full)
    store = Store(tmp_path)
    tmp = store.begin("m", "r")
    with pytest.raises(OSError) as e:
        store.commit(tmp, "m", "r", rec("r"))
    assert not tmp.exists() and store.get("m", "r") is None
    assert os_error_line(e.value) == f"cannot write {tmp / 'metrics.json'}: the disk is full"


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
        store.commit(store.begin("m", f"r{i}"), "m", f"r{i}", rec(f"r{i}", seed=i, acc=i / 10))
    df = store.table()
    assert sorted(df["seed"]) == [0, 1, 2]
    assert json.loads((tmp_path / "runs" / "m" / "r1" / "metrics.json").read_text())["acc"] == 0.1


def test_a_run_that_cannot_write_its_files_leaves_no_temp_folder(tmp_path, monkeypatch):
    """A full disk while the run writes config.yaml (a sweep with 60 KB free): no `.tmp-*` folder with a
    truncated file is left for a reader; the error goes on to the one-line report."""
    import errno

    from bnexp import runner

    def full(cfg, store, scenario, rid, tmp):
        (tmp / "config.yaml").write_text("seed: ")  # truncated, then the disk is full
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp / "config.yaml"))

    monkeypatch.setattr(runner, "_execute", full)
    cfg = {**CFG, "scenario": {"name": "m"}}
    with pytest.raises(OSError):
        runner.execute(cfg, Store(tmp_path))
    assert list((tmp_path / "runs" / "m").iterdir()) == []
