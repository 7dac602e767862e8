"""Verdict rules on synthetic records: every outcome, contrasts, groups (settled + unsettled, predicted splits),
equivalence margins, preconditions, null vs false, and how rules combine into a claim's verdict."""

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from bnexp.verdicts import combine, describe, evaluate, labels, mean_ci, t95

RULE = {"claim": "C01", "metric": "gap_test", "compare": ">", "threshold": 0.05}
SETTLED = [0.30, 0.32, 0.31]      # far above 0.05
AGAINST = [0.00, 0.01, -0.01]     # far below 0.05
UNSETTLED = [0.00, 0.10, 0.05]    # CI straddles 0.05


def records(values_by_group: dict, seeds=(0, 1, 2), factor="bn.momentum", metric="gap_test"):
    rows = []
    for group, values in values_by_group.items():
        for seed, v in zip(seeds, values):
            rows.append({"seed": seed, factor: group, metric: v, "status": "ok"})
    return pd.DataFrame(rows)


def test_t_quantile_comes_from_scipy_for_every_dof():
    assert math.isclose(t95(2), 4.302652729911275)
    assert t95(12) == pytest.approx(stats.t.ppf(0.975, 12)) and t95(12) < t95(10)  # no table steps
    m, lo, hi = mean_ci([1.0, 2.0, 3.0])
    assert m == 2.0 and math.isclose(hi - m, t95(2) / math.sqrt(3))
    assert mean_ci([5.0])[1] == -math.inf


@pytest.mark.parametrize("values,verdict", [(SETTLED, "reproduced"), (AGAINST, "not reproduced"),
                                            (UNSETTLED, "inconclusive")])
def test_each_outcome(values, verdict):
    v = evaluate(records({0.99: values}), RULE)
    assert v.verdict == verdict and v.groups[0].n_seeds == 3
    assert v.key.lo <= v.key.mean <= v.key.hi


def test_less_than_rule_and_strict_claims():
    assert evaluate(records({0.99: [0.0, 0.001, 0.002]}), {**RULE, "compare": "<", "threshold": 0.01}).verdict == "reproduced"
    # a claim of "> 0" measured exactly 0 in every seed is not reproduced (not left inconclusive)
    assert evaluate(records({0.99: [0.0, 0.0, 0.0]}), {**RULE, "threshold": 0}).verdict == "not reproduced"


def test_min_seeds_is_configurable():
    two = records({0.99: [0.3, 0.31]}, seeds=(0, 1))
    assert evaluate(two, RULE).verdict == "inconclusive"
    assert evaluate(two, {**RULE, "min_seeds": 2}).verdict == "reproduced"


def test_where_selects_rows_and_seeds_count_once():
    df = records({0.5: [-0.2, -0.2, -0.2], 0.99: [0.3, 0.3, 0.3]})
    df = pd.concat([df, df.assign(gap_test=df["gap_test"] + 0.1)])  # two rows per seed and group
    v = evaluate(df, {**RULE, "where": {"bn.momentum": 0.99}})
    assert v.verdict == "reproduced" and v.key.n_seeds == 3 and math.isclose(v.key.mean, 0.35)
    assert evaluate(df, {**RULE, "where": {"bn.momentum": 0.5}}).verdict == "not reproduced"


def test_contrast_is_paired_by_seed():
    df = records({"bn": [0.90, 0.80, 0.85], "none": [0.70, 0.60, 0.66]}, factor="norm", metric="acc")
    rule = {"claim": "C13", "metric": "acc", "contrast": {"factor": "norm", "a": "bn", "b": "none"},
            "compare": ">", "threshold": 0.0}
    v = evaluate(df, rule)
    assert v.verdict == "reproduced" and math.isclose(v.key.mean, np.mean([0.2, 0.2, 0.19]))
    assert "acc(norm=bn) - acc(norm=none)" in describe(rule)


def test_settled_group_is_not_hidden_behind_inconclusive():
    df = records({"unit": SETTLED, "raw": UNSETTLED}, factor="data.scaling")
    v = evaluate(df, {**RULE, "by": "data.scaling"})
    assert v.verdict == "depends on data.scaling"
    assert v.detail.startswith("holds for unit; unsettled for raw")


def test_depends_line_keeps_the_unsettled_groups():
    df = records({"bn": SETTLED, "ln": AGAINST, "gn": UNSETTLED}, factor="norm")
    v = evaluate(df, {**RULE, "by": "norm"})
    assert v.verdict == "depends on norm" and v.detail.startswith("holds for bn; fails for ln; unsettled for gn")


