"""Claim rules -> rule verdicts -> one verdict per claim, with 95% confidence intervals over seeds.

A rule is data in a scenario config, written before the sweep runs:

    - claim: C06
      id: batchstats                    # optional: names the rule (for `primary:`); else C06.1, C06.2, ...
      says: a frozen base normalizes with batch statistics in fit      # one line, for the report
      metric: fit_batchstats_frac       # a record column, or a pandas expression over columns
      where: {base.trainable: false, base.training: null}   # rows the rule looks at (null, false, true differ)
      contrast: {factor: norm, a: bn, b: none}    # optional: metric(a) - metric(b), paired by seed
      compare: ">"                      # the claim holds if the mean is > (or <) the threshold ...
      threshold: 0.5                    # ... and the 95% CI lies entirely on that side
      margin: 0.005                     # optional: a CI inside threshold +- margin that does not clear the
                                        #   threshold on the claim's side concludes `not reproduced`
      by: semantics                     # optional: judge each value (or combination, for a list) apart
      expect: {keras2_v1: holds, keras3: fails, tf_keras: fails}   # optional, with `by`: a predicted split
      precondition: flag_honoured       # optional: rows where this metric is not 1/true are not evidence
      baseline: {norm: none}            # optional, with contrast: minus the same contrast on the rows where
                                        #   these factors take these values (the rest of `where` kept), by seed
      require: all                      # optional, with by: one group against the prediction -> not reproduced
      reached: reached_loss             # optional, with contrast: a seed where neither arm reached the event
                                        #   (this column/expression 0 on both sides: both censored) gives no value
      role: precondition                # optional: the claim's precondition (see below), not evidence for it
      min_seeds: 3                      # optional (default MIN_SEEDS)

Per group and seed the metric is averaged over the selected rows, so every seed counts once; the
seeds' values give the mean and a Student-t 95% CI. A group is `reproduced` (CI entirely on the claim's
side), `not reproduced` (CI entirely on the other side, or inside threshold +- margin without clearing the
threshold on the claim's side: practically no effect beyond it), `inconclusive` (neither, or fewer than
min_seeds seeds) or `precondition not met` (every row failed the precondition). A rule whose metric is NaN
on every selected row is inconclusive with "metric ... not computable from the records"; a settled verdict
on fewer than CLAIM_SEEDS (5, CLAIMS.md) seeds says so in its detail. A group "holds" when it goes the
predicted way (reproduced, or not reproduced where `expect` says `fails`).

A rule's verdict: groups whose precondition was not met are listed but decide nothing (all of them:
`precondition not met`). Of the rest: `reproduced` when every group holds, `not reproduced` when every
group goes against the prediction, `inconclusive` when every group is unsettled; any other mix where at
least one group is settled is `depends on <by>`, listing every group as holds / fails / unsettled /
precondition not met; with `require: all` (a claim "for every B") or `expect` (a predicted split) such a
mix is `not reproduced` when a group fails, else `inconclusive`. Groups come from the rows the rule's
`where` selected. The rule's number is its worst group (least support for the prediction), never a pool
of groups.

A `baseline` reads a claim against a control: the per-seed value is the contrast on the rule's rows minus
the same contrast on the baseline rows (where overridden by `baseline`; a `by` factor that `baseline` does
not name is matched to the group's value), e.g. BN's accuracy drop from batch 32 to 2 minus the no-norm
model's change over the same batch sizes. Baseline rows are not filtered by `precondition`.

A claim's verdict combines its rules as its scenario config declares (`claim_text`, `combine`): `all`
(every rule must hold), `any` (one suffices) or `primary` (the named rule decides; the others are
shown as supporting evidence). Rules with `role: precondition` are not combined: if any of them is
`not reproduced` or `precondition not met`, the claim's verdict is `precondition not met` (its evidence
measured something else, e.g. moving statistics that had not converged), naming that rule; if one is merely
inconclusive (else), the claim is `inconclusive`; otherwise they are listed beside the evidence.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy import stats

MIN_SEEDS = 3      # the fewest seeds a group needs for a verdict
CLAIM_SEEDS = 5    # what CLAIMS.md asks of the reference: a verdict on fewer says so in its detail
OUTCOMES = ("reproduced", "not reproduced", "inconclusive", "precondition not met")
COMBINE = ("all", "any", "primary")
ROLES = ("evidence", "precondition")


def t95(dof: int) -> float:
    """Two-sided 95% Student-t quantile."""
    return float(stats.t.ppf(0.975, dof)) if dof > 0 else math.inf


def mean_ci(values) -> tuple[float, float, float]:
    """Mean and 95% CI (t interval) of independent values; (nan, nan, nan) when empty."""
    v = np.asarray([x for x in values if x is not None and np.isfinite(x)], float)
    if len(v) == 0:
        return math.nan, math.nan, math.nan
    m = float(v.mean())
    if len(v) == 1:
        return m, -math.inf, math.inf
    half = t_half_width(v)
    return m, m - half, m + half


def t_half_width(v: np.ndarray) -> float:
    """Half-width of the 95% Student-t interval of the mean of two or more values (figures draw it too)."""
    return t95(len(v) - 1) * float(v.std(ddof=1)) / math.sqrt(len(v))


# --- factor values: null, false and true are three values, and 1 is not true --------------------------------

def value_key(value) -> tuple:
    """A hashable key that keeps None/NaN, booleans, numbers and strings apart (True != 1, None != False)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ("null",)
    if isinstance(value, (bool, np.bool_)):
        return ("bool", bool(value))
    if isinstance(value, numbers.Number):
        return ("num", float(value))
    return ("str", str(value))


