"""bnexp.scenario_spec: every scenario file is read and checked in one place; a misspelt metric, factor or key is
one line naming the file, the rule or figure and the name, before anything is computed."""

from __future__ import annotations

import fnmatch
import shutil

import pytest
import yaml

from bnexp import report_compute, scenario_spec
from bnexp.errors import UserError
from bnexp.store import Store
from tests.conftest import ROOT

SCENARIOS = ROOT / "configs" / "scenario"


def _copy(tmp_path, edit=None, name="momentum"):
    """The scenario folder copied, with `edit(scenario_node)` applied to one file's `scenario:` node."""
    folder = tmp_path / "scenario"
    shutil.copytree(SCENARIOS, folder)
    if edit:
        path = folder / f"{name}.yaml"
        doc = yaml.safe_load(path.read_text())
        edit(doc["scenario"])
        path.write_text(yaml.safe_dump(doc, sort_keys=False))
    scenario_spec.scenarios.cache_clear()
    return folder


@pytest.fixture(autouse=True)
def _fresh_cache():
    scenario_spec.scenarios.cache_clear()
    yield
    scenario_spec.scenarios.cache_clear()


def test_every_committed_scenario_is_valid_and_its_factors_are_settings_or_declared_columns():
    specs = scenario_spec.scenarios()
    assert "momentum" in specs and "_template" not in specs
    for name, spec in specs.items():
        scenario_spec.check_factors(spec, report_compute.config_keys(name))
    labels = [r.label for spec in specs.values() for r in spec.rules]
    assert len(labels) == len(set(labels))  # C06.1, C06/<id>: unique across scenarios


def test_declared_columns_are_in_the_committed_reference_records():
    """The declaration is not a wish list: every declared column (or glob) names columns the runs recorded."""
    df = Store(ROOT / "results").table()
    for name, spec in scenario_spec.scenarios().items():
        recorded = set(df[df["scenario"] == name].dropna(axis=1, how="all").columns)
        if spec.columns is None or not recorded:  # no reference records yet: the scenario's own tests check
            continue
        absent = [c for c in spec.columns if not any(fnmatch.fnmatchcase(r, c) for r in recorded)]
        assert not absent, (name, absent)


def test_a_misspelt_rule_metric_is_an_error_at_load_not_a_nan_verdict(tmp_path):
    def typo(node):
        node["verdicts"][0]["metric"] = "m0.99.gap_precsie"

    with pytest.raises(UserError, match=r"configs/scenario/momentum.yaml: rule C01.1 metric names "
                                        r"'m0.99.gap_precsie', which scenario.report.columns does not declare"):
        scenario_spec.scenarios(_copy(tmp_path, typo))


def test_a_misspelt_column_inside_an_expression_or_a_figure_is_an_error(tmp_path):
    def expression(node):
        node["verdicts"][-1]["metric"] = "acc_test_moving - acc_test_precis"

    with pytest.raises(UserError, match=r"rule R1\.\d+ metric names 'acc_test_precis'"):
        scenario_spec.scenarios(_copy(tmp_path, expression))

    def figure(node):
        node["figures"][2]["metrics"]["acc_test_movin"] = "typo"

    with pytest.raises(UserError, match=r"figure momentum_r1_fix metrics names 'acc_test_movin'"):
        scenario_spec.scenarios(_copy(tmp_path / "b", figure))


def test_a_misspelt_factor_is_an_error_where_the_config_is_known(tmp_path):
    def where(node):
        node["verdicts"][0]["where"] = {"semantics": "keras3", "train.bathces": [10, 30]}

    spec = scenario_spec.scenarios(_copy(tmp_path, where))["momentum"]
    with pytest.raises(UserError, match=r"rule C01.1 where names 'train.bathces', which is no setting of the "
                                        r"scenario's config \(did you mean train.batches\?\)"):
        scenario_spec.check_factors(spec, report_compute.config_keys("momentum"))


