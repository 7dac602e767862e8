"""Verdict rules on synthetic records: every outcome, contrasts, groups (settled + unsettled, predicted splits),
equivalence margins, preconditions, null vs false, and how rules combine into a claim's verdict."""

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from bnexp.errors import UserError
from bnexp.verdicts import combine, describe, evaluate, labels, mean_ci, t95

RULE = {"claim": "C01", "metric": "gap_test", "compare": ">", "threshold": 0.05}
SETTLED = [0.30, 0.32, 0.31, 0.30, 0.31]      # far above 0.05
AGAINST = [0.00, 0.01, -0.01, 0.00, 0.01]     # far below 0.05
UNSETTLED = [0.00, 0.10, 0.05, 0.00, 0.10]    # CI straddles 0.05
FIVE = tuple(range(5))                         # CLAIMS.md's seed count, the default MIN_SEEDS


def records(values_by_group: dict, seeds=FIVE, factor="bn.momentum", metric="gap_test"):
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
    assert v.verdict == verdict and v.groups[0].n_seeds == 5
    assert v.key.lo <= v.key.mean <= v.key.hi


def test_less_than_rule_and_strict_claims():
    below = {**RULE, "compare": "<", "threshold": 0.01}
    assert evaluate(records({0.99: [0.0, 0.001, 0.002, 0.0, 0.001]}), below).verdict == "reproduced"
    # a claim of "> 0" measured exactly 0 in every seed is not reproduced (not left inconclusive)
    assert evaluate(records({0.99: [0.0] * 5}), {**RULE, "threshold": 0}).verdict == "not reproduced"


def test_min_seeds_is_five_and_configurable():
    four = records({0.99: SETTLED[:4]}, seeds=FIVE[:4])
    assert evaluate(four, RULE).verdict == "inconclusive"  # CLAIMS.md: at least 5 seeds for a verdict
    two = records({0.99: [0.3, 0.31]}, seeds=(0, 1))
    assert evaluate(two, {**RULE, "min_seeds": 2}).verdict == "reproduced"


def test_where_selects_rows_and_seeds_count_once():
    df = records({0.5: [-0.2] * 5, 0.99: [0.3] * 5})
    df = pd.concat([df, df.assign(gap_test=df["gap_test"] + 0.1)])  # two rows per seed and group
    v = evaluate(df, {**RULE, "where": {"bn.momentum": 0.99}})
    assert v.verdict == "reproduced" and v.key.n_seeds == 5 and math.isclose(v.key.mean, 0.35)
    assert evaluate(df, {**RULE, "where": {"bn.momentum": 0.5}}).verdict == "not reproduced"


def test_contrast_is_paired_by_seed():
    df = records({"bn": [0.90, 0.80, 0.85, 0.88, 0.82], "none": [0.70, 0.60, 0.66, 0.68, 0.62]}, factor="norm",
                 metric="acc")
    rule = {"claim": "C13", "metric": "acc", "contrast": {"factor": "norm", "a": "bn", "b": "none"},
            "compare": ">", "threshold": 0.0}
    v = evaluate(df, rule)
    assert v.verdict == "reproduced" and math.isclose(v.key.mean, np.mean([0.2, 0.2, 0.19, 0.2, 0.2]))
    assert "acc(norm=bn) - acc(norm=none)" in describe(rule)


def test_holds_beside_unsettled_only_is_inconclusive_not_depends():
    """CLAIMS.md: "depends" only where one settled group holds and another fails; the rest is listed."""
    v = evaluate(records({"unit": SETTLED, "raw": UNSETTLED}, factor="data.scaling"), {**RULE, "by": "data.scaling"})
    assert v.verdict == "inconclusive" and v.detail == "holds for unit; unsettled for raw"
    v = evaluate(records({"unit": AGAINST, "raw": UNSETTLED}, factor="data.scaling"), {**RULE, "by": "data.scaling"})
    assert v.verdict == "inconclusive" and v.detail == "fails for unit; unsettled for raw"


