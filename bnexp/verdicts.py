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
      margin: 0.005                     # optional: the smallest effect beyond the threshold that counts: the
                                        #   CI must clear threshold + margin (claim's side) to reproduce, and a
                                        #   CI entirely short of it concludes `not reproduced` (required with
                                        #   threshold 0: a consistent one-image effect is no effect)
      by: semantics                     # optional: judge each value (or combination, for a list) apart
      expect: {keras2_v1: holds, keras3: fails, tf_keras: fails}   # optional, with `by`: a predicted split
      precondition: flag_honoured       # optional: rows where this metric is not 1/true are not evidence
      precondition_arm: a               # optional, with contrast and precondition: only that arm's (a or b) rows
                                        #   need it (a seed whose arm failed it gives no value)
      baseline: {norm: none}            # optional, with contrast: minus the same contrast on the rows where
                                        #   these factors take these values (the rest of `where` kept), by seed
      require: all                      # optional, with by: one group against the prediction -> not reproduced
      reached: reached_loss             # optional, with contrast: a seed where neither arm reached the event
                                        #   (this column/expression 0 on both sides: both censored) gives no value
      role: precondition                # optional: the claim's precondition (see below), not evidence for it
      aspect: predict                   # optional: which entry point / mechanism / part of the claim the rule
                                        #   tests; the claim's `split` names what aspects differ in (see below)
      min_seeds: 5                      # optional (default MIN_SEEDS)

