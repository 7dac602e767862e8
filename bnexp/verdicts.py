"""Claim rules -> verdicts with 95% confidence intervals over seeds.

A rule is data in a scenario config, written before the sweep runs:

    - claim: C01
      says: inference accuracy falls far below batch-statistics accuracy   # one line, for the report
      metric: gap_test                  # a record column, or a pandas expression over columns
      where: {bn.momentum: 0.99, train.batches: [10, 30]}   # rows the rule looks at
      contrast: {factor: norm, a: bn, b: none}    # optional: metric(a) - metric(b), paired by seed
      compare: ">"                      # the claim holds if the mean is > (or <) the threshold ...
      threshold: 0.05                   # ... and the 95% CI lies entirely on that side
      by: data.scaling                  # optional: judge each value apart; mixed outcomes -> depends

Per seed the metric is averaged over the selected rows (so every seed counts once); the seeds' means
give the mean and a Student-t 95% CI. Verdicts: `reproduced` (CI entirely on the claim's side),
`not reproduced` (CI entirely on the other side), `inconclusive` (CI straddles the threshold, or fewer
than `MIN_SEEDS` seeds), `depends: ...` (with `by`, some groups reproduced and some not); with `by`,
an inconclusive verdict lists which groups were settled which way.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

MIN_SEEDS = 3
T95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228,
       15: 2.131, 20: 2.086, 30: 2.042}


def t95(dof: int) -> float:
    """Two-sided 95% Student-t quantile (table; the next lower dof is conservative)."""
    if dof <= 0:
        return math.inf
    return T95[max(k for k in T95 if k <= dof)] if dof <= 30 else 1.96


def mean_ci(values) -> tuple[float, float, float]:
    """Mean and 95% CI (t interval) of independent values; (nan, nan, nan) when empty."""
    v = np.asarray([x for x in values if x is not None and np.isfinite(x)], float)
    if len(v) == 0:
        return math.nan, math.nan, math.nan
    m = float(v.mean())
    if len(v) == 1:
        return m, -math.inf, math.inf
    half = t95(len(v) - 1) * float(v.std(ddof=1)) / math.sqrt(len(v))
    return m, m - half, m + half


@dataclass
class Verdict:
    claim: str
    verdict: str
    mean: float = math.nan
    lo: float = math.nan
    hi: float = math.nan
    n_seeds: int = 0
    rule: str = ""
    says: str = ""
    groups: dict = field(default_factory=dict)  # by-value -> Verdict, when `by` is used

    def number(self, digits: int = 3) -> str:
        if not np.isfinite(self.mean):
            return "n/a"
        return f"{self.mean:.{digits}f} [{self.lo:.{digits}f}, {self.hi:.{digits}f}]"


def describe(rule: dict) -> str:
    """The rule in one line, printed next to the numbers."""
    metric = rule["metric"]
    if rule.get("contrast"):
        c = rule["contrast"]
        metric = f"{metric}({c['factor']}={c['a']}) - {metric}({c['factor']}={c['b']})"
    where = ", ".join(f"{k}={v}" for k, v in (rule.get("where") or {}).items())
    text = f"mean over seeds of {metric} {rule['compare']} {rule['threshold']}, 95% CI excluding it"
    if where:
        text += f"; where {where}"
    if rule.get("by"):
        text += f"; judged per {rule['by']}"
    return text


def _select(df: pd.DataFrame, where: dict | None) -> pd.DataFrame:
    if "status" in df:
        df = df[df["status"] == "ok"]
    for key, value in (where or {}).items():
        if key not in df:
            return df.iloc[0:0]
        values = value if isinstance(value, (list, tuple)) else [value]
        mask = df[key].isin(values) if not any(v is None for v in values) else df[key].isna() | df[key].isin(values)
        df = df[mask]
    return df


def _metric(df: pd.DataFrame, expr: str) -> pd.Series:
    """A column, or a pandas expression over columns; all-NaN (so: inconclusive) if neither exists."""
    if expr in df:
        return pd.to_numeric(df[expr], errors="coerce")
    try:
        return pd.to_numeric(df.eval(expr), errors="coerce")
    except Exception:
        return pd.Series(np.nan, index=df.index)


def per_seed(df: pd.DataFrame, rule: dict) -> pd.Series:
    """One value per seed: the metric averaged over the rule's rows (a paired difference for contrasts)."""
    rows = _select(df, rule.get("where"))
    if rows.empty:
        return pd.Series(dtype=float)
    contrast = rule.get("contrast")
    if not contrast:
        return _metric(rows, rule["metric"]).groupby(rows["seed"]).mean().dropna()
    factor = contrast["factor"]
    if factor not in rows:
        return pd.Series(dtype=float)
    a = rows[rows[factor] == contrast["a"]]
    b = rows[rows[factor] == contrast["b"]]
    ma = _metric(a, rule["metric"]).groupby(a["seed"]).mean() if not a.empty else pd.Series(dtype=float)
    mb = _metric(b, rule["metric"]).groupby(b["seed"]).mean() if not b.empty else pd.Series(dtype=float)
    return (ma - mb).dropna()


