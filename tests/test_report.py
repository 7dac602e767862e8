"""The report builds from a named set of records (a sweep's planned run ids): one row per claim, strays ignored,
smoke runs flagged, null vs false kept apart, no timing columns, figures it links exist."""

import json
import re

import pandas as pd
import pytest
import yaml

from bnexp import manifest, report
from bnexp.errors import UserError
from bnexp.store import Store


def _commit(store, rec):
    store.commit(store.begin(rec["scenario"], rec["run_id"]), rec["scenario"], rec["run_id"], rec)


def _fixture_store(root, seeds=range(5), sweep="reference"):
    """Momentum runs (with planned ids in a manifest), one failed run, and one stray record outside the plan."""
    store, planned, i = Store(root), [], 0
    for seed in seeds:
        for scaling in ("unit", "raw"):
            for batches in (10, 100):
                gap = 0.3 + 0.01 * seed if batches == 10 else 0.01 * seed
                rec = {"run_id": f"r{i}", "scenario": "momentum", "claims": "C01,C02", "status": "ok",
                       "error": None, "seed": seed, "semantics": "keras3", "bn.momentum": 0.99,
                       "train.batches": batches, "data.scaling": scaling, "m0.99.gap_test": gap,
                       "mexp.gap_test": 0.01 * seed, "m0.99.var_err": 1.5, "gap_test": gap,
                       "acc_test_batchstats": 0.8, "acc_test_moving": 0.8 - gap, "acc_test_precise": 0.8,
                       "m0.99.gap_precise": gap, "mexp.gap_precise": 0.01 * seed, "gap_precise": gap,
                       "fit_s": 1.0 + seed, "tensorflow": "2.x", "keras": "3.x", "device": "cpu"}
                _commit(store, rec)
                planned.append(rec["run_id"])
                i += 1
    _commit(store, {"run_id": "bad", "scenario": "momentum", "status": "failed", "error": "boom", "seed": 0})
    planned.append("bad")
    _commit(store, {"run_id": "stray", "scenario": "momentum", "status": "ok", "seed": 0, "semantics": "keras3",
                    "train.batches": 10, "data.scaling": "unit", "m0.99.gap_test": -9.0, "bn.momentum": 0.99})
    manifest.write_plan(root, sweep, {"momentum": planned})
    return store


def test_report_from_a_sweeps_planned_records(tmp_path):
    _fixture_store(tmp_path)
    text = report.build(tmp_path, sweep="reference").read_text()
    assert text.startswith("# bnexp report") and "Smoke run" not in text.split("## Verdicts")[0]
    table = text.split("## Verdicts")[1].split("<a id=")[0]
    for claim in [f"C{i:02d}" for i in range(1, 16)] + ["R1"]:
        assert len(re.findall(rf"^\| {claim} \|", table, re.M)) == 1, claim  # one row per claim
    c01 = re.search(r"^\| C01 \|.*$", table, re.M).group(0)
    assert "**reproduced**" in c01 and "data.scaling=" in c01 and "[section](#scenario-momentum)" in c01
    assert "Ignored: 1 record(s)" in text and "momentum/stray" in text  # the stray -9.0 gap was not used
    assert "-9.000" not in text
    assert "### C01:" in text and "C01.1" in text.split("## Scenario `momentum`")[1]  # rule rows under the claim
    assert "`keras3`: TensorFlow 2.x, Keras 3.x" in text and "boom" in text
    summary = (tmp_path / "tables" / "momentum_summary.md").read_text()
    assert "m0.99.gap_test" in summary and "fit_s" not in summary  # the rules' metrics, no timing columns
    links = re.findall(r"\]\(([^)#]+\.png)\)", text)
    assert links, "the momentum section links its figures"
    for link in links:
        assert (tmp_path / link).exists(), link