def test_depends_line_keeps_the_unsettled_groups():
    df = records({"bn": SETTLED, "ln": AGAINST, "gn": UNSETTLED}, factor="norm")
    v = evaluate(df, {**RULE, "by": "norm"})
    assert v.verdict == "depends on norm" and v.detail.startswith("holds for bn; fails for ln; unsettled for gn")


def test_key_number_is_the_worst_group_never_a_pool():
    df = records({"a": [0.9] * 5, "b": [0.2, 0.25, 0.3, 0.25, 0.25]}, factor="variant")
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
            rows.append(records({b: SETTLED if (b, s) != (100, "raw") else AGAINST}, factor="train.batches")
                        .assign(**{"data.scaling": s}))
    v = evaluate(pd.concat(rows), {**RULE, "by": ["train.batches", "data.scaling"]})
    assert [g.label for g in v.groups][:2] == ["train.batches=10 & data.scaling=raw",
                                               "train.batches=10 & data.scaling=unit"]
    assert [g.label.split(" & ")[0] for g in v.groups][::2] == ["train.batches=10", "train.batches=30",
                                                                "train.batches=100"]
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
    ([0.030, 0.032, 0.031, 0.030, 0.032], "reproduced"),     # CI clear of 0 + 0.005
    ([0.001, -0.001, 0.0005, 0.0, 0.001], "not reproduced"),  # CI entirely short of 0.005: no effect that counts
    ([0.003, 0.004, 0.0035, 0.003, 0.004], "not reproduced"),  # consistent but below the margin: a one-image effect
    ([0.004, 0.007, 0.0055, 0.004, 0.007], "inconclusive"),   # straddles 0.005
    ([-0.02, 0.03, 0.0, -0.02, 0.03], "inconclusive"),
])
def test_margin_is_the_smallest_effect_that_counts(values, verdict):
    """Issue #26: a threshold-0 rule must clear threshold + margin on the claim's side, so a consistent one-image
    effect is not reproduced; a CI entirely short of threshold + margin settles 'no effect'."""
    rule = {"claim": "C12", "metric": "gain", "compare": ">", "threshold": 0.0, "margin": 0.005}
    assert evaluate(records({2: values}, metric="gain"), rule).verdict == verdict
    less = {**rule, "compare": "<"}  # mirrored: the claim's side is below -0.005
    assert evaluate(records({2: [-v for v in values]}, metric="gain"), less).verdict == verdict
    assert "> 0.0 + margin 0.005, 95% CI clear of it" in describe(rule)


def test_precondition_not_met_groups_split_the_claim():
    """Issue #26: where a group's premise is false (the framework ignores the flag) the headline says so: a group
    that holds beside one whose precondition is unmet is a split, not a reproduction with small print."""
    df = records({"keras3": SETTLED, "tf_keras": AGAINST}, factor="semantics").assign(flag_honoured=True)
    df.loc[df["semantics"] == "tf_keras", "flag_honoured"] = False
    rule = {**RULE, "by": "semantics", "precondition": "flag_honoured"}
    v = evaluate(df, rule)
    assert [g.verdict for g in v.groups] == ["reproduced", "precondition not met"]
    assert v.verdict == "depends on semantics" and v.detail == "holds for keras3; precondition not met for tf_keras"
    assert v.excluded == 5
    failing = df.assign(gap_test=AGAINST * 2)  # fails where the premise holds, premise false elsewhere: holds nowhere
    assert evaluate(failing, rule).verdict == "not reproduced"
    df["flag_honoured"] = 0
    assert evaluate(df, rule).verdict == "precondition not met"
    with pytest.raises(ValueError, match="precondition column 'flag_honoured' is not in the records"):
        evaluate(df.drop(columns="flag_honoured"), rule)  # a missing column is a bug, not a verdict
    mixed = records({"keras3": SETTLED + [-5.0]}, seeds=range(6), factor="semantics")
    mixed["flag_honoured"] = [1, 1, 1, 1, 1, 0]  # the one row whose flag was ignored would flip the verdict
    assert evaluate(mixed, {**RULE, "precondition": "flag_honoured"}).verdict == "reproduced"