def test_key_number_is_the_worst_group_never_a_pool():
    df = records({"a": [0.9, 0.9, 0.9], "b": [0.2, 0.25, 0.3]}, factor="variant")
    v = evaluate(df, {**RULE, "by": "variant"})
    assert v.verdict == "reproduced"
    assert v.key.label == "variant=b" and math.isclose(v.key.mean, 0.25)  # not the pooled 0.575


def test_groups_come_from_the_rows_where_selected():
    df = pd.concat([records({"keras3": SETTLED}, factor="semantics").assign(norm="bn"),
                    records({"tf1": AGAINST}, factor="semantics").assign(norm="gn")])
    v = evaluate(df, {**RULE, "where": {"norm": "bn"}, "by": "semantics"})
    assert [g.label for g in v.groups] == ["semantics=keras3"] and v.verdict == "reproduced"


def test_per_factor_combinations_and_numeric_order():
    rows = []
    for b in (10, 100, 30):
        for s in ("unit", "raw"):
            rows.append(records({b: SETTLED if (b, s) != (100, "raw") else AGAINST}, factor="train.batches").assign(**{"data.scaling": s}))
    v = evaluate(pd.concat(rows), {**RULE, "by": ["train.batches", "data.scaling"]})
    assert [g.label for g in v.groups][:2] == ["train.batches=10 & data.scaling=raw", "train.batches=10 & data.scaling=unit"]
    assert [g.label.split(" & ")[0] for g in v.groups][::2] == ["train.batches=10", "train.batches=30", "train.batches=100"]
    assert v.verdict == "depends on train.batches, data.scaling"
    assert "fails for train.batches=100 & data.scaling=raw" in v.detail


def test_predicted_split_is_a_reproduction():
    df = records({"keras2_v1": SETTLED, "tf_keras": AGAINST, "keras3": AGAINST}, factor="semantics")
    split = {**RULE, "by": "semantics", "expect": {"keras2_v1": "holds", "tf_keras": "fails", "keras3": "fails"}}
    assert evaluate(df, split).verdict == "reproduced"
    assert "predicted: holds for keras2_v1; fails for tf_keras, keras3" in describe(split)
    wrong = records({"keras2_v1": SETTLED, "tf_keras": SETTLED, "keras3": AGAINST}, factor="semantics")
    v = evaluate(wrong, split)
    # a predicted split is a claim for every group: one group against the prediction decides
    assert v.verdict == "not reproduced" and v.detail.startswith("holds for keras2_v1, keras3; fails for tf_keras")
    unsure = records({"keras2_v1": SETTLED, "tf_keras": UNSETTLED, "keras3": AGAINST}, factor="semantics")
    assert evaluate(unsure, split).verdict == "inconclusive"
    backwards = records({"keras2_v1": AGAINST, "tf_keras": SETTLED, "keras3": SETTLED}, factor="semantics")
    assert evaluate(backwards, split).verdict == "not reproduced"


def test_a_group_without_a_prediction_is_never_dropped():
    df = records({"bn": SETTLED, "none": SETTLED}, factor="norm")
    v = evaluate(df, {**RULE, "by": "norm", "expect": {"bn": "holds"}})
    assert v.verdict == "inconclusive" and "unsettled for none" in v.detail and "no predicted outcome" in v.detail


@pytest.mark.parametrize("values,verdict", [
    ([0.030, 0.032, 0.031], "reproduced"),       # CI above 0 and above the band 0 +- 0.005
    ([0.001, -0.001, 0.0005], "not reproduced"),  # CI inside 0 +- 0.005: equivalent, no effect
    ([-0.02, 0.03, 0.0], "inconclusive"),         # neither
])
def test_equivalence_margin(values, verdict):
    rule = {"claim": "C12", "metric": "gain", "compare": ">", "threshold": 0.0, "margin": 0.005}
    assert evaluate(records({2: values}, metric="gain"), rule).verdict == verdict
    if verdict == "not reproduced":  # without a margin the same numbers settle nothing
        assert evaluate(records({2: values}, metric="gain"), {**rule, "margin": None}).verdict == "inconclusive"