def test_a_smoke_run_says_so_and_lists_only_its_sweeps(tmp_path):
    _fixture_store(tmp_path, seeds=(0,), sweep="quick")
    (tmp_path / "sweeps" / "other.json").write_text(json.dumps({"name": "other", "planned": {"momentum": ["x"]},
                                                               "runs": 1, "seconds": 5.0}))
    text = report.build(tmp_path, sweep="quick").read_text()
    top = text.split("## Verdicts")[0]
    assert "Smoke run: these verdicts mean nothing" in top and "1 seed (a verdict needs at least 5)" in top
    assert "sweep `quick`" in top
    env = text.split("## Environment")[1]
    assert "sweep `quick`" in env and "sweep `other`" not in env


def test_partial_sweep_lists_missing_runs(tmp_path):
    _fixture_store(tmp_path)
    manifest.write_plan(tmp_path, "reference", {"momentum": ["r0", "r1", "gone"]})
    text = report.build(tmp_path, sweep="reference").read_text()
    assert "1 planned run(s) have no record" in text and "momentum/gone" in text


def test_manifest_keeps_the_sweeps_other_keys(tmp_path):
    path = manifest.path(tmp_path, "quick")
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"name": "quick", "runs": 2, "seconds": 3.0, "jobs": "2", "finished": "then"}))
    manifest.write_plan(tmp_path, "quick", {"momentum": ["a", "b"]})
    manifest.write_plan(tmp_path, "quick", {"variance": ["c"]})  # a later `scenarios=variance` keeps momentum's
    data = manifest.read(tmp_path, "quick")
    assert data["planned"] == {"momentum": ["a", "b"], "variance": ["c"]} and data["seconds"] == 3.0
    assert manifest.default_sweep(tmp_path) == "quick"
    manifest.write_plan(tmp_path, "reference", {"momentum": ["d"]})
    assert manifest.default_sweep(tmp_path) == "reference"


def test_sweep_must_have_a_plan(tmp_path):
    (tmp_path / "runs").mkdir()
    with pytest.raises(UserError, match="no sweep manifest .*sweep=all"):
        report.build(tmp_path, sweep="reference")
    (tmp_path / "sweeps").mkdir()
    (tmp_path / "sweeps" / "reference.json").write_text(json.dumps({"name": "reference", "runs": 3}))
    with pytest.raises(UserError, match="no planned run ids"):
        report.build(tmp_path, sweep="reference")


def test_an_unknown_sweep_is_named_as_such_not_advised(tmp_path):
    (tmp_path / "runs").mkdir()
    with pytest.raises(UserError, match=r"unknown sweep 'nosuch'; sweeps: frameworks, quick, reference") as e:
        report.build(tmp_path, sweep="nosuch")
    assert "bnexp sweep" not in str(e.value)


