"""Verdict rules on synthetic records: every outcome, contrasts, per-factor `depends`, too few seeds."""

import math

import numpy as np
import pandas as pd
import pytest

from bnexp.verdicts import describe, evaluate, mean_ci


def records(values_by_group: dict, seeds=(0, 1, 2), factor="bn.momentum", metric="gap_test"):
    rows = []
    for group, values in values_by_group.items():
        for seed, v in zip(seeds, values):
            rows.append({"seed": seed, factor: group, metric: v, "status": "ok"})
    return pd.DataFrame(rows)


RULE = {"claim": "C01", "metric": "gap_test", "compare": ">", "threshold": 0.05}


def test_mean_ci_matches_the_t_interval():
    m, lo, hi = mean_ci([1.0, 2.0, 3.0])
    assert m == 2.0 and math.isclose(hi - m, 4.303 * 1.0 / math.sqrt(3), rel_tol=1e-6)
    assert mean_ci([5.0])[1] == -math.inf


@pytest.mark.parametrize("values,verdict", [
    ([0.30, 0.32, 0.31], "reproduced"),
    ([0.00, 0.01, -0.01], "not reproduced"),
    ([0.00, 0.10, 0.05], "inconclusive"),  # CI straddles the threshold
])
def test_each_outcome(values, verdict):
    v = evaluate(records({0.99: values}), RULE)
    assert v.verdict == verdict and v.n_seeds == 3
    assert v.lo <= v.mean <= v.hi


def test_less_than_rule():
    v = evaluate(records({0.99: [0.0, 0.001, 0.002]}), {**RULE, "compare": "<", "threshold": 0.01})
    assert v.verdict == "reproduced"


def test_fewer_than_three_seeds_is_inconclusive():
    v = evaluate(records({0.99: [0.3, 0.31]}, seeds=(0, 1)), RULE)
    assert v.verdict == "inconclusive"


def test_where_selects_rows_and_seeds_count_once():
    df = records({0.5: [-0.2, -0.2, -0.2], 0.99: [0.3, 0.3, 0.3]})
    df = pd.concat([df, df.assign(gap_test=df["gap_test"] + 0.1)])  # two rows per seed and group
    v = evaluate(df, {**RULE, "where": {"bn.momentum": 0.99}})
    assert v.verdict == "reproduced" and v.n_seeds == 3 and math.isclose(v.mean, 0.35)
    assert evaluate(df, {**RULE, "where": {"bn.momentum": 0.5}}).verdict == "not reproduced"


def test_contrast_is_paired_by_seed():
    df = records({"bn": [0.90, 0.80, 0.85], "none": [0.70, 0.60, 0.66]}, factor="norm", metric="acc")
    rule = {"claim": "C13", "metric": "acc", "contrast": {"factor": "norm", "a": "bn", "b": "none"},
            "compare": ">", "threshold": 0.0}
    v = evaluate(df, rule)
    assert v.verdict == "reproduced" and math.isclose(v.mean, np.mean([0.2, 0.2, 0.19]))
    assert "acc(norm=bn) - acc(norm=none)" in describe(rule)


def test_by_factor_gives_depends_with_the_condition():
    df = records({"unit": [0.3, 0.31, 0.32], "standard": [0.0, 0.001, -0.001]}, factor="data.scaling")
    v = evaluate(df, {**RULE, "by": "data.scaling"})
    assert v.verdict == "depends: reproduced only for data.scaling in {unit}"
    assert v.groups["standard"].verdict == "not reproduced"


def test_failed_runs_are_ignored_and_missing_metric_is_inconclusive():
    df = records({0.99: [0.3, 0.31, 0.32]})
    df.loc[0, "status"] = "failed"
    assert evaluate(df, RULE).n_seeds == 2
    assert evaluate(df, {**RULE, "where": {"nosuch": 1}}).verdict == "inconclusive"


def test_expression_metrics():
    df = pd.DataFrame({"seed": [0, 1, 2], "a": [0.9, 0.9, 0.9], "b": [0.5, 0.52, 0.51], "status": "ok"})
    v = evaluate(df, {"claim": "X", "metric": "a - b", "compare": ">", "threshold": 0.2})
    assert v.verdict == "reproduced"


def test_by_factor_partly_settled_says_which_groups():
    df = records({"unit": [0.0, 0.001, -0.001], "raw": [0.0, 0.1, 0.05]}, factor="data.scaling")
    v = evaluate(df, {**RULE, "by": "data.scaling"})
    assert v.verdict == "inconclusive (not reproduced for data.scaling in {unit}; inconclusive for data.scaling in {raw})"