def test_precondition_of_one_contrast_arm_is_judged_per_run():
    """C08 (issue #26): only the attached arm must have converged; a seed whose attached run did not converge
    gives no value, instead of a 0/1 rule over seeds vetoing the claim."""
    rows = []
    for seed in range(6):
        rows += [{"seed": seed, "attach": True, "acc": 0.85, "conv": float(seed != 5), "status": "ok"},
                 {"seed": seed, "attach": False, "acc": 0.30, "conv": 0.0, "status": "ok"}]
    df = pd.DataFrame(rows)
    df.loc[(df.seed == 5) & df.attach, "acc"] = 0.2  # the unconverged seed would pull the contrast below 0
    rule = {"claim": "C08", "metric": "acc", "contrast": {"factor": "attach", "a": True, "b": False},
            "compare": ">", "threshold": 0.05, "precondition": "conv", "precondition_arm": "a"}
    v = evaluate(df, rule)
    assert v.verdict == "reproduced" and v.key.n_seeds == 5 and math.isclose(v.key.mean, 0.55)
    assert "(in the attach=true arm)" in describe(rule)
    assert evaluate(df.assign(conv=0.0), rule).verdict == "precondition not met"
    with pytest.raises(UserError, match="precondition_arm needs a contrast"):
        evaluate(df, {**RULE, "precondition": "conv", "precondition_arm": "a"})


def test_null_false_and_true_are_three_values():
    rows = []
    for value, values in ((None, SETTLED), (False, AGAINST), (True, UNSETTLED)):
        rows += [{"seed": s, "base.training": value, "gap_test": x, "status": "ok"} for s, x in zip(FIVE, values)]
    df = pd.DataFrame(rows)
    assert list(labels(df["base.training"]).unique()) == ["null", "false", "true"]
    assert labels(df["base.training"].astype(object)).nunique() == 3
    assert evaluate(df, {**RULE, "where": {"base.training": None}}).verdict == "reproduced"
    assert evaluate(df, {**RULE, "where": {"base.training": False}}).verdict == "not reproduced"
    v = evaluate(df, {**RULE, "by": "base.training"})
    assert [g.label for g in v.groups] == ["base.training=false", "base.training=null", "base.training=true"]
    ints = pd.DataFrame([{"seed": s, "flag": 1, "gap_test": 0.3, "status": "ok"} for s in FIVE])
    assert evaluate(ints, {**RULE, "where": {"flag": True}}).verdict == "inconclusive"  # 1 is not true


def test_failed_runs_are_ignored_and_missing_metric_is_inconclusive():
    df = records({0.99: SETTLED})
    df.loc[0, "status"] = "failed"
    assert evaluate(df, RULE).key.n_seeds == 4
    assert evaluate(df, {**RULE, "where": {"nosuch": 1}}).verdict == "inconclusive"


def test_expression_metrics():
    df = pd.DataFrame({"seed": FIVE, "a": [0.9] * 5, "b": [0.5, 0.52, 0.51, 0.5, 0.52], "status": "ok"})
    assert evaluate(df, {"claim": "X", "metric": "a - b", "compare": ">", "threshold": 0.2}).verdict == "reproduced"


def test_malformed_rules_fail_with_the_rule_named():
    with pytest.raises(UserError, match="compare"):
        evaluate(records({0.99: SETTLED}), {**RULE, "compare": ">="})
    with pytest.raises(UserError, match="expect needs exactly one `by`"):
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
    split = evaluate(records({"unit": SETTLED, "raw": AGAINST}, factor="data.scaling"), {**RULE, "by": "data.scaling"},
                     "C01.9")
    c = combine("C01", [*_rules(SETTLED), split])
    assert c.verdict == "depends on data.scaling" and c.detail.startswith("C01.9: holds for unit; fails for raw")
    # a rule that depends beside an unsettled one shows the claim failing somewhere, holding nowhere yet
    assert combine("C01", [*_rules(UNSETTLED), split]).verdict == "inconclusive"
    with pytest.raises(ValueError, match="primary rule"):
        combine("C01", _rules(SETTLED), "primary", primary="nosuch")


