"""The conformance probes (bnexp.toolkit.conformance_probes) on the installed Keras 3 with TensorFlow, in this
process: each measures what its docstring says - checked where the answer is known without the probe (the flag
styles Keras 3.15 honours, exact arithmetic at mean 0, the padding's share of the statistics, BN before Dropout
seeing its own input) - a failing probe is recorded, not raised, and the scenario runs end to end (slow)."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
import yaml
from conftest import ROOT

from bnexp.errors import UserError

SCENARIO = yaml.safe_load((ROOT / "configs" / "scenario" / "conformance.yaml").read_text())
SIZES = SimpleNamespace(**SCENARIO["conformance"])
SMALL = SimpleNamespace(**{**vars(SIZES), "c21_train": 1024, "c21_test": 512, "c21_epochs": 2})


@pytest.fixture(scope="module")
def probes(fw):
    from bnexp.toolkit import conformance_probes

    return conformance_probes


def run(probes, fw, name, sizes=SIZES, seed=0):
    out = probes.run_all(fw.keras, fw.backend, seed, sizes, only=[name])
    assert f"{name}_error" not in out, out.get(f"{name}_error")
    return out


def test_training_flag_probes_see_what_keras3_does_with_each_flag_style(probes, fw):
    out = run(probes, fw, "flag_false")
    # a flag hard-coded in call() reaches BN; Keras 3.15's functional model overrides one fixed while building
    # (training_flag's flag_honoured, keras-team/keras#23364)
    assert out["c03_subclass_stats_unchanged"] == 1 and out["c07_subclass_fit_predict_rel_diff"] == 0
    assert out["c03_functional_stats_unchanged"] == 0 and out["c07_functional_fit_predict_rel_diff"] > 1e-3
    assert out["c07_functional_call_changed_stats"] == 1 and out["c07_subclass_call_changed_stats"] == 0
    out = run(probes, fw, "flag_true")
    assert out["c04_subclass_alone_vs_batch"] > 1e-3 and out["c04_functional_alone_vs_batch"] < 1e-5
    out = run(probes, fw, "flag_none")
    assert (out["c14_fit_changed"], out["c14_predict_changed"], out["c14_evaluate_changed"]) == (1, 0, 0)


def test_large_mean_probe_measures_the_variance_error_against_float64(probes, fw):
    out = run(probes, fw, "large_mean")
    assert out["c18_m0_var_rel_err"] < 1e-5 and out["c18_m0_out_std_err"] < 1e-4  # mean 0: exact up to rounding
    assert out["c18_max_var_rel_err"] == max(out[f"c18_m{m:g}_var_rel_err"] for m in SIZES.means)
    assert all(math.isfinite(out[f"c18_m{m:g}_var_min"]) for m in SIZES.means)


def test_masking_probe_tells_masked_statistics_from_padded_ones(probes, fw):
    out = run(probes, fw, "masking")
    assert 0.1 < out["c20_padding_frac"] < 0.9
    assert out["c20_padded_err"] > 0.5  # counting the zeros moves mean and variance by far more than 5%
    assert out["c20_stat_err"] < 1e-3  # Keras 3.15 (>= 3.9) masks BN's moments


def test_xla_probe_runs_eager_and_jit_on_tensorflow_only(probes, fw):
    out = run(probes, fw, "xla_constant_channel")
    assert out["c19_applies"] == 1
    for mode in ("eager", "jit"):
        values = [out[f"c19_c{float(c):g}_{mode}_max_abs"] for c in SIZES.constants]
        assert out[f"c19_{mode}_max_abs"] == max(values) and all(math.isfinite(v) for v in values)
    assert probes.xla_constant_channel(fw.keras, "jax", np.random.default_rng(0), SIZES) == {"c19_applies": 0.0}


def test_dropout_probe_compares_moving_and_population_statistics(probes, fw):
    out = run(probes, fw, "dropout_bn", SMALL)
    # BN before Dropout sees the same input in fit and at inference: its moving variance is its input's variance
    assert abs(out["c21_bn_dropout_var_ratio"] - 1) < 0.2
    for order in ("dropout_bn", "bn_dropout"):
        gap = out[f"c21_{order}_acc_population"] - out[f"c21_{order}_acc_moving"]
        assert out[f"c21_{order}_acc_gap"] == pytest.approx(gap) and 0.25 < out[f"c21_{order}_acc_moving"] <= 1


def test_a_failing_probe_is_recorded_and_the_others_still_run(probes, fw, monkeypatch):
    def broken(*args):
        raise AttributeError("module 'jax' has no attribute 'spmd_mode'")

    monkeypatch.setitem(probes.PROBES, "flag_none", broken)
    out = probes.run_all(fw.keras, fw.backend, 0, SIZES, only=["flag_none", "masking"])
    assert out["flag_none_error"] == "AttributeError: module 'jax' has no attribute 'spmd_mode'"
    assert "c14_fit_changed" not in out and out["c20_stat_err"] < 1e-3 and out["flag_none_s"] >= 0
    with pytest.raises(UserError, match=r"conformance.probes names unknown probes nope; valid: flag_false, "):
        probes.run_all(fw.keras, fw.backend, 0, SIZES, only=["nope"])


@pytest.mark.slow
def test_conformance_end_to_end_records_every_rule_and_check_metric(run_cli):
    from rule_metrics import missing_rule_metrics

    from bnexp import conformance_report

    rec = run_cli("scenario=conformance", "conformance.c21_train=1024", "conformance.c21_epochs=2")
    assert rec["status"] == "ok", rec["error"]
    assert rec["keras"] == rec["setup"].split("Keras ")[1] and not [k for k in rec if k.endswith("_error")]
    assert not missing_rule_metrics(rec, "conformance")
    import pandas as pd

    table, errors = conformance_report.matrix(pd.DataFrame([rec]))
    assert not errors and set(table["outcome"]) <= {"holds", "does not"}