def test_precondition_not_met_rows_are_not_evidence():
    df = records({"keras3": SETTLED, "tf_keras": AGAINST}, factor="semantics").assign(flag_honoured=True)
    df.loc[df["semantics"] == "tf_keras", "flag_honoured"] = False
    rule = {**RULE, "by": "semantics", "precondition": "flag_honoured"}
    v = evaluate(df, rule)
    assert [g.verdict for g in v.groups] == ["reproduced", "precondition not met"]
    # the group that measured something else is listed, but decides nothing
    assert v.verdict == "reproduced" and "precondition not met for tf_keras" in v.detail
    assert v.excluded == 3
    df["flag_honoured"] = 0
    assert evaluate(df, rule).verdict == "precondition not met"
    assert evaluate(df.drop(columns="flag_honoured"), rule).verdict == "precondition not met"
    mixed = records({"keras3": SETTLED + [-5.0]}, seeds=(0, 1, 2, 3), factor="semantics")
    mixed["flag_honoured"] = [1, 1, 1, 0]  # the one row whose flag was ignored would flip the verdict
    assert evaluate(mixed, {**RULE, "precondition": "flag_honoured"}).verdict == "reproduced"


def test_null_false_and_true_are_three_values():
    rows = []
    for value, values in ((None, SETTLED), (False, AGAINST), (True, UNSETTLED)):
        rows += [{"seed": s, "base.training": value, "gap_test": x, "status": "ok"} for s, x in zip((0, 1, 2), values)]
    df = pd.DataFrame(rows)
    assert list(labels(df["base.training"]).unique()) == ["null", "false", "true"]
    assert labels(df["base.training"].astype(object)).nunique() == 3
    assert evaluate(df, {**RULE, "where": {"base.training": None}}).verdict == "reproduced"
    assert evaluate(df, {**RULE, "where": {"base.training": False}}).verdict == "not reproduced"
    v = evaluate(df, {**RULE, "by": "base.training"})
    assert [g.label for g in v.groups] == ["base.training=false", "base.training=null", "base.training=true"]
    ints = pd.DataFrame([{"seed": s, "flag": 1, "gap_test": 0.3, "status": "ok"} for s in range(3)])
    assert evaluate(ints, {**RULE, "where": {"flag": True}}).verdict == "inconclusive"  # 1 is not true


def test_failed_runs_are_ignored_and_missing_metric_is_inconclusive():
    df = records({0.99: [0.3, 0.31, 0.32]})
    df.loc[0, "status"] = "failed"
    assert evaluate(df, RULE).key.n_seeds == 2
    assert evaluate(df, {**RULE, "where": {"nosuch": 1}}).verdict == "inconclusive"


def test_expression_metrics():
    df = pd.DataFrame({"seed": [0, 1, 2], "a": [0.9, 0.9, 0.9], "b": [0.5, 0.52, 0.51], "status": "ok"})
    assert evaluate(df, {"claim": "X", "metric": "a - b", "compare": ">", "threshold": 0.2}).verdict == "reproduced"


def test_malformed_rules_fail_with_the_rule_named():
    with pytest.raises(ValueError, match="compare"):
        evaluate(records({0.99: SETTLED}), {**RULE, "compare": ">="})
    with pytest.raises(ValueError, match="expect needs exactly one `by`"):
        evaluate(records({0.99: SETTLED}), {**RULE, "expect": {"a": "holds"}})


def _rules(*verdict_values):
    return [evaluate(records({0.99: v}), RULE, f"C01.{i + 1}") for i, v in enumerate(verdict_values)]


def test_claim_combines_its_rules_as_declared():
    assert combine("C01", _rules(SETTLED, SETTLED)).verdict == "reproduced"
    assert combine("C01", _rules(SETTLED, UNSETTLED)).verdict == "inconclusive"
    all_ = combine("C01", _rules(SETTLED, UNSETTLED, AGAINST))
    assert all_.verdict == "not reproduced" and all_.deciding.label == "C01.3" and "all of 3 rules" in all_.combine
    assert combine("C01", _rules(AGAINST, SETTLED), "any").verdict == "reproduced"
    primary = combine("C01", _rules(UNSETTLED, AGAINST), "primary", primary="C01.1")
    assert primary.verdict == "inconclusive" and primary.deciding.label == "C01.1"
    split = evaluate(records({"unit": SETTLED, "raw": UNSETTLED}, factor="data.scaling"), {**RULE, "by": "data.scaling"},
                     "C01.9")
    c = combine("C01", [*_rules(SETTLED), split])
    assert c.verdict == "depends on data.scaling" and c.detail.startswith("C01.9: holds for unit; unsettled for raw")
    with pytest.raises(ValueError, match="primary rule"):
        combine("C01", _rules(SETTLED), "primary", primary="nosuch")