def _aspect(values, aspect, label):
    r = evaluate(records({0.99: values}), {**RULE, "aspect": aspect}, label)
    assert r.aspect == aspect
    return r


def test_aspects_that_disagree_make_the_claim_depend_on_them():
    """C16 (issue #26): a claim with several entry points holds where one of them shows it; the verdict names them."""
    rules = [_aspect(AGAINST, "predict", "C16.1"), _aspect(AGAINST, "predict", "C16.2"),
             _aspect(SETTLED, "direct call", "C16.3")]
    c = combine("C16", rules, split="entry point")
    assert c.verdict == "depends on entry point"
    assert c.detail == "predict: not reproduced (C16.1); direct call: reproduced (C16.3)"
    assert combine("C16", rules).verdict == "not reproduced"  # without a declared split: every rule must hold
    agree = [_aspect(SETTLED, "predict", "C16.1"), _aspect(SETTLED, "direct call", "C16.3")]
    assert combine("C16", agree, split="entry point").verdict == "reproduced"
    unsure = [_aspect(SETTLED, "predict", "C16.1"), _aspect(UNSETTLED, "direct call", "C16.3")]
    assert combine("C16", unsure, split="entry point").verdict == "inconclusive"
    nowhere = [_aspect(AGAINST, "predict", "C16.1"), _aspect(UNSETTLED, "direct call", "C16.3")]
    assert combine("C16", nowhere, split="entry point").verdict == "inconclusive"
    split = evaluate(records({"a": SETTLED, "b": AGAINST}, factor="x"), {**RULE, "by": "x", "aspect": "lr"}, "C13.3")
    # a split inside one part beside unsettled parts: nothing shows the parts disagree
    assert combine("C13", [_aspect(UNSETTLED, "loss", "C13.1"), split], split="part").verdict == "inconclusive"
    assert combine("C13", [_aspect(SETTLED, "loss", "C13.1"), split], split="part").verdict == "depends on x (lr)"
    assert combine("C16", [_aspect(AGAINST, "predict", "C16.1"), split], split="entry point").verdict == \
        "depends on entry point"


def test_a_premise_judged_per_group_gates_only_its_groups():
    """R2 / C13 (issue #26): a premise is a per-group precondition, not evidence: where the shift costs nothing,
    the remedy's group is `precondition not met`, and the claim holds where the premise does."""
    premise = {**RULE, "id": "hurts", "role": "precondition", "by": "kind"}
    gate = evaluate(records({"blur": SETTLED, "inversion": AGAINST, "noise": UNSETTLED}, factor="kind"), premise,
                    "R2/hurts")
    remedy = evaluate(records({"blur": SETTLED, "inversion": AGAINST, "noise": SETTLED}, factor="kind"),
                      {**RULE, "by": "kind"}, "R2.2")
    assert remedy.verdict == "depends on kind"  # on its own, the remedy "fails" for inversion
    c = combine("R2", [gate, remedy])
    assert c.verdict == "depends on kind"  # holds for blur; inversion's premise is false; noise's unsettled
    gated = next(r for r in c.rules if r.label == "R2.2")
    assert [g.verdict for g in gated.groups] == ["reproduced", "precondition not met", "inconclusive"]
    assert gated.detail == "holds for blur; unsettled for noise; precondition not met for inversion"
    assert remedy.groups[1].verdict == "not reproduced"  # the rule itself is left as evaluated
    gate = evaluate(records({"blur": SETTLED, "inversion": AGAINST, "noise": SETTLED}, factor="kind"), premise,
                    "R2/hurts")
    c = combine("R2", [gate, remedy])
    assert c.verdict == "depends on kind" and c.detail.endswith("precondition not met for inversion")
    unsure = evaluate(records({"blur": UNSETTLED, "inversion": UNSETTLED, "noise": UNSETTLED}, factor="kind"),
                      premise, "R2/hurts")
    assert combine("R2", [unsure, remedy]).verdict == "inconclusive"