def _judge(values: pd.Series, rule: dict) -> tuple[str, float, float, float]:
    mean, lo, hi = mean_ci(values)
    if len(values) < MIN_SEEDS or not np.isfinite(mean):
        return "inconclusive", mean, lo, hi
    t = float(rule["threshold"])
    above, below = lo > t, hi < t
    if rule["compare"] == ">":
        return ("reproduced" if above else "not reproduced" if below else "inconclusive"), mean, lo, hi
    if rule["compare"] == "<":
        return ("reproduced" if below else "not reproduced" if above else "inconclusive"), mean, lo, hi
    raise ValueError(f"rule for {rule.get('claim')}: compare must be '>' or '<', got {rule['compare']!r}")


def evaluate(df: pd.DataFrame, rule: dict) -> Verdict:
    """The verdict of one rule on the records of its scenario."""
    out = Verdict(rule["claim"], "inconclusive", rule=describe(rule), says=rule.get("says", ""))
    by = rule.get("by")
    if not by:
        values = per_seed(df, rule)
        out.verdict, out.mean, out.lo, out.hi = _judge(values, rule)
        out.n_seeds = len(values)
        return out
    if by not in df:
        return out
    named = (rule.get("where") or {}).get(by)  # `by` splits the rows `where` selected, never widens them
    named = None if named is None else named if isinstance(named, (list, tuple)) else [named]
    for value in sorted(df[by].dropna().unique(), key=str):
        if named is not None and value not in named:
            continue
        sub_rule = {**rule, "by": None, "where": {**(rule.get("where") or {}), by: value}}
        out.groups[value] = evaluate(df, sub_rule)
    kinds = {g.verdict for g in out.groups.values()}
    if len(kinds) == 1:
        out.verdict = kinds.pop()
    elif "reproduced" in kinds and "not reproduced" in kinds:
        yes = [str(v) for v, g in out.groups.items() if g.verdict == "reproduced"]
        out.verdict = f"depends: reproduced only for {by} in {{{', '.join(yes)}}}"
    else:  # settled for some values, unsettled for others: say which
        parts = [f"{kind} for {by} in {{{', '.join(str(v) for v, g in out.groups.items() if g.verdict == kind)}}}"
                 for kind in ("reproduced", "not reproduced", "inconclusive") if kind in kinds]
        out.verdict = f"inconclusive ({'; '.join(parts)})"
    whole = per_seed(df, {**rule, "by": None})
    out.mean, out.lo, out.hi = mean_ci(whole)
    out.n_seeds = len(whole)
    return out


def evaluate_all(df: pd.DataFrame, rules: list[dict]) -> list[Verdict]:
    return [evaluate(df, r) for r in rules]
