"""Provenance and rebuilds: records say which commit ran them and whether its tree was clean; a report says at
its top when its records mix commits, come from a dirty tree or from code that has changed since; the records a
report used are kept in one compact file from which `report` rebuilds it without training; the reference sweep
refuses a dirty tree unless told otherwise."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
from test_report import _fixture_store

from bnexp import fingerprint, provenance, report, sweep
from bnexp.errors import UserError

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


def test_report_on_a_fresh_clone_rebuilds_from_the_records_file_through_the_cli(tmp_path):
    import subprocess
    import sys

    _fixture_store(tmp_path)
    report.build(tmp_path, sweep="reference")
    shutil.rmtree(tmp_path / "runs")  # a fresh clone of the committed reference: no runs/
    (tmp_path / "report.md").unlink()
    proc = subprocess.run([sys.executable, "-m", "bnexp", "report", f"paths.results_dir={tmp_path}"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "report.md").exists()


def test_the_committed_reference_report_matches_its_committed_records(tmp_path):
    results = ROOT / "results"
    if not (results / report.RECORDS_FILE).exists():
        pytest.skip("no committed results/records.jsonl.gz yet: the reference sweep (make sweep) writes it")
    copy = tmp_path / "results"
    shutil.copytree(results, copy, ignore=shutil.ignore_patterns("runs", "local", ".hydra", ".locks"))
    rebuilt = report.build(copy, sweep="reference").read_text()
    assert _without_build_time(rebuilt) == _without_build_time((results / "report.md").read_text())
    _linked_figures_exist(rebuilt, results)


def test_provenance_warnings_name_stale_scenarios_and_dirty_trees_not_mixed_commits(monkeypatch):
    monkeypatch.setattr(fingerprint, "of", lambda scenario: f"fp-{scenario}")
    current = [{"scenario": "a", "git_commit": "c1", "fingerprint": "fp-a"},
               {"scenario": "b", "git_commit": "c2", "fingerprint": "fp-b"}]
    assert provenance.warnings(current) == []  # scenarios from different commits, each current: fine
    said = "; ".join(provenance.warnings([*current, {"scenario": "b", "git_commit": "c0+dirty", "fingerprint": "old"},
                                          {"scenario": "c", "git_commit": "c0"}]))
    assert "stale scenarios: b, c" in said and "uncommitted changes (c0+dirty)" in said
    by = {s["scenario"]: s for s in provenance.by_scenario(current + [{"scenario": "b", "fingerprint": "old"}])}
    assert by["a"]["current"] and not by["b"]["current"] and by["b"]["fingerprints"] == ["fp-b", "old"]


def test_a_report_says_stale_and_dirty_at_its_top_and_per_scenario_where_records_come_from(tmp_path, monkeypatch):
    store = _fixture_store(tmp_path)
    scenarios = sorted({rec["scenario"] for rec in store.records()})
    monkeypatch.setattr(fingerprint, "of", lambda scenario: f"fp-{scenario}")
    for i, rec in enumerate(store.records()):  # the first scenario stale, half of the records dirty
        rec["git_commit"] = "aaa" if i % 2 else "bbb+dirty"
        rec["fingerprint"] = "old" if rec["scenario"] == scenarios[0] else f"fp-{rec['scenario']}"
        store.commit(store.begin(rec["scenario"], rec["run_id"]), rec["scenario"], rec["run_id"], rec)
    text = report.build(tmp_path, sweep="reference").read_text()
    top = text.split("## Verdicts")[0]
    assert f"**Provenance: stale scenarios: {scenarios[0]} (" in top
    assert "uncommitted changes (bbb+dirty)" in top
    table = text.split("## Provenance")[1]
    assert f"| {scenarios[0]} |" in table and "| old | **no** |" in table
    assert all(f"fp-{s} | yes |" in table for s in scenarios[1:])


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