def value_label(value) -> str:
    """How a factor value is written: null, false, true, 10, 0.001, keras3."""
    kind, *rest = value_key(value)
    if kind == "null":
        return "null"
    if kind == "bool":
        return "true" if rest[0] else "false"
    if kind == "num":
        return str(int(rest[0])) if float(rest[0]).is_integer() else f"{rest[0]:g}"
    return rest[0]


def labels(series: pd.Series) -> pd.Series:
    """A factor column as labels (object dtype, never NaN): safe to group by and to count distinct values."""
    return pd.Series([value_label(v) for v in series], index=series.index, dtype=object)


def _matches(series: pd.Series, values) -> pd.Series:
    values = values if isinstance(values, (list, tuple)) else [values]
    wanted = {value_key(v) for v in values}
    return pd.Series([value_key(v) in wanted for v in series], index=series.index, dtype=bool)


def sort_key(label: str):
    """Labels in reading order: numbers numerically, then words."""
    try:
        return (0, float(label), "")
    except ValueError:
        return (1, 0.0, label)


# --- one rule -------------------------------------------------------------------------------------------------

@dataclass
class Group:
    """One group of a rule (the whole rule when it has no `by`)."""

    label: str                 # "" without `by`, else e.g. "semantics=keras3"
    verdict: str               # one of OUTCOMES
    expect: str = "holds"      # holds | fails | "" (no prediction for this group)
    mean: float = math.nan
    lo: float = math.nan
    hi: float = math.nan
    n_seeds: int = 0
    support: float = math.nan  # how far the CI clears the threshold the predicted way (< 0: it does not)

    @property
    def outcome(self) -> str:
        """holds | fails | unsettled | precondition not met: the group against the claim's prediction."""
        if self.verdict == "precondition not met":
            return self.verdict
        if self.verdict == "inconclusive" or not self.expect:
            return "unsettled"
        went = "holds" if self.verdict == "reproduced" else "fails"
        return "holds" if went == self.expect else "fails"

    def number(self, digits: int = 3) -> str:
        if not np.isfinite(self.mean):
            return "n/a"
        if not np.isfinite(self.lo):
            return f"{self.mean:.{digits}f} [no CI from {self.n_seeds} seed]"
        return f"{self.mean:.{digits}f} [{self.lo:.{digits}f}, {self.hi:.{digits}f}]"