@pytest.mark.parametrize("edit, message", [
    (lambda n: n["verdicts"][0].update(precondtion="flag"), r"rule C01/\?: unknown key 'precondtion'; valid: claim"),
    (lambda n: n.update(figuers=[]), r"unknown key scenario.figuers; valid: name, claims"),
    (lambda n: n["verdicts"][0].update(threshold="high"), r"threshold must be a number, got 'high'"),
    (lambda n: n["claim_text"]["C01"].update(combine="most"), r"claim_text.C01.combine='most'; valid: all, any"),
    (lambda n: n["figures"][0].update(kind="pie"), r"figure momentum_gap_heatmap: kind='pie'; valid: heatmap"),
    (lambda n: n["allowed"].update({"bn.momentum": {"minimum": 0}}), r"allowed.bn.momentum: unknown key 'minimum'"),
    (lambda n: n.update(semantics=["keras4"]), r"scenario.semantics=\['keras4'\]; give one or more of keras3"),
    (lambda n: n.update(name="other"), r"scenario.name='other' must be the file's name 'momentum'"),
    (lambda n: n["report"].update(every_backend="yes"), r"report.every_backend must be true or false, got 'yes'"),
])
def test_a_malformed_scenario_is_one_line_naming_file_key_and_value(tmp_path, edit, message):
    with pytest.raises(UserError, match=message) as err:
        scenario_spec.scenarios(_copy(tmp_path, edit))
    assert str(err.value).startswith("configs/scenario/momentum.yaml: ") and "\n" not in str(err.value)


def test_only_the_conformance_probes_are_judged_on_every_backend():
    """report.every_backend, not the scenario's name, keeps a scenario's JAX/PyTorch records in its verdicts."""
    assert [n for n, s in scenario_spec.scenarios().items() if s.every_backend] == ["conformance"]


def test_every_backend_moves_with_the_declaration_not_the_name(tmp_path, monkeypatch):
    import pandas as pd

    df = pd.DataFrame({"scenario": ["momentum", "momentum", "conformance"], "backend": [None, "jax", "jax"]})
    assert report_compute.default_setup(df).tolist() == [True, False, True]
    folder = _copy(tmp_path, lambda n: n["report"].update(every_backend=True))
    load = scenario_spec.scenarios
    monkeypatch.setattr(scenario_spec, "scenarios", lambda: load(folder))  # momentum now declares it
    assert report_compute.default_setup(df).tolist() == [True, True, True]


def test_a_claim_described_twice_is_an_error(tmp_path):
    def twice(node):
        node["claim_text"]["C10"] = {"source": "x", "text": "y"}

    with pytest.raises(UserError, match="claim C10 is described in configs/scenario/momentum.yaml and "
                                        "weights_order.yaml; describe it once"):
        scenario_spec.scenarios(_copy(tmp_path, twice))


def test_files_starting_with_an_underscore_are_templates_not_scenarios(tmp_path):
    folder = _copy(tmp_path)
    (folder / "_draft.yaml").write_text("scenario: {name: nothing}\n")
    assert "_draft" not in scenario_spec.scenarios(folder) and "nothing" not in scenario_spec.scenarios(folder)


def test_expression_columns():
    assert scenario_spec.expression_columns("acc_test_moving") == ["acc_test_moving"]
    assert scenario_spec.expression_columns("m0.99.gap_precise") == ["m0.99.gap_precise"]
    assert scenario_spec.expression_columns("abs(acc_test_r1_n200 - acc_test_r1_n10)") == [
        "acc_test_r1_n200", "acc_test_r1_n10"]
    assert scenario_spec.expression_columns("`lp1_before.call_batchstats` - `lp0_before.call_batchstats`") == [
        "lp1_before.call_batchstats", "lp0_before.call_batchstats"]


def test_the_loader_reads_the_same_values_as_hydra():
    from omegaconf import OmegaConf

    for name, spec in scenario_spec.scenarios().items():
        assert OmegaConf.to_container(OmegaConf.load(SCENARIOS / f"{name}.yaml"))["scenario"] == spec.node, name


def test_the_new_parent_side_modules_import_no_framework():
    import subprocess
    import sys

    code = ("import sys\nimport bnexp.scenario_spec, bnexp.values, bnexp.report_compute, bnexp.report_render\n"
            "print([m for m in ('tensorflow', 'keras', 'tf_keras') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "[]", out.stderr