def test_depends_names_only_the_factor_that_splits():
    """Audit (issue #26): C15 'depends on semantics, base.flag_style' when flag style split nothing."""
    rows = []
    for sem, values in (("keras3", AGAINST), ("tf_keras", SETTLED)):
        for style in ("functional", "layer"):
            rows.append(records({sem: values}, factor="semantics").assign(style=style))
    v = evaluate(pd.concat(rows), {**RULE, "by": ["semantics", "style"]})
    assert v.verdict == "depends on semantics"
    assert "fails for semantics=keras3 & style=functional, semantics=keras3 & style=layer" in v.detail
    rows[3] = rows[3].assign(gap_test=AGAINST)  # now neither factor alone separates the outcomes
    assert evaluate(pd.concat(rows), {**RULE, "by": ["semantics", "style"]}).verdict == "depends on semantics, style"


def test_resolution_is_the_widest_groups_half_width():
    v = evaluate(records({"a": SETTLED, "b": UNSETTLED}, factor="variant"), {**RULE, "by": "variant"})
    half = t95(4) * np.std(UNSETTLED, ddof=1) / math.sqrt(5)
    assert math.isclose(v.resolution, half)


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
    # BN drops 20 points, no norm gains 4
    ([0.20, 0.21, 0.19, 0.20, 0.21], [-0.04, -0.05, -0.04, -0.04, -0.05], "reproduced"),
    ([-0.045, -0.05, -0.045, -0.045, -0.05], [-0.04, -0.05, -0.04, -0.04, -0.05], "not reproduced"),  # like the control
    ([0.10, -0.05, 0.01, 0.10, -0.05], [-0.04] * 5, "inconclusive"),
])
def test_baseline_subtracts_the_control_contrast_by_seed(bn_drop, none_drop, verdict):
    for layers in ("conv_dense", "conv"):  # the control is the no-norm model whatever BN's layers
        v = evaluate(_batch_norm_records(bn_drop, none_drop, layers), BASELINE_RULE)
        assert v.verdict == verdict and [g.label for g in v.groups] == [f"model.norm_layers={layers}"]
        assert math.isclose(v.key.mean, np.mean(bn_drop) - np.mean(none_drop))
    assert "minus the same with norm=none" in describe(BASELINE_RULE)
    # the control's own drop alone would say the opposite of the raw BN contrast in the first case
    raw = evaluate(_batch_norm_records([0.03] * 5, [0.04, 0.05, 0.04, 0.04, 0.05]), {**BASELINE_RULE, "baseline": None})
    assert raw.verdict == "reproduced"
    no_effect = _batch_norm_records([0.03] * 5, [0.04, 0.05, 0.04, 0.04, 0.05])
    assert evaluate(no_effect, BASELINE_RULE).verdict == "not reproduced"


def test_baseline_matches_by_factors_it_does_not_name():
    df = pd.concat([_batch_norm_records([0.2] * 5, [0.0, 0.01, 0.0, 0.0, 0.01]).assign(opt="adam"),
                    _batch_norm_records([0.2] * 5, [0.2, 0.201, 0.2, 0.2, 0.201]).assign(opt="sgd")])
    v = evaluate(df, {**BASELINE_RULE, "by": "opt"})
    assert v.verdict == "depends on opt" and v.detail.startswith("holds for adam; fails for sgd")


