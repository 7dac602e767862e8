"""bnexp.values: one meaning of a factor value for verdicts, tables and figures (issue #30: `where: 1` used to
select "1" in a figure but not in a verdict; likewise None vs "null" and True vs "true")."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from bnexp import figures, values, verdicts

MIXED = pd.Series([1, "1", 1.0, None, "null", float("nan"), True, "true", False, "false", "3.10", 3.1, "exp"],
                  dtype=object)


@pytest.mark.parametrize("where, rows", [
    (1, [0, 1, 2]),            # a number and the text that reads as it
    (None, [3, 4, 5]),         # null: None, NaN and "null"
    (True, [6, 7]),            # true is not 1
    ([False], [8, 9]),
    ("3.10", [10]),            # a version string is not the number 3.1
    (3.1, [11]),
    (["exp", 1], [0, 1, 2, 12]),
])
def test_verdicts_and_figures_select_the_same_rows(where, rows):
    df = pd.DataFrame({"f": MIXED, "status": "ok", "seed": 0})
    assert values.select(df, {"f": where}).index.tolist() == rows
    assert verdicts._select(df, {"f": where}).index.tolist() == rows
    assert figures.select(df, {"f": where}).index.tolist() == rows


def test_labels_are_one_per_value_and_in_one_order():
    assert [values.value_label(v) for v in (None, np.nan, False, True, 2, 2.0, 0.001, "1", "null", "keras3")] == [
        "null", "null", "false", "true", "2", "2", "0.001", "1", "null", "keras3"]
    levels = [values.value_label(v) for v in figures.levels(pd.Series([128, 2, None, True, False, 32, "exp"]))]
    by_label = sorted(["128", "2", "null", "true", "false", "32", "exp"], key=values.sort_key)
    assert levels == by_label == ["2", "32", "128", "exp", "false", "null", "true"]


def test_one_t_interval_for_verdicts_figures_and_tables():
    seeds = [0.1, 0.12, 0.11, 0.15, 0.13]
    half = stats.t.ppf(0.975, 4) * np.std(seeds, ddof=1) / math.sqrt(5)
    m, lo, hi = verdicts.mean_ci(seeds)
    assert (m, hi - m) == pytest.approx((np.mean(seeds), half))
    assert figures.mean_ci(seeds) == pytest.approx((m, half))
    assert verdicts.mean_ci([0.3, None, float("nan")]) == (0.3, -math.inf, math.inf)  # one value: no interval
    assert figures.mean_ci([0.3])[0] == 0.3 and math.isnan(figures.mean_ci([0.3])[1])  # no bar drawn
    assert all(math.isnan(x) for x in verdicts.mean_ci([]))