Per group and seed the metric is averaged over the selected rows, so every seed counts once; the
seeds' values give the mean and a Student-t 95% CI. With b = threshold + margin (for ">"; threshold - margin
for "<"; margin 0 by default) a group is `reproduced` (CI entirely beyond b on the claim's side), `not
reproduced` (CI entirely on the other side of b: no effect of the size the claim needs), `inconclusive`
(neither, or fewer than min_seeds seeds) or `precondition not met` (every row failed the precondition). A
rule whose metric is NaN on every selected row is inconclusive with "metric ... not computable from the
records"; a settled verdict on fewer than CLAIM_SEEDS (5, CLAIMS.md) seeds says so in its detail. A group
"holds" when it goes the predicted way (reproduced, or not reproduced where `expect` says `fails`).

A rule's verdict from its groups' outcomes (holds, fails, unsettled, precondition not met; CLAIMS.md):
one outcome for every group gives `reproduced`, `not reproduced`, `inconclusive` or `precondition not met`.
A mix is `depends on <factor>` only when a group holds and another fails or has its precondition unmet (for
those users the claim's premise is false); the factor named is the one of `by` whose values separate the
settled groups (every `by` factor if none does alone). Holds or fails beside unsettled groups only is
`inconclusive`; fails beside precondition not met only is `not reproduced`. With `require: all` (a claim
"for every B") or `expect` (a predicted split) a failing group makes it `not reproduced`, an unsettled one
`inconclusive`. The detail lists every group. Groups come from the rows the rule's `where` selected. The
rule's number is its worst group (least support for the prediction), never a pool of groups; its
`resolution` is the widest group's CI half-width: an effect beyond b smaller than that cannot be settled
with the seeds there are.

A `baseline` reads a claim against a control: the per-seed value is the contrast on the rule's rows minus
the same contrast on the baseline rows (where overridden by `baseline`; a `by` factor that `baseline` does
not name is matched to the group's value), e.g. BN's accuracy drop from batch 32 to 2 minus the no-norm
model's change over the same batch sizes. Baseline rows are not filtered by `precondition`.

A claim's verdict combines its rules as its scenario config declares (`claim_text`, `combine`): `all`
(every rule must hold), `any` (one suffices) or `primary` (the named rule decides; the others are
shown as supporting evidence). With `aspect`s on its rules (a claim with several entry points, mechanisms
or parts; `split` in claim_text names what they are) `all` combines the rules of each aspect, and aspects
that disagree make the claim `depends on <split>`, saying where it holds, by the group rule above.
Rules with `role: precondition` are premises, not evidence. One judged per group (`by`) gates the groups of
the claim's evidence rules with the same `by`: a group whose premise fails is `precondition not met`, one
whose premise is unsettled is unsettled. One without `by` (or with another) gates the whole claim: if it is
`not reproduced` or `precondition not met`, the claim's verdict is `precondition not met` (its evidence
measured something else, e.g. moving statistics that had not converged), naming that rule; if it is merely
inconclusive, the claim is `inconclusive`; otherwise it is listed beside the evidence.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from bnexp.scenario_spec import COMBINE, ROLES, check_rule  # noqa: F401 (the rule grammar is checked there)
from bnexp.values import as_list as _as_list
from bnexp.values import labels, matches, mean_ci, select, sort_key, t95, value_key, value_label  # noqa: F401

CLAIM_SEEDS = 5    # what CLAIMS.md asks of the reference
MIN_SEEDS = CLAIM_SEEDS  # the fewest seeds a group needs for a verdict (`min_seeds` overrides it per rule)
OUTCOMES = ("reproduced", "not reproduced", "inconclusive", "precondition not met")


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
    values: dict = field(default_factory=dict)  # `by` factor -> this group's value label

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
    by: list[str] = field(default_factory=list)
    require_all: bool = False  # one failing group decides (`require: all` or `expect`)
    aspect: str = ""           # the entry point / mechanism / part of the claim the rule tests
    min_seeds: int = 5         # the rule's `min_seeds` (default MIN_SEEDS)
    notes: str = ""            # what follows the group listing in `detail` (seed count, unpredicted groups)

    @property
    def resolution(self) -> float:
        """The widest group's 95% CI half-width: the smallest effect beyond the threshold these seeds settle."""
        widths = [(g.hi - g.lo) / 2 for g in self.groups if np.isfinite(g.lo) and np.isfinite(g.hi)]
        return max(widths) if widths else math.nan

    def regroup(self) -> None:
        """Verdict and detail again from the groups (after a premise changed some of them); a rule without
        groups keeps what it said (e.g. that its metric is not in the records)."""
        if self.groups:
            verdict, listing = _combine_groups(self.groups, self.by, self.require_all)
            self.verdict, self.detail = verdict, " ".join(p for p in (listing, self.notes) if p)

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
        side = "+" if rule["compare"] == ">" else "-"
        text = (f"mean over seeds of {metric} {rule['compare']} {rule['threshold']} {side} margin {rule['margin']}, "
                f"95% CI clear of it (entirely short of it: not reproduced)")
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
        arm = (f" (in the {rule['contrast']['factor']}={value_label(rule['contrast'][rule['precondition_arm']])} arm)"
               if rule.get("precondition_arm") else "")
        text += f"; rows count only where {rule['precondition']} is true{arm}"
    if rule.get("min_seeds", MIN_SEEDS) != MIN_SEEDS:
        text += f"; needs {rule['min_seeds']} seeds"
    if rule.get("role") == "precondition":
        text = f"precondition of the claim: {text}"
    return text


def _select(df: pd.DataFrame, where: dict | None) -> pd.DataFrame:
    """The ok records among the rows `where` selects (bnexp.values.select: the figures select the same way)."""
    return select(df[df["status"] == "ok"] if "status" in df else df, where)


def _metric(df: pd.DataFrame, expr: str) -> pd.Series:
    """A column, or a pandas expression over columns; all-NaN (so: inconclusive) if neither exists."""
    if expr in df:
        return pd.to_numeric(df[expr], errors="coerce")
    try:
        return pd.to_numeric(df.eval(expr), errors="coerce")
    except Exception:
        return pd.Series(np.nan, index=df.index)


def _met(df: pd.DataFrame, rule: dict) -> pd.Series:
    """Rows whose precondition metric is 1/true (all rows without a precondition; with precondition_arm, every
    row outside that contrast arm too). A precondition the records lack is an error, not a verdict."""
    precondition = rule.get("precondition")
    if not precondition or df.empty:
        return pd.Series(True, index=df.index)
    if precondition not in df:
        raise ValueError(f"rule {rule.get('claim')}/{rule.get('id', '?')}: precondition column {precondition!r} "
                         f"is not in the records")
    met = pd.Series([value_key(v) in (("bool", True), ("num", 1.0)) for v in df[precondition]], index=df.index)
    if rule.get("precondition_arm"):
        met |= ~_in_arm(df, rule)
    return met


def _in_arm(df: pd.DataFrame, rule: dict) -> pd.Series:
    """Rows of the contrast arm `precondition_arm` names (every row without one)."""
    arm, c = rule.get("precondition_arm"), rule.get("contrast") or {}
    if not arm or c.get("factor") not in df:
        return pd.Series(True, index=df.index)
    return matches(df[c["factor"]], c[arm])


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
        part = rows[matches(rows[factor], contrast[name])]
        side[name] = _metric(part, rule["metric"]).groupby(part["seed"]).mean() if not part.empty \
            else pd.Series(dtype=float)
    diff = side["a"] - side["b"]
    if rule.get("reached"):  # a seed where neither arm reached the event tells nothing (both censored)
        reached = {}
        for name in ("a", "b"):
            part = rows[matches(rows[factor], contrast[name])]
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
    b = boundary(rule)
    if np.isfinite(lo) and np.isfinite(hi):  # how far the CI clears what the predicted outcome needs
        beyond = lo - b if rule["compare"] == ">" else b - hi     # > 0: CI entirely on the claim's side
        short = b - hi if rule["compare"] == ">" else lo - b      # > 0: CI entirely on the other side
        group.support = short if expect == "fails" else beyond
    if len(values) < int(rule.get("min_seeds", MIN_SEEDS)) or not np.isfinite(mean):
        return group
    if rule["compare"] == ">":
        group.verdict = "reproduced" if lo > b else "not reproduced" if hi <= b else "inconclusive"
    else:
        group.verdict = "reproduced" if hi < b else "not reproduced" if lo >= b else "inconclusive"
    return group


def boundary(rule: dict) -> float:
    """What the CI must clear on the claim's side: the threshold plus the margin (the smallest effect that counts)."""
    margin = float(rule.get("margin") or 0)
    return float(rule["threshold"]) + (margin if rule["compare"] == ">" else -margin)


SINGLE = {"holds": "reproduced", "fails": "not reproduced", "unsettled": "inconclusive",
          "precondition not met": "precondition not met"}


def combine_outcomes(outcomes: list[str], require_all: bool = False) -> str:
    """The verdict of a mix of outcomes (holds / fails / unsettled / precondition not met), as CLAIMS.md defines
    it: "depends" only where the claim holds somewhere and fails, or has its premise unmet, somewhere else."""
    kinds = set(outcomes)
    if not kinds:
        return "inconclusive"
    if len(kinds) == 1:
        return SINGLE[kinds.pop()]
    if require_all:  # a claim for every group (or a predicted split): one group against it decides
        if "fails" in kinds:
            return "not reproduced"
        return "inconclusive" if "unsettled" in kinds else "depends"
    if "holds" in kinds and kinds & {"fails", "precondition not met"}:
        return "depends"
    if "unsettled" in kinds:
        return "inconclusive"
    return "not reproduced"  # fails where the premise holds, premise unmet elsewhere: holds nowhere


def splitting(groups: list[Group], by: list[str]) -> list[str]:
    """The `by` factors whose values alone separate the settled groups' outcomes (all of `by` if none does)."""
    settled = [g for g in groups if g.outcome in ("holds", "fails", "precondition not met")]
    alone = [f for f in by if all(len({g.outcome for g in settled if g.values.get(f) == v}) == 1
                                  for v in {g.values.get(f) for g in settled})]
    return alone or list(by)


def _combine_groups(groups: list[Group], by: list[str], require_all: bool = False) -> tuple[str, str]:
    """(verdict, detail) of a rule from its groups; see the module docstring."""
    if not groups:
        return "inconclusive", "no ok records match the rule's rows"
    parts = []
    for outcome in ("holds", "fails", "unsettled", "precondition not met"):
        names = [g.label.split("=", 1)[1] if len(by) == 1 else g.label for g in groups if g.outcome == outcome]
        if names:
            parts.append(f"{outcome} for {', '.join(names)}")
    verdict = combine_outcomes([g.outcome for g in groups], require_all)
    if verdict == "depends":
        verdict = f"depends on {', '.join(splitting(groups, by))}"
    if verdict in SINGLE.values() and len({g.outcome for g in groups}) == 1:
        return verdict, ""
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
                     metric, scenario, role=rule.get("role", "evidence"), by=by,
                     require_all=rule.get("require") == "all" or bool(rule.get("expect")),
                     aspect=str(rule.get("aspect") or ""), min_seeds=int(rule.get("min_seeds", MIN_SEEDS)))
    rows = _select(df, rule.get("where")).reset_index(drop=True)  # unique labels: masks below align by index
    if any(b not in rows for b in by):
        out.detail = f"no column {', '.join(b for b in by if b not in rows)} in the records"
        return out
    if not rows.empty and _metric(rows, rule["metric"]).isna().all():
        out.detail = f"metric {rule['metric']} not computable from the records"
        return out
    met = _met(rows, rule)
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
        factor_values = {b: value_label(part.iloc[0][b]) for b in by}
        judged = met[part.index] & _in_arm(part, rule)
        if not judged.any():
            out.groups.append(Group(name, "precondition not met", exp, values=factor_values))
            continue
        values = per_seed(part[met[part.index]], rule)
        if rule.get("baseline"):
            values = (values - per_seed(_baseline_rows(df, rule, by, part.iloc[0]), rule)).dropna()
        group = judge(values, rule, exp, name)
        group.values = factor_values
        out.groups.append(group)
    notes = []
    unpredicted = [g.label for g in out.groups if not g.expect]
    if unpredicted:
        notes.append(f"(no predicted outcome for {', '.join(unpredicted)})")
    settled = [g.n_seeds for g in out.groups if g.verdict in ("reproduced", "not reproduced")]
    if settled and min(settled) < CLAIM_SEEDS:
        notes.append(f"(rests on {min(settled)} seeds; CLAIMS.md asks for {CLAIM_SEEDS})")
    out.notes = " ".join(notes)
    out.regroup()
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
    holding: RuleResult | None = None    # for `depends`: a rule (aspect) that holds, whose number is shown too

    @property
    def text(self) -> str:
        return f"{self.verdict}: {self.detail}" if self.detail else self.verdict


def _kind(verdict: str) -> str:
    return "depends" if verdict.startswith("depends") else verdict


def _gate_groups(gate: RuleResult, rule: RuleResult) -> RuleResult:
    """`rule` with each group whose premise (the same group of `gate`) failed or is unsettled marked so."""
    premise = {frozenset(g.values.items()): g.outcome for g in gate.groups}  # by value: factor order may differ
    gated = copy.deepcopy(rule)
    for g in gated.groups:
        outcome = premise.get(frozenset(g.values.items()), "unsettled")
        if outcome in ("fails", "precondition not met"):
            g.verdict = "precondition not met"
        elif outcome == "unsettled" and g.verdict != "precondition not met":
            g.verdict = "inconclusive"
    gated.regroup()
    return gated


# `all`: the first of these among the rules decides. A rule that depends (holds for some groups) beside an
# unsettled one does not show the claim holding anywhere (its other rules are unsettled there): inconclusive.
ALL_ORDER = ("not reproduced", "precondition not met", "inconclusive", "depends", "reproduced")

OUTCOME_OF = {"reproduced": "holds", "not reproduced": "fails", "inconclusive": "unsettled",
              "precondition not met": "precondition not met"}


def _by_aspect(claim: str, rules: list[RuleResult], split: str) -> tuple:
    """(verdict, detail, deciding rule, a holding rule or None) over aspects: each aspect's rules combined with
    `all`, then the aspects' outcomes by the group rule (a depending aspect holds somewhere and fails somewhere)."""
    aspects: dict[str, list[RuleResult]] = {}
    for r in rules:
        aspects.setdefault(r.aspect or "the claim", []).append(r)
    verdicts = {a: combine(claim, rs, "all") for a, rs in aspects.items()}
    kinds = {_kind(v.verdict) for v in verdicts.values()}
    if "depends" in kinds and kinds <= {"reproduced", "depends"}:  # no aspect against the others, but a split
        verdict = "; ".join(f"{v.verdict} ({a})" for a, v in verdicts.items() if _kind(v.verdict) == "depends")
    else:  # an aspect that depends holds somewhere: against an aspect that fails, the aspects disagree
        verdict = combine_outcomes(["holds" if _kind(v.verdict) == "depends" else OUTCOME_OF[v.verdict]
                                    for v in verdicts.values()])
        verdict = f"depends on {split}" if verdict == "depends" else verdict
    parts = []
    for a, v in verdicts.items():
        parts.append(f"{a}: {v.verdict}" + (f" ({v.deciding.label})" if v.deciding else ""))
    worst = min(verdicts.values(), key=lambda v: ALL_ORDER.index(_kind(v.verdict)))
    holds = [v.deciding for v in sorted(verdicts.values(), key=lambda v: _kind(v.verdict) != "reproduced")
             if _kind(v.verdict) in ("reproduced", "depends") and v.deciding is not worst.deciding]
    return verdict, "; ".join(parts), worst.deciding, (holds[0] if holds else None)


def combine(claim: str, rules: list[RuleResult], how: str = "all", primary: str | None = None,
            split: str | None = None) -> ClaimVerdict:
    """A claim's verdict from its rules' verdicts.

    all: not reproduced if any rule is; else precondition not met, inconclusive, depends if any rule is (in
    that order); else reproduced. With aspects (`split`): per aspect as `all`, then
    across aspects by the group rule. any: reproduced if any rule is; else depends, inconclusive,
    precondition not met, not reproduced in that order. primary: the named rule's verdict.
    Premise rules (role: precondition) first gate the evidence, per group where their `by` matches.
    """
    if how not in COMBINE:
        raise ValueError(f"claim {claim}: combine must be one of {', '.join(COMBINE)}, got {how!r}")
    out = ClaimVerdict(claim, "inconclusive", combine=how, rules=rules)
    gates = [r for r in rules if r.role == "precondition"]
    rules = [r for r in rules if r.role != "precondition"]
    if not rules:
        out.detail = "no rule"
        return out
    per_group = [g for g in gates if g.by and any(set(r.by) == set(g.by) for r in rules)]
    for gate in per_group:
        rules = [_gate_groups(gate, r) if set(r.by) == set(gate.by) else r for r in rules]
    out.rules = [*rules, *gates]
    # a premise that holds in no group gates the whole claim, its other rules included
    unmet = [g for g in gates if g.verdict != "reproduced"
             and (g not in per_group or not any(x.outcome == "holds" for x in g.groups))]
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
            raise ValueError(f"claim {claim}: primary rule {primary!r} not found among "
                             f"{', '.join(r.label for r in rules)}")
        out.deciding = chosen[0]
        out.combine = f"primary: {chosen[0].label} decides; the other rules are supporting evidence"
    elif how == "all" and split and len({r.aspect for r in rules}) > 1:
        out.verdict, out.detail, out.deciding, out.holding = _by_aspect(claim, rules, split)
        out.combine = f"all rules of each {split} must hold; {split}s that disagree: depends"
        return out
    else:
        order = (ALL_ORDER if how == "all"
                 else ("reproduced", "depends", "inconclusive", "precondition not met", "not reproduced"))
        kinds = [_kind(r.verdict) for r in rules]
        first = next(k for k in order if k in kinds)
        out.deciding = rules[kinds.index(first)]
        out.combine = ("one rule" if len(rules) == 1 else f"all of {len(rules)} rules must hold" if how == "all"
                       else f"any of {len(rules)} rules suffices")
        both = _conjunction(rules) if how == "all" else None
        if both:
            out.verdict, out.detail = both
            out.combine += " in the same group"
            return out
    out.verdict, out.detail = out.deciding.verdict, out.deciding.detail
    if len(rules) > 1 and out.deciding.detail:
        out.detail = f"{out.deciding.label}: {out.deciding.detail}"
    return out


def _conjunction(rules: list[RuleResult]) -> tuple[str, str] | None:
    """`all` over rules judged on the same groups (the same `by`): the claim holds in a group only where every
    rule holds there. (verdict, detail) over those groups; None when the rules' groups are not the same kind."""
    if len(rules) < 2 or not rules[0].by or any(set(r.by) != set(rules[0].by) or not r.groups for r in rules):
        return None
    rank = ("fails", "precondition not met", "unsettled", "holds")  # the first present decides a group
    groups: dict[frozenset, Group] = {}
    outcomes: dict[frozenset, list[str]] = {}
    for r in rules:
        for g in r.groups:
            key = frozenset(g.values.items())
            groups.setdefault(key, g)
            outcomes.setdefault(key, []).append(g.outcome)
    joint = []
    for key, g in groups.items():
        seen = outcomes[key] + ["unsettled"] * (len(rules) - len(outcomes[key]))  # a rule without the group
        outcome = next(o for o in rank if o in seen)
        verdict = {"holds": "reproduced", "fails": "not reproduced", "unsettled": "inconclusive",
                   "precondition not met": "precondition not met"}[outcome]
        joint.append(Group(g.label, verdict, "holds", values=g.values))
    return _combine_groups(joint, rules[0].by, any(r.require_all for r in rules))


def tally(rules: list[RuleResult]) -> str:
    """'2 reproduced, 1 depends; premises: 1 reproduced' over a claim's rules."""
    def count(rs):
        counts: dict[str, int] = {}
        for r in rs:
            counts[_kind(r.verdict)] = counts.get(_kind(r.verdict), 0) + 1
        return ", ".join(f"{n} {k}" for k, n in counts.items())
    premises = [r for r in rules if r.role == "precondition"]
    evidence = count([r for r in rules if r.role != "precondition"])
    return f"{evidence}; premises: {count(premises)}" if premises else evidence