@dataclass
class RuleResult:
    claim: str
    label: str                 # C06.1 or C06/<id>
    verdict: str               # reproduced | not reproduced | depends on <by> | inconclusive | precondition not met
    rule: str                  # the rule in words
    says: str = ""
    metric: str = ""           # what the number is: the metric, or metric(a) - metric(b) for a contrast
    scenario: str = ""
    detail: str = ""           # for a mix: which groups hold, fail, are unsettled
    groups: list[Group] = field(default_factory=list)
    excluded: int = 0          # selected rows that failed the precondition
    split: bool = False        # the rule predicts an outcome per group (`expect`)
    role: str = "evidence"     # evidence | precondition (of the claim: see combine)

    @property
    def key(self) -> Group | None:
        """The worst group: least support for the prediction (the one number that carries the verdict)."""
        scored = [g for g in self.groups if np.isfinite(g.support)]
        if scored:
            return min(scored, key=lambda g: g.support)
        with_number = [g for g in self.groups if np.isfinite(g.mean)]
        return with_number[0] if with_number else None

    @property
    def text(self) -> str:
        return f"{self.verdict}: {self.detail}" if self.detail else self.verdict


def _as_list(value) -> list:
    if value is None:
        return []
    return list(value) if isinstance(value, (list, tuple)) else [value]


def describe(rule: dict) -> str:
    """The rule in one line, printed next to the numbers."""
    metric = rule["metric"]
    if rule.get("contrast"):
        c = rule["contrast"]
        metric = (f"{metric}({c['factor']}={value_label(c['a'])}) - {metric}({c['factor']}={value_label(c['b'])}), "
                  f"paired by seed")
    if rule.get("baseline"):
        base = ", ".join(f"{k}={value_label(v)}" for k, v in rule["baseline"].items())
        metric = f"[{metric}] minus the same with {base}"
    text = f"mean over seeds of {metric} {rule['compare']} {rule['threshold']}, 95% CI excluding it"
    if rule.get("margin"):
        text += f" (inside {rule['threshold']} ± {rule['margin']}: not reproduced)"
    where = "; ".join(f"{k}={'|'.join(value_label(v) for v in (vals if isinstance(vals, (list, tuple)) else [vals]))}"
                      for k, vals in (rule.get("where") or {}).items())
    if where:
        text += f"; where {where}"
    if rule.get("by"):
        text += f"; judged per {', '.join(_as_list(rule['by']))}"
        if rule.get("require") == "all":
            text += " (every group must hold)"
    if rule.get("expect"):
        by_outcome: dict[str, list[str]] = {}
        for value, outcome in rule["expect"].items():
            by_outcome.setdefault(outcome, []).append(value_label(value))
        text += "; predicted: " + "; ".join(f"{o} for {', '.join(v)}" for o, v in by_outcome.items())
    if rule.get("precondition"):
        text += f"; rows count only where {rule['precondition']} is true"
    if rule.get("min_seeds", MIN_SEEDS) != MIN_SEEDS:
        text += f"; needs {rule['min_seeds']} seeds"
    if rule.get("role") == "precondition":
        text = f"precondition of the claim: {text}"
    return text


def check_rule(rule: dict, where: str = "") -> None:
    """Raise ValueError, naming the rule, on a malformed rule (before any number is computed)."""
    name = f"{where}rule {rule.get('claim')}/{rule.get('id', '?')}"
    for key in ("claim", "metric", "compare", "threshold"):
        if key not in rule:
            raise ValueError(f"{name}: missing key {key!r}")
    if rule["compare"] not in (">", "<"):
        raise ValueError(f"{name}: compare must be '>' or '<', got {rule['compare']!r}")
    if rule.get("margin") is not None and not float(rule["margin"]) > 0:
        raise ValueError(f"{name}: margin must be a number > 0, got {rule['margin']!r}")
    if rule.get("expect"):
        if len(_as_list(rule.get("by"))) != 1:
            raise ValueError(f"{name}: expect needs exactly one `by` factor")
        bad = {v for v in rule["expect"].values() if v not in ("holds", "fails")}
        if bad:
            raise ValueError(f"{name}: expect values must be holds or fails, got {', '.join(map(str, bad))}")
    if rule.get("baseline") is not None and (not rule.get("contrast") or not isinstance(rule["baseline"], dict)
                                             or not rule["baseline"]):
        raise ValueError(f"{name}: baseline needs a contrast and a non-empty mapping factor -> value")
    if rule.get("reached") and not rule.get("contrast"):
        raise ValueError(f"{name}: reached (censoring of a contrast) needs a contrast")
    if rule.get("require") not in (None, "all"):
        raise ValueError(f"{name}: require must be 'all', got {rule['require']!r}")
    if rule.get("require") and not rule.get("by"):
        raise ValueError(f"{name}: require: all needs `by` (groups to require)")
    if rule.get("role", "evidence") not in ROLES:
        raise ValueError(f"{name}: role must be one of {', '.join(ROLES)}, got {rule['role']!r}")