@pytest.mark.parametrize("groups,plain,required", [
    ({10: SETTLED, 30: SETTLED}, "reproduced", "reproduced"),
    ({10: SETTLED, 30: AGAINST}, "depends on train.batches", "not reproduced"),  # one B against "for every B"
    ({10: SETTLED, 30: UNSETTLED}, "inconclusive", "inconclusive"),
    ({10: AGAINST, 30: UNSETTLED}, "inconclusive", "not reproduced"),
])
def test_require_all_one_failing_group_decides(groups, plain, required):
    df = records(groups, factor="train.batches")
    assert evaluate(df, {**RULE, "by": "train.batches"}).verdict == plain
    v = evaluate(df, {**RULE, "by": "train.batches", "require": "all"})
    assert v.verdict == required and "every group must hold" in describe({**RULE, "by": "x", "require": "all"})


def test_precondition_rule_gates_the_claim():
    gate = {"claim": "C08", "metric": "stat_converged", "compare": ">", "threshold": 0.5, "role": "precondition"}
    conv = lambda v: pd.DataFrame({"seed": FIVE, "stat_converged": v, "status": "ok"})  # noqa: E731
    evidence = _rules(SETTLED)
    met = evaluate(conv([1.0] * 5), gate, "C08.9")
    c = combine("C08", [*evidence, met])
    assert met.role == "precondition" and c.verdict == "reproduced" and c.deciding.label == "C01.1"
    unmet = evaluate(conv([0.0] * 5), gate, "C08.9")
    c = combine("C08", [*evidence, unmet])
    assert c.verdict == "precondition not met" and c.deciding is unmet and "C08.9 not reproduced" in c.detail
    unsure = combine("C08", [*_rules(AGAINST), evaluate(conv([1.0, 0.0, 1.0, 1.0, 0.0]), gate, "C08.9")])
    # an unsettled precondition does not let evidence decide, nor does it say the precondition failed
    assert unsure.verdict == "inconclusive" and "C08.9 inconclusive" in unsure.detail
    assert describe(gate).startswith("precondition of the claim")


def test_malformed_extensions_fail_with_the_rule_named():
    with pytest.raises(UserError, match="baseline needs a contrast"):
        evaluate(records({0.99: SETTLED}), {**RULE, "baseline": {"norm": "none"}})
    with pytest.raises(UserError, match="require must be 'all'"):
        evaluate(records({0.99: SETTLED}), {**RULE, "by": "bn.momentum", "require": "any"})
    with pytest.raises(UserError, match="require: all needs `by`"):
        evaluate(records({0.99: SETTLED}), {**RULE, "require": "all"})
    with pytest.raises(UserError, match="role must be"):
        evaluate(records({0.99: SETTLED}), {**RULE, "role": "gate"})


def test_margin_adds_to_a_nonzero_threshold():
    """The margin is the smallest effect beyond the threshold: with 0.02 + 0.01 a CI must clear 0.03."""
    rule = {"claim": "R2", "metric": "gain", "compare": ">", "threshold": 0.02, "margin": 0.01}
    clear = records({5: [0.036, 0.037, 0.0365, 0.036, 0.037]}, metric="gain")
    v = evaluate(clear, rule)
    assert v.verdict == "reproduced" and v.key.support > 0
    assert evaluate(clear, {**rule, "by": "bn.momentum", "expect": {5: "fails"}}).verdict == "not reproduced"
    short = records({5: [0.026, 0.027, 0.0265, 0.026, 0.027]}, metric="gain")  # clears 0.02, not 0.03
    assert evaluate(short, rule).verdict == "not reproduced"
    assert evaluate(short, {**rule, "margin": None}).verdict == "reproduced"


def test_metric_not_computable_says_so():
    df = records({0.99: SETTLED})
    v = evaluate(df, {**RULE, "metric": "no_such_column"})
    assert v.verdict == "inconclusive" and v.detail == "metric no_such_column not computable from the records"
    v = evaluate(df.assign(gap_test=np.nan), RULE)
    assert v.verdict == "inconclusive" and v.detail == "metric gap_test not computable from the records"