def _batch_norm_records(bn_drop, none_drop, norm_layers="conv_dense"):
    """acc at batch 32 and 2 per seed for BN (one norm_layers value) and the no-norm control."""
    rows = []
    for norm, drops, layers in (("bn", bn_drop, norm_layers), ("none", none_drop, "conv_dense")):
        for seed, drop in enumerate(drops):
            rows += [{"seed": seed, "norm": norm, "model.norm_layers": layers, "train.batch_size": 32, "acc": 0.85,
                      "status": "ok"},
                     {"seed": seed, "norm": norm, "model.norm_layers": layers, "train.batch_size": 2,
                      "acc": 0.85 - drop, "status": "ok"}]
    return pd.DataFrame(rows)


BASELINE_RULE = {"claim": "C11", "metric": "acc", "where": {"norm": "bn"},
                 "contrast": {"factor": "train.batch_size", "a": 32, "b": 2},
                 "baseline": {"norm": "none", "model.norm_layers": "conv_dense"},
                 "compare": ">", "threshold": 0.01, "by": "model.norm_layers"}


@pytest.mark.parametrize("bn_drop,none_drop,verdict", [
    ([0.20, 0.21, 0.19], [-0.04, -0.05, -0.04], "reproduced"),   # BN drops 20 points, no norm gains 4
    ([-0.045, -0.05, -0.045], [-0.04, -0.05, -0.04], "not reproduced"),  # BN changes like the control
    ([0.10, -0.05, 0.01], [-0.04, -0.04, -0.04], "inconclusive"),
])
def test_baseline_subtracts_the_control_contrast_by_seed(bn_drop, none_drop, verdict):
    for layers in ("conv_dense", "conv"):  # the control is the no-norm model whatever BN's layers
        v = evaluate(_batch_norm_records(bn_drop, none_drop, layers), BASELINE_RULE)
        assert v.verdict == verdict and [g.label for g in v.groups] == [f"model.norm_layers={layers}"]
        assert math.isclose(v.key.mean, np.mean(bn_drop) - np.mean(none_drop))
    assert "minus the same with norm=none" in describe(BASELINE_RULE)
    # the control's own drop alone would say the opposite of the raw BN contrast in the first case
    raw = evaluate(_batch_norm_records([0.03] * 3, [0.04, 0.05, 0.04]), {**BASELINE_RULE, "baseline": None})
    assert raw.verdict == "reproduced"
    assert evaluate(_batch_norm_records([0.03] * 3, [0.04, 0.05, 0.04]), BASELINE_RULE).verdict == "not reproduced"


def test_baseline_matches_by_factors_it_does_not_name():
    df = pd.concat([_batch_norm_records([0.2] * 3, [0.0, 0.01, 0.0]).assign(opt="adam"),
                    _batch_norm_records([0.2] * 3, [0.2, 0.201, 0.2]).assign(opt="sgd")])
    v = evaluate(df, {**BASELINE_RULE, "by": "opt"})
    assert v.verdict == "depends on opt" and v.detail.startswith("holds for adam; fails for sgd")


@pytest.mark.parametrize("groups,plain,required", [
    ({10: SETTLED, 30: SETTLED}, "reproduced", "reproduced"),
    ({10: SETTLED, 30: AGAINST}, "depends on train.batches", "not reproduced"),  # one B against "for every B"
    ({10: SETTLED, 30: UNSETTLED}, "depends on train.batches", "inconclusive"),
    ({10: AGAINST, 30: UNSETTLED}, "depends on train.batches", "not reproduced"),
])
def test_require_all_one_failing_group_decides(groups, plain, required):
    df = records(groups, factor="train.batches")
    assert evaluate(df, {**RULE, "by": "train.batches"}).verdict == plain
    v = evaluate(df, {**RULE, "by": "train.batches", "require": "all"})
    assert v.verdict == required and "every group must hold" in describe({**RULE, "by": "x", "require": "all"})