def _select(df: pd.DataFrame, where: dict | None) -> pd.DataFrame:
    if "status" in df:
        df = df[df["status"] == "ok"]
    for key, value in (where or {}).items():
        if key not in df:
            return df.iloc[0:0]
        df = df[_matches(df[key], value)]
    return df


def _metric(df: pd.DataFrame, expr: str) -> pd.Series:
    """A column, or a pandas expression over columns; all-NaN (so: inconclusive) if neither exists."""
    if expr in df:
        return pd.to_numeric(df[expr], errors="coerce")
    try:
        return pd.to_numeric(df.eval(expr), errors="coerce")
    except Exception:
        return pd.Series(np.nan, index=df.index)


def _met(df: pd.DataFrame, precondition: str | None) -> pd.Series:
    """Rows whose precondition metric is 1/true (all rows without a precondition; none if it is absent)."""
    if not precondition:
        return pd.Series(True, index=df.index)
    if precondition not in df:
        return pd.Series(False, index=df.index)
    return pd.Series([value_key(v) in (("bool", True), ("num", 1.0)) for v in df[precondition]], index=df.index)


def per_seed(rows: pd.DataFrame, rule: dict) -> pd.Series:
    """One value per seed: the metric averaged over `rows` (a paired difference for contrasts)."""
    if rows.empty:
        return pd.Series(dtype=float)
    contrast = rule.get("contrast")
    if not contrast:
        return _metric(rows, rule["metric"]).groupby(rows["seed"]).mean().dropna()
    factor = contrast["factor"]
    if factor not in rows:
        return pd.Series(dtype=float)
    side = {}
    for name in ("a", "b"):
        part = rows[_matches(rows[factor], contrast[name])]
        side[name] = _metric(part, rule["metric"]).groupby(part["seed"]).mean() if not part.empty \
            else pd.Series(dtype=float)
    diff = side["a"] - side["b"]
    if rule.get("reached"):  # a seed where neither arm reached the event tells nothing (both censored)
        reached = {}
        for name in ("a", "b"):
            part = rows[_matches(rows[factor], contrast[name])]
            reached[name] = _metric(part, rule["reached"]).groupby(part["seed"]).max()
        both_censored = (reached["a"] == 0) & (reached["b"] == 0)
        diff = diff.drop(both_censored[both_censored].index, errors="ignore")
    return diff.dropna()


def _baseline_rows(df: pd.DataFrame, rule: dict, by: list[str], group_row: pd.Series) -> pd.DataFrame:
    """The control rows of one group: the rule's `where` with `baseline`'s values, and the group's own value of
    every `by` factor that `baseline` does not name."""
    where = {**(rule.get("where") or {}), **rule["baseline"]}
    where.update({b: group_row[b] for b in by if b not in rule["baseline"]})
    return _select(df, where)


def judge(values: pd.Series, rule: dict, expect: str = "holds", label: str = "") -> Group:
    """One group's verdict from its per-seed values."""
    mean, lo, hi = mean_ci(values)
    group = Group(label, "inconclusive", expect, mean, lo, hi, len(values))
    t, margin = float(rule["threshold"]), float(rule.get("margin") or 0)
    if np.isfinite(lo) and np.isfinite(hi):  # how far the CI clears what the predicted outcome needs
        beyond = lo - t if rule["compare"] == ">" else t - hi     # > 0: CI entirely on the claim's side
        short = t - hi if rule["compare"] == ">" else lo - t      # > 0: CI entirely on the other side
        inside = margin - max(abs(lo - t), abs(hi - t)) if margin else -math.inf  # > 0: CI inside the band
        if expect == "fails":  # a CI clear of the threshold on the claim's side goes against it, margin or not
            group.support = -beyond if beyond > 0 else max(short, inside)
        else:
            group.support = beyond
    if len(values) < int(rule.get("min_seeds", MIN_SEEDS)) or not np.isfinite(mean):
        return group
    clears = lo > t if rule["compare"] == ">" else hi < t
    if margin and not clears and t - margin <= lo and hi <= t + margin:
        group.verdict = "not reproduced"  # practically equal to the threshold: no effect beyond it
    elif rule["compare"] == ">":
        group.verdict = "reproduced" if lo > t else "not reproduced" if hi <= t else "inconclusive"
    else:
        group.verdict = "reproduced" if hi < t else "not reproduced" if lo >= t else "inconclusive"
    return group