def test_both_censored_seeds_give_no_paired_difference():
    """C13: steps to a loss, censored at 320 when never reached; a seed where neither arm got there tells nothing."""
    rows = []
    for seed, (bn, none) in enumerate([(40, 100), (60, 120), (320, 320), (320, 320), (50, 140), (45, 115), (55, 125)]):
        for norm, steps in (("bn", bn), ("none", none)):
            rows.append({"seed": seed, "norm": norm, "steps": steps, "reached": float(steps < 320), "status": "ok"})
    df = pd.DataFrame(rows)
    rule = {"claim": "C13", "metric": "steps", "contrast": {"factor": "norm", "a": "bn", "b": "none"},
            "compare": "<", "threshold": 0}
    assert evaluate(df, rule).key.n_seeds == 7  # the censored seeds counted as "no difference"
    v = evaluate(df, {**rule, "reached": "reached"})
    assert v.key.n_seeds == 5 and math.isclose(v.key.mean, -70.0) and v.verdict == "reproduced"
    one_censored = df.copy()
    one_censored.loc[(one_censored.seed == 2) & (one_censored.norm == "bn"), ["steps", "reached"]] = [100, 1.0]
    assert evaluate(one_censored, {**rule, "reached": "reached"}).key.n_seeds == 6  # censored at 320: informative
    with pytest.raises(UserError, match="reached .* needs a contrast"):
        evaluate(df, {**RULE, "reached": "reached"})


def test_a_verdict_on_fewer_than_five_seeds_says_so():
    three = records({0.99: SETTLED[:3]}, seeds=FIVE[:3])
    assert "rests on 3 seeds; CLAIMS.md asks for 5" in evaluate(three, {**RULE, "min_seeds": 3}).detail
    five = records({0.99: SETTLED + [0.3, 0.31]}, seeds=range(5))
    assert evaluate(five, RULE).detail == ""


def _split(holds_for, fails_for, label):
    values = {g: SETTLED for g in holds_for} | {g: AGAINST for g in fails_for}
    return evaluate(records(values, factor="x"), {**RULE, "by": "x"}, label)


def test_all_holds_in_a_group_only_where_every_rule_holds_there():
    """Audit (issue #26): rule 1 holds for a and fails for b, rule 2 the reverse: the claim holds nowhere."""
    crossed = combine("C15", [_split(["a"], ["b"], "C15.1"), _split(["b"], ["a"], "C15.2")])
    assert crossed.verdict == "not reproduced" and crossed.detail == ""  # every group fails: nothing to list
    same = combine("C15", [_split(["a"], ["b"], "C15.1"), _split(["a"], ["b"], "C15.2")])
    assert same.verdict == "depends on x" and same.detail == "holds for a; fails for b"
    assert "in the same group" in same.combine


def test_premise_matching_ignores_factor_order_and_a_premise_holding_nowhere_gates_the_claim():
    rows = pd.concat([records({"a": SETTLED, "b": SETTLED}, factor="x").assign(y=v) for v in ("u", "v")])
    evidence = evaluate(rows, {**RULE, "by": ["x", "y"]}, "R.1")
    premise = evaluate(rows.assign(gap_test=0.0), {**RULE, "by": ["y", "x"], "role": "precondition"}, "R/p")
    c = combine("R", [premise, evidence])
    assert c.verdict == "precondition not met"
    assert all(g.verdict == "precondition not met" for g in c.rules[0].groups)  # gated although [y, x] != [x, y]
    plain = evaluate(records({0.99: SETTLED}), RULE, "R.2")  # judged without `by`: no group to gate
    assert combine("R", [premise, plain], "any").verdict == "precondition not met"


def test_gating_keeps_what_a_rule_without_groups_said():
    df = records({"a": SETTLED}, factor="kind")
    premise = evaluate(df, {**RULE, "by": "kind", "role": "precondition"}, "R2/p")
    missing = evaluate(df, {**RULE, "metric": "nosuch", "by": "kind"}, "R2.9")
    gated = next(r for r in combine("R2", [premise, missing]).rules if r.label == "R2.9")
    assert gated.detail == "metric nosuch not computable from the records"
