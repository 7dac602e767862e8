"""Provenance and rebuilds: records say which commit ran them and whether its tree was clean; a report says at
its top when its records mix commits, come from a dirty tree or from code that has changed since; the records a
report used are kept in one compact file from which `report` rebuilds it without training; the reference sweep
refuses a dirty tree unless told otherwise."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from bnexp import provenance, report, sweep
from bnexp.errors import UserError
from test_report import _fixture_store

ROOT = Path(__file__).resolve().parents[1]


def _without_build_time(text: str) -> str:
    return re.sub(r"^- report built .*$", "", text, flags=re.M)


def _linked_figures_exist(text: str, root: Path) -> None:
    links = re.findall(r"\]\(([^)#]+\.png)\)", text)
    assert links
    for link in links:
        assert (root / link).exists(), link


def test_a_report_rebuilds_from_its_records_file_alone(tmp_path):
    _fixture_store(tmp_path)
    first = report.build(tmp_path, sweep="reference").read_text()
    assert (tmp_path / report.RECORDS_FILE).exists()
    shutil.rmtree(tmp_path / "runs")  # what a fresh clone has: the records file, the manifest, no runs/
    shutil.rmtree(tmp_path / "figures")
    again = report.build(tmp_path, sweep="reference").read_text()
    assert _without_build_time(again) == _without_build_time(first)
    _linked_figures_exist(again, tmp_path)
    before = (tmp_path / report.RECORDS_FILE).read_bytes()
    report.build(tmp_path, sweep="reference")
    assert (tmp_path / report.RECORDS_FILE).read_bytes() == before  # same records, same bytes


def test_the_committed_reference_report_matches_its_committed_records(tmp_path):
    results = ROOT / "results"
    if not (results / report.RECORDS_FILE).exists():
        pytest.skip("no committed results/records.jsonl.gz yet: the reference sweep (make sweep) writes it")
    copy = tmp_path / "results"
    shutil.copytree(results, copy, ignore=shutil.ignore_patterns("runs", "local", ".hydra", ".locks"))
    rebuilt = report.build(copy, sweep="reference").read_text()
    assert _without_build_time(rebuilt) == _without_build_time((results / "report.md").read_text())
    _linked_figures_exist(rebuilt, results)


def test_provenance_warnings_name_mixed_dirty_and_unknown_commits(monkeypatch):
    monkeypatch.setattr(provenance, "code_differs", lambda c: None if c.startswith("zz") else c.startswith("old"))
    assert provenance.warnings(["head1", "head1"]) == []
    said = "; ".join(provenance.warnings(["head1", "head1+dirty", "old2", "zz9"]))
    assert "4 commits" in said and "uncommitted changes (head1+dirty)" in said
    assert "changed since old2" in said and "cannot compare commit(s) zz9" in said


def test_code_differs_uses_git_for_the_current_head():
    commit, _ = provenance.checkout()
    if commit == "unknown":
        pytest.skip("not a git checkout")
    assert provenance.code_differs(commit) is False
    assert provenance.code_differs("0000000000ff") is None  # a commit git does not know


def test_a_report_with_mixed_commits_says_so_at_its_top(tmp_path, monkeypatch):
    store = _fixture_store(tmp_path)
    for i, rec in enumerate(store.records()):
        rec["git_commit"] = "aaa" if i % 2 else "bbb+dirty"
        store.commit(store.begin(rec["scenario"], rec["run_id"]), rec["scenario"], rec["run_id"], rec)
    monkeypatch.setattr(provenance, "code_differs", lambda c: False)
    top = report.build(tmp_path, sweep="reference").read_text().split("## Verdicts")[0]
    assert "**Provenance: the records come from 2 commits (aaa, bbb+dirty)" in top
    assert "uncommitted changes (bbb+dirty)" in top


def test_the_reference_sweep_refuses_a_dirty_tree_unless_allowed(monkeypatch):
    monkeypatch.setattr(provenance, "checkout", lambda: ("abc", False))
    with pytest.raises(UserError, match="needs a clean tree.*allow_dirty=true"):
        sweep._check_tree({"name": "reference", "requires_clean_tree": True}, "false")
    sweep._check_tree({"name": "reference", "requires_clean_tree": True}, "true")
    sweep._check_tree({"name": "quick"}, "false")
    with pytest.raises(UserError, match="allow_dirty must be true or false"):
        sweep._check_tree({"name": "reference", "requires_clean_tree": True}, "maybe")


def test_processor_names_the_model_and_the_vector_extensions_that_change_rounding(tmp_path):
    from bnexp.provenance import processor

    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nmodel name\t: Intel(R) Xeon(R) Platinum\nflags\t\t: fpu sse4_2 avx avx2 fma "
                    "avx512f avx512_fp16 amx_tile amx_bf16 pcid\n\nprocessor\t: 1\nmodel name\t: other\n")
    assert processor.__wrapped__(str(info)) == "Intel(R) Xeon(R) Platinum [sse4_2 avx fma avx2 avx512f avx512_fp16 " \
                                               "amx_tile amx_bf16]"
    assert processor.__wrapped__(str(tmp_path / "missing"))  # no /proc: the platform's name, never an error


def test_onednn_setting_names_what_the_environment_sets():
    from bnexp.provenance import onednn_setting

    assert onednn_setting({}) == "default"
    assert onednn_setting({"TF_ENABLE_ONEDNN_OPTS": "0"}) == "TF_ENABLE_ONEDNN_OPTS=0"
    assert onednn_setting({"ONEDNN_MAX_CPU_ISA": "AVX2", "TF_ENABLE_ONEDNN_OPTS": ""}) == "ONEDNN_MAX_CPU_ISA=AVX2"