def _combine_groups(groups: list[Group], by: list[str], require_all: bool = False) -> tuple[str, str]:
    """(verdict, detail) of a rule from its groups; see the module docstring."""
    if not groups:
        return "inconclusive", "no ok records match the rule's rows"
    parts = []
    for outcome in ("holds", "fails", "unsettled", "precondition not met"):
        names = [g.label.split("=", 1)[1] if len(by) == 1 else g.label for g in groups if g.outcome == outcome]
        if names:
            parts.append(f"{outcome} for {', '.join(names)}")
    # groups whose precondition failed measured something else: they are listed, but decide nothing
    outcomes = {g.outcome for g in groups} - {"precondition not met"}
    if not outcomes:
        return "precondition not met", ""
    if len(outcomes) == 1:
        only = outcomes.pop()
        verdict = {"holds": "reproduced", "fails": "not reproduced", "unsettled": "inconclusive"}[only]
        return verdict, "; ".join(p for p in parts if p.startswith("precondition not met"))
    settled = outcomes & {"holds", "fails"}
    if require_all:  # a claim for every group (or a predicted split): one group against it decides
        verdict = "not reproduced" if "fails" in outcomes else "inconclusive"
    else:
        verdict = f"depends on {', '.join(by)}" if settled else "inconclusive"
    return verdict, "; ".join(parts)


def evaluate(df: pd.DataFrame, rule: dict, label: str = "", scenario: str = "") -> RuleResult:
    """The verdict of one rule on the records of its scenario."""
    check_rule(rule)
    by = _as_list(rule.get("by"))
    c = rule.get("contrast")
    metric = (f"{rule['metric']}({c['factor']}={value_label(c['a'])}) - ({value_label(c['b'])})" if c
              else rule["metric"])
    if rule.get("baseline"):
        control = ", ".join(f"{k}={value_label(v)}" for k, v in rule["baseline"].items())
        metric = f"{metric} minus the same with {control}"
    out = RuleResult(rule["claim"], label or rule["claim"], "inconclusive", describe(rule), rule.get("says", ""),
                     metric, scenario, role=rule.get("role", "evidence"))
    rows = _select(df, rule.get("where")).reset_index(drop=True)  # unique labels: masks below align by index
    if any(b not in rows for b in by):
        out.detail = f"no column {', '.join(b for b in by if b not in rows)} in the records"
        return out
    if not rows.empty and _metric(rows, rule["metric"]).isna().all():
        out.detail = f"metric {rule['metric']} not computable from the records"
        return out
    met = _met(rows, rule.get("precondition"))
    out.excluded = int((~met).sum())
    expect = {value_label(k): v for k, v in (rule.get("expect") or {}).items()}
    out.split = bool(expect)
    group_of = pd.Series([" & ".join(f"{b}={value_label(v)}" for b, v in zip(by, vals))
                          for vals in rows[by].itertuples(index=False)] if by else "", index=rows.index, dtype=object)
    names = sorted(group_of.unique(), key=lambda s: [sort_key(p.split("=", 1)[-1]) for p in s.split(" & ")])
    for name in names:
        part = rows[group_of == name]
        value = name.split("=", 1)[1] if len(by) == 1 else name
        exp = expect.get(value, "") if expect else "holds"
        if not met[part.index].any():
            out.groups.append(Group(name, "precondition not met", exp))
            continue
        values = per_seed(part[met[part.index]], rule)
        if rule.get("baseline"):
            values = (values - per_seed(_baseline_rows(df, rule, by, part.iloc[0]), rule)).dropna()
        out.groups.append(judge(values, rule, exp, name))
    out.verdict, out.detail = _combine_groups(out.groups, by, rule.get("require") == "all" or out.split)
    unpredicted = [g.label for g in out.groups if not g.expect]
    if unpredicted:
        out.detail += f" (no predicted outcome for {', '.join(unpredicted)})"
    settled = [g.n_seeds for g in out.groups if g.verdict in ("reproduced", "not reproduced")]
    if settled and min(settled) < CLAIM_SEEDS:
        out.detail = (f"{out.detail} " if out.detail else "") + \
            f"(rests on {min(settled)} seeds; CLAIMS.md asks for {CLAIM_SEEDS})"
    return out


