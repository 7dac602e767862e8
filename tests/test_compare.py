"""`bnexp compare A B`: runs matched by run id, every field but timings and provenance compared exactly."""

from __future__ import annotations

import math
import re

import pytest

from bnexp import cli
from bnexp.compare import compared
from bnexp.store import write_records


def _record(run_id: str, **fields) -> dict:
    return {"scenario": "momentum", "run_id": run_id, "seed": 0, "acc_test_moving": 0.5, "stat_err_max": math.nan,
            "note": None, "wall_s": 3.0, "steps_per_s": 90.0, "cpu": "AMD EPYC [avx2]", "git_commit": "abc",
            "fingerprint": "f00", "peak_rss_mb": 900.0, **fields}


def _compare(capsys, a, b) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as ended:
        cli.main(["compare", str(a), str(b)])
    out, err = capsys.readouterr()
    return ended.value.code, out, err


def test_runs_that_differ_only_in_timings_and_provenance_are_equal(tmp_path, capsys):
    write_records([_record("r1"), _record("r2")], tmp_path / "a.jsonl.gz")
    (tmp_path / "b").mkdir()  # a results folder: its records.jsonl.gz
    write_records([_record("r1", wall_s=9.0, steps_per_s=1.0, cpu="Intel", git_commit="def", fingerprint="bee",
                           peak_rss_mb=1.0, stat_err_max=None, note=math.nan), _record("r3")],
                  tmp_path / "b" / "records.jsonl.gz")
    code, out, _ = _compare(capsys, tmp_path / "a.jsonl.gz", tmp_path / "b")
    assert code == 0
    assert "1 runs in both, 1 only in A, 1 only in B" in out
    assert "every one of the 6 compared fields is equal in all 1 runs in both" in out


def test_a_differing_number_is_named_with_its_run_and_both_values(tmp_path, capsys):
    write_records([_record("r1"), _record("r2")], tmp_path / "a.jsonl.gz")
    write_records([_record("r1", acc_test_moving=0.4985), _record("r2", seed=1)], tmp_path / "b.jsonl.gz")
    code, out, _ = _compare(capsys, tmp_path / "a.jsonl.gz", tmp_path / "b.jsonl.gz")
    assert code == 1
    assert "2 of 6 compared fields differ, in 2 of 2 runs:" in out
    assert re.search(r"acc_test_moving +1 runs; e\.g\. momentum r1: 0\.5 \(A\) vs 0\.4985 \(B\)", out)
    assert re.search(r"seed +1 runs; e\.g\. momentum r2: 0 \(A\) vs 1 \(B\)", out)


@pytest.mark.parametrize("what", ["missing", "not_gzip", "folder_without_records"])
def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys, what):
    good = tmp_path / "good.jsonl.gz"
    write_records([_record("r1")], good)
    bad = {"missing": tmp_path / "nothere", "not_gzip": tmp_path / "bad.jsonl.gz",
           "folder_without_records": tmp_path}[what]
    if what == "not_gzip":
        bad.write_text("not gzip\n")
    code, out, err = _compare(capsys, bad, good)
    assert code == 2 and out == ""
    assert len(err.strip().splitlines()) == 1 and str(bad) in err


def test_the_machine_and_the_code_version_are_not_compared():
    kept = compared(_record("r1", onednn="default", tensorflow="2.21.0", keras="3.15.1", device="cpu"))
    assert set(kept) == {"scenario", "run_id", "seed", "acc_test_moving", "stat_err_max", "note"}