def test_precondition_rule_gates_the_claim():
    gate = {"claim": "C08", "metric": "stat_converged", "compare": ">", "threshold": 0.5, "role": "precondition"}
    conv = lambda v: pd.DataFrame({"seed": [0, 1, 2], "stat_converged": v, "status": "ok"})  # noqa: E731
    evidence = _rules(SETTLED)
    met = evaluate(conv([1.0, 1.0, 1.0]), gate, "C08.9")
    c = combine("C08", [*evidence, met])
    assert met.role == "precondition" and c.verdict == "reproduced" and c.deciding.label == "C01.1"
    unmet = evaluate(conv([0.0, 0.0, 0.0]), gate, "C08.9")
    c = combine("C08", [*evidence, unmet])
    assert c.verdict == "precondition not met" and c.deciding is unmet and "C08.9 not reproduced" in c.detail
    unsure = combine("C08", [*_rules(AGAINST), evaluate(conv([1.0, 0.0, 1.0]), gate, "C08.9")])
    # an unsettled precondition does not let evidence decide, nor does it say the precondition failed
    assert unsure.verdict == "inconclusive" and "C08.9 inconclusive" in unsure.detail
    assert describe(gate).startswith("precondition of the claim")


def test_malformed_extensions_fail_with_the_rule_named():
    with pytest.raises(ValueError, match="baseline needs a contrast"):
        evaluate(records({0.99: SETTLED}), {**RULE, "baseline": {"norm": "none"}})
    with pytest.raises(ValueError, match="require must be 'all'"):
        evaluate(records({0.99: SETTLED}), {**RULE, "by": "bn.momentum", "require": "any"})
    with pytest.raises(ValueError, match="require: all needs `by`"):
        evaluate(records({0.99: SETTLED}), {**RULE, "require": "all"})
    with pytest.raises(ValueError, match="role must be"):
        evaluate(records({0.99: SETTLED}), {**RULE, "role": "gate"})


def test_margin_around_a_nonzero_threshold_never_overrides_a_clear_ci():
    """Audit: a CI above 0.02 but inside 0.02 +- 0.01 clears the claim's threshold: reproduced, not `no effect`."""
    rule = {"claim": "R2", "metric": "gain", "compare": ">", "threshold": 0.02, "margin": 0.01}
    clear = records({5: [0.026, 0.027, 0.0265]}, metric="gain")
    v = evaluate(clear, rule)
    assert v.verdict == "reproduced" and v.key.support > 0
    assert evaluate(clear, {**rule, "by": "bn.momentum", "expect": {5: "fails"}}).verdict == "not reproduced"
    below = records({5: [0.015, 0.016, 0.0155]}, metric="gain")  # not clear, inside the band: no effect
    assert evaluate(below, rule).verdict == "not reproduced"


def test_metric_not_computable_says_so():
    df = records({0.99: SETTLED})
    v = evaluate(df, {**RULE, "metric": "no_such_column"})
    assert v.verdict == "inconclusive" and v.detail == "metric no_such_column not computable from the records"
    v = evaluate(df.assign(gap_test=np.nan), RULE)
    assert v.verdict == "inconclusive" and v.detail == "metric gap_test not computable from the records"


def test_both_censored_seeds_give_no_paired_difference():
    """C13: steps to a loss, censored at 320 when never reached; a seed where neither arm got there tells nothing."""
    rows = []
    for seed, (bn, none) in enumerate([(40, 100), (60, 120), (320, 320), (320, 320), (50, 140)]):
        for norm, steps in (("bn", bn), ("none", none)):
            rows.append({"seed": seed, "norm": norm, "steps": steps, "reached": float(steps < 320), "status": "ok"})
    df = pd.DataFrame(rows)
    rule = {"claim": "C13", "metric": "steps", "contrast": {"factor": "norm", "a": "bn", "b": "none"},
            "compare": "<", "threshold": 0}
    assert evaluate(df, rule).key.n_seeds == 5  # the censored seeds counted as "no difference"
    v = evaluate(df, {**rule, "reached": "reached"})
    assert v.key.n_seeds == 3 and math.isclose(v.key.mean, -70.0) and v.verdict == "reproduced"
    one_censored = df.copy()
    one_censored.loc[(one_censored.seed == 2) & (one_censored.norm == "bn"), ["steps", "reached"]] = [100, 1.0]
    assert evaluate(one_censored, {**rule, "reached": "reached"}).key.n_seeds == 4  # censored at 320: informative
    with pytest.raises(ValueError, match="reached .* needs a contrast"):
        evaluate(df, {**RULE, "reached": "reached"})


def test_a_verdict_on_fewer_than_five_seeds_says_so():
    assert "rests on 3 seeds; CLAIMS.md asks for 5" in evaluate(records({0.99: SETTLED}), RULE).detail
    five = records({0.99: SETTLED + [0.3, 0.31]}, seeds=range(5))
    assert evaluate(five, RULE).detail == ""