# --- one claim ------------------------------------------------------------------------------------------------

@dataclass
class ClaimVerdict:
    claim: str
    verdict: str
    detail: str = ""
    combine: str = "all"
    deciding: RuleResult | None = None   # the rule whose number is shown
    rules: list[RuleResult] = field(default_factory=list)

    @property
    def text(self) -> str:
        return f"{self.verdict}: {self.detail}" if self.detail else self.verdict


def _kind(verdict: str) -> str:
    return "depends" if verdict.startswith("depends") else verdict


def combine(claim: str, rules: list[RuleResult], how: str = "all", primary: str | None = None) -> ClaimVerdict:
    """A claim's verdict from its rules' verdicts.

    all: not reproduced if any rule is; else depends if any rule depends; else precondition not met,
    then inconclusive, if any rule is; else reproduced. any: reproduced if any rule is; else depends,
    inconclusive, precondition not met, not reproduced in that order. primary: the named rule's verdict.
    """
    if how not in COMBINE:
        raise ValueError(f"claim {claim}: combine must be one of {', '.join(COMBINE)}, got {how!r}")
    out = ClaimVerdict(claim, "inconclusive", combine=how, rules=rules)
    gates = [r for r in rules if r.role == "precondition"]
    rules = [r for r in rules if r.role != "precondition"]
    if not rules:
        out.detail = "no rule"
        return out
    unmet = [g for g in gates if g.verdict != "reproduced"]
    if unmet:  # the evidence measured something else than the claim (or may have): it decides nothing
        failed = [g for g in unmet if g.verdict != "inconclusive"]
        out.deciding = (failed or unmet)[0]
        out.verdict = "precondition not met" if failed else "inconclusive"
        out.detail = "; ".join(f"{g.label} {g.text}" for g in unmet)
        out.combine = (f"precondition {out.deciding.label} not met" if failed
                       else f"precondition {out.deciding.label} unsettled")
        return out
    if how == "primary":
        chosen = [r for r in rules if r.label == primary or r.label.endswith(f"/{primary}")]
        if not chosen:
            raise ValueError(f"claim {claim}: primary rule {primary!r} not found among {', '.join(r.label for r in rules)}")
        out.deciding = chosen[0]
        out.combine = f"primary: {chosen[0].label} decides; the other rules are supporting evidence"
    else:
        order = (("not reproduced", "depends", "precondition not met", "inconclusive", "reproduced") if how == "all"
                 else ("reproduced", "depends", "inconclusive", "precondition not met", "not reproduced"))
        kinds = [_kind(r.verdict) for r in rules]
        first = next(k for k in order if k in kinds)
        out.deciding = rules[kinds.index(first)]
        out.combine = ("one rule" if len(rules) == 1 else
                       f"all of {len(rules)} rules must hold" if how == "all" else f"any of {len(rules)} rules suffices")
    out.verdict, out.detail = out.deciding.verdict, out.deciding.detail
    if len(rules) > 1 and out.deciding.detail:
        out.detail = f"{out.deciding.label}: {out.deciding.detail}"
    return out


def tally(rules: list[RuleResult]) -> str:
    """'2 reproduced, 1 depends' over a claim's rules."""
    counts: dict[str, int] = {}
    for r in rules:
        counts[_kind(r.verdict)] = counts.get(_kind(r.verdict), 0) + 1
    return ", ".join(f"{n} {k}" for k, n in counts.items())
