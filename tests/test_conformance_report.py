"""The report's conformance section (bnexp.conformance_report) on synthetic conformance records: each check
judged per (backend, Keras release) as holds / does not / mixed / cannot run / n/a, the per-backend tables, the
heatmap file, the release-to-release change lines with their upstream reference, and the errors listed."""

from __future__ import annotations

import pandas as pd
import pytest

from bnexp import conformance_report as cr
from bnexp.config_check import scenario_configs

CHECKS = [
    {"claim": "C03", "aspect": "flag at build", "probe": "flag_false", "metric": "c03_functional_stats_unchanged",
     "compare": ">", "threshold": 0.5, "says": "fit leaves the stats"},
    {"claim": "C14", "probe": "flag_none", "metric": "c14_fit_changed - c14_predict_changed", "compare": ">",
     "threshold": 0.5, "says": "fit changes, predict keeps"},
    {"claim": "C19", "probe": "xla_constant_channel", "applies": "c19_applies", "metric": "c19_jit_max_abs",
     "compare": ">", "threshold": 0.1, "says": "XLA wrong"},
]
CONFIGS = {"conformance": {"report": {"conformance": CHECKS}}}


def rec(backend, keras, seed=0, **metrics):
    return {"scenario": "conformance", "status": "ok", "seed": seed, "keras_backend": backend, "keras": keras,
            "c14_fit_changed": 1.0, "c14_predict_changed": 0.0, "c19_applies": float(backend == "tensorflow"),
            **metrics}


def records() -> pd.DataFrame:
    rows = [rec("tensorflow", "3.15.1", s, c03_functional_stats_unchanged=0.0, c19_jit_max_abs=0.5 if s else 0.0)
            for s in range(5)]
    rows += [rec("tensorflow", "3.9.2", c03_functional_stats_unchanged=0.0, c19_jit_max_abs=0.0),
             rec("tensorflow", "3.16.0.dev2026102704", c03_functional_stats_unchanged=1.0, c19_jit_max_abs=0.0),
             rec("jax", "3.15.1", c03_functional_stats_unchanged=0.0),
             rec("jax", "3.9.2", flag_false_error="AttributeError: module 'jax' has no attribute 'spmd_mode'"),
             {"scenario": "conformance", "status": "failed", "seed": 0, "backend": "torch", "keras_version": "3.0.5",
              "error": "ImportError: no torch"},
             {"scenario": "training_flag", "status": "ok", "seed": 0}]  # another scenario: not read
    return pd.DataFrame(rows)


def cell(table, check, backend, release):
    row = table[(table["check"] == check) & (table["backend"] == backend) & (table["release"] == release)]
    return row["cell"].item()


def test_each_cell_is_judged_per_backend_and_release():
    table, errors = cr.matrix(records(), CONFIGS)
    assert cell(table, "C03 flag at build", "tensorflow", "3.15.1") == "does not (0/5)"
    assert cell(table, "C03 flag at build", "tensorflow", "3.16.0.dev2026102704") == "holds"
    assert cell(table, "C14", "tensorflow", "3.9.2") == "holds"  # a metric expression
    assert cell(table, "C19", "tensorflow", "3.15.1") == "mixed 4/5"
    assert cell(table, "C19", "jax", "3.15.1") == "n/a"  # applies only on TensorFlow
    assert cell(table, "C03 flag at build", "jax", "3.9.2") == "cannot run"  # the probe raised there
    assert cell(table, "C14", "jax", "3.9.2") == "holds"  # ... the others still ran
    assert cell(table, "C14", "torch", "3.0.5") == "cannot run"  # the whole run failed: the asked setup
    assert ("jax / Keras 3.9.2", "flag_false", "AttributeError: module 'jax' has no attribute 'spmd_mode'") in errors
    assert any(setup == "torch / Keras 3.0.5" and "no torch" in error for setup, _, error in errors)
    # backends in their bnexp.names order, releases oldest first, the nightly build last
    order = list(dict.fromkeys(zip(table["backend"], table["release"])))
    assert order == [("tensorflow", "3.9.2"), ("tensorflow", "3.15.1"), ("tensorflow", "3.16.0.dev2026102704"),
                     ("jax", "3.9.2"), ("jax", "3.15.1"), ("torch", "3.0.5")]


def test_changes_name_the_cell_and_the_known_upstream_change():
    table, _ = cr.matrix(records(), CONFIGS)
    lines = cr.changes(table)
    assert lines[0].startswith("- **Keras 3.9.2** (from 3.0.5): no settled cell changed")
    dev = next(line for line in lines if "3.16.0.dev2026102704" in line.split("(from")[0])
    assert "C03 flag at build on tensorflow: does not -> holds" in dev and "keras-team/keras#23364" in dev
    # a change with no known upstream reference says so
    fake = table.assign(outcome=[("holds" if r.claim == "C14" and r.release == "3.15.1" else "does not")
                                 if r.claim == "C14" else r.outcome for r in table.itertuples()])
    line = next(line for line in cr.changes(fake) if line.startswith("- **Keras 3.15.1**"))
    assert "C14 on tensorflow: does not -> holds" in line and "no upstream change identified here" in line


def test_section_writes_its_table_and_heatmap(tmp_path):
    text = cr.section(records(), tmp_path, CONFIGS)
    assert text.startswith("## Conformance: BN pitfalls per Keras release and backend")
    assert "| C03 flag at build | 3.9.2 | 3.15.1 | 3.16.0.dev2026102704 |" not in text  # the header is releases
    assert "| check | 3.9.2 | 3.15.1 | 3.16.0.dev2026102704 |" in text
    assert "| C19 | does not | mixed 4/5 | does not |" in text
    assert "![BN conformance per backend and Keras release](figures/conformance_matrix.png)" in text
    png = tmp_path / "figures" / "conformance_matrix.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000
    saved = pd.read_csv(tmp_path / "tables" / "conformance_matrix.csv", keep_default_na=False)  # "n/a" stays
    assert len(saved) == 3 * 6 and set(saved["outcome"]) <= set(cr.OUTCOMES)
    assert "spmd_mode" in (tmp_path / "tables" / "conformance_matrix.md").read_text()


def test_error_cells_are_one_plain_line():
    assert cr._cell("ImportError: \x1b[1mThe torchvision package is necessary\x1b[0m a|b\nc") == (
        "ImportError: The torchvision package is necessary a\\|b c")


def test_no_conformance_records_no_section(tmp_path):
    assert cr.section(pd.DataFrame([{"scenario": "momentum", "status": "ok"}]), tmp_path, CONFIGS) == ""
    assert cr.section(pd.DataFrame(), tmp_path, CONFIGS) == ""  # a folder without records
    assert not (tmp_path / "figures").exists()


def test_the_scenario_declares_well_formed_checks_for_every_probed_claim():
    from bnexp.toolkit.conformance_probes import PROBES

    declared = cr.checks(scenario_configs())
    assert {c["claim"] for c in declared} == {"C03", "C04", "C07", "C14", "C15", "C16", "C17", "C18", "C19", "C20",
                                              "C21"}
    for c in declared:
        assert c["probe"] in PROBES and c["compare"] in (">", "<") and isinstance(c["threshold"], (int, float))
        assert c["says"], c
    assert len({cr.row_label(c) for c in declared}) == len(declared)


@pytest.mark.parametrize("release, short", [("3.16.0.dev2026102704", "3.16.0.dev20261027"), ("3.9.2", "3.9.2")])
def test_axis_labels_keep_a_builds_date(release, short):
    assert cr._short(release) == short