def test_the_header_names_the_folder_as_given(tmp_path, monkeypatch):
    """results/local, not its last part `local`: the folder the user would look in."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "results" / "local" / "runs").mkdir(parents=True)
    assert "every record in `results/local/runs/`" in report.build("results/local", "all").read_text()
    assert "every record in `results/local/runs/`" in report.build(tmp_path / "results" / "local", "all").read_text()


def test_null_and_false_stay_apart_in_factors_and_summaries():
    df = pd.DataFrame({"seed": [0, 0, 1, 1], "status": "ok", "base.training": [None, False, None, False],
                       "acc": [0.9, 0.5, 0.8, 0.4]})
    assert report.factors(df, {"base.training"}) == ["base.training"]
    summ = report.summary(df, ["base.training"], ["acc"])
    assert sorted(summ["base.training"]) == ["false", "null"]
    assert summ.set_index("base.training").loc["null", "acc"] == pytest.approx(0.85)


def test_report_with_no_manifest_uses_every_record_and_says_so(tmp_path):
    (tmp_path / "runs").mkdir()
    text = report.build(tmp_path).read_text()
    assert "not from a sweep's planned set" in text and "not measured (no records)" in text


def test_claim_texts_come_from_the_scenario_configs():
    from bnexp import scenario_spec

    specs = scenario_spec.claim_texts()
    assert {f"C{i:02d}" for i in range(1, 16)} | {"R1"} <= set(specs)
    assert all(s.text and s.source and s.combine in ("all", "any", "primary") for s in specs.values())


# Columns the records have that the committed reference tables predate (issue #12); each is checked on a
# real record by its scenario's end-to-end test (rule_metrics.missing_rule_metrics). Drop an entry once the
# reference sweep has rewritten that table. Factors the reference grid sweeps count as columns too.
RECORDED_SINCE_THE_TABLES = {
    "update_ops": {"stat_converged", "stat_err_max", "zero_debias"},
    "batch_size": {"acc_test_inference"},
    "bn_benefit": {"failed", "acc_test_final_moving", "reached_loss"},
    "frozen_base": {f"c05_m{m}_b{b}_{k}" for m, b in ((99, 100), (90, 300), (99, 300))
                    for k in ("fit_eval_gap", "precise_gain_test", "bn_stats_changed")} | {"s2_flag_honoured"},
    "training_flag": {"fitcap_predict_agree", "graph_lp_before_after_differ"},
}


def test_every_rule_in_the_scenario_configs_is_well_formed_and_names_recorded_columns():
    """Typo guard without TensorFlow: the committed reference tables show which columns records have."""
    from conftest import ROOT

    from bnexp import scenario_spec
    from bnexp.config_check import scenario_configs
    from bnexp.verdicts import check_rule

    specs = scenario_spec.claim_texts()
    grids = yaml.safe_load((ROOT / "configs" / "sweep" / "reference.yaml").read_text())["grids"]
    for name, scfg in scenario_configs().items():
        table = ROOT / "results" / "tables" / f"{name}.csv"
        for rule in scfg["verdicts"]:
            check_rule(rule, f"{name}: ")
            assert rule["claim"] in specs, f"{name}: claim {rule['claim']} has no claim_text"
        if not table.exists():  # a scenario newer than the committed reference: its own tests check its records
            continue
        columns = set(pd.read_csv(table, nrows=1).columns)
        columns |= set(grids.get(name) or {}) | RECORDED_SINCE_THE_TABLES.get(name, set())
        for rule in scfg["verdicts"]:
            by = rule.get("by") or []
            named = [*(rule.get("where") or {}), *(by if isinstance(by, list) else [by]),
                     *([rule["contrast"]["factor"]] if rule.get("contrast") else [])]
            assert set(named) <= columns, (name, rule["claim"], set(named) - columns)
            assert report.rule_columns([rule], pd.DataFrame(columns=sorted(columns))), (name, rule["metric"])
            assert not rule.get("reached") or rule["reached"] in columns, (name, rule["claim"], rule["reached"])


def test_summary_orders_numeric_factors_numerically():
    df = pd.DataFrame({"seed": 0, "status": "ok", "train.batch_size": [128, 2, 32, 16], "acc": [0.1, 0.2, 0.3, 0.4]})
    assert list(report.summary(df, ["train.batch_size"], ["acc"])["train.batch_size"]) == ["2", "16", "32", "128"]


def test_sweep_timing_keeps_the_plan(tmp_path):
    import time

    from bnexp import sweep

    manifest.write_plan(tmp_path, "quick", {"momentum": ["a", "b"]})
    sweep._write_meta(Store(tmp_path), "quick", ["a", "b"], 0, time.time(), [])
    data = manifest.read(tmp_path, "quick")
    assert data["planned"] == {"momentum": ["a", "b"]} and data["runs"] == 2 and "seconds" in data


def test_report_command_rejects_unknown_options():
    from bnexp import cli

    with pytest.raises(UserError, match="unknown report option 'sweeps=x'.*sweep=NAME"):
        cli.report(["sweeps=x"])
