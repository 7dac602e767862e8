"""Every verdict rule of every scenario config, judged on synthetic records built to come out each way:
reproduced, not reproduced, inconclusive (issue #26: a rule that cannot fail is no test). The records have
exactly the rows the rule reads (its `where`, `by` groups, contrast sides, baseline and precondition), so a typo
in a factor or a wrong sign in a rule shows up here. Whether a rule can fail on real data (not implied by its
precondition, not a constant) is argued in its config's comments and checked by the audit, not here."""

from __future__ import annotations

import itertools
import re

import pandas as pd
import pytest
import yaml
from conftest import ROOT

from bnexp.verdicts import evaluate

SEEDS = range(5)
SCENARIOS = sorted(p.stem for p in (ROOT / "configs" / "scenario").glob("*.yaml")
                   if not p.name.startswith("_"))  # _template.yaml is no scenario
OWN_TEST = {("variance", "precise BN from 10 batches")}  # an absolute value: test_r1_count_rule_each_way


def scenario_rules(scenario: str) -> list[dict]:
    cfg = yaml.safe_load((ROOT / "configs" / "scenario" / f"{scenario}.yaml").read_text())
    return cfg["scenario"]["verdicts"]


def find(scenario: str, key: str) -> dict:
    found = [r for r in scenario_rules(scenario) if r.get("id") == key or r.get("says", "").startswith(key)]
    assert len(found) == 1, f"{scenario}: {len(found)} rules match {key!r}"
    return found[0]


def _first(value):
    return value[0] if isinstance(value, list) else value


def columns(metric: str) -> list[str]:
    """The record columns a metric (a column or a pandas expression) reads; the first carries the value."""
    return [n for n in re.findall(r"[A-Za-z_][\w.]*", metric) if n != "abs"]


def rule_keys(scenario: str) -> list[str]:
    """A key `find` resolves to each rule of the scenario: its id, else its `says`."""
    return [r.get("id") or r["says"] for r in scenario_rules(scenario)]


def synthetic(rule: dict, value_of) -> pd.DataFrame:
    """Records on which the rule's per-seed number in each group is value_of(group label, seed)."""
    by = rule.get("by") or []
    by = by if isinstance(by, list) else [by]
    where = rule.get("where") or {}
    if rule.get("expect"):
        levels = {by[0]: list(rule["expect"])}
    else:  # a `by` factor that `where` restricts takes the values `where` allows
        levels = {b: list(where[b]) if isinstance(where.get(b), list) else ["g1", "g2"] if i == 0 else ["h1"]
                  for i, b in enumerate(by)}
    base = {k: _first(v) for k, v in where.items()}
    cols = columns(rule["metric"])
    c = rule.get("contrast")
    rows = []
    for combo in itertools.product(*levels.values()):
        group = dict(zip(levels, combo))
        label = combo[0] if len(by) == 1 else " & ".join(f"{b}={v}" for b, v in group.items())
        for seed in SEEDS:
            value = value_of(label, seed)
            sides = [({c["factor"]: c["a"]}, value), ({c["factor"]: c["b"]}, 0.0)] if c else [({}, value)]
            if rule.get("precondition") == cols[0] and rule.get("precondition_arm") == "a":
                # the premise is the metric
                sides = [({c["factor"]: c["a"]}, 1.0), ({c["factor"]: c["b"]}, 1.0 - value)]
            for extra, v in sides:
                rows.append({"status": "ok", "seed": seed, **base, **group, **extra,
                             **({rule["precondition"]: 1.0} if rule.get("precondition") else {}), cols[0]: v,
                             **{col: 0.0 for col in cols[1:]},
                             **({rule["reached"]: 1.0} if rule.get("reached") else {})})
                if rule.get("baseline"):  # the control changes by 0 between the contrast's sides
                    rows.append({**rows[-1], **rule["baseline"], cols[0]: 0.0})
    return pd.DataFrame(rows)


def outcome_values(rule: dict, outcome: str):
    """value_of(group, seed): on the claim's side, against it, or straddling the threshold."""
    t, sign = float(rule["threshold"]), 1 if rule["compare"] == ">" else -1
    step = max(float(rule.get("margin") or 0), abs(t), 0.01) * 3
    expect = rule.get("expect") or {}

    def value_of(group, seed):
        wiggle = 0.01 * step * (seed - 2)
        holds = expect.get(group, "holds") == "holds"
        if outcome == "inconclusive":
            return t + (step if seed % 2 else -step)
        claim_side = (outcome == "reproduced") == holds
        return t + sign * (step if claim_side else -step) + wiggle
    return value_of


CASES = [(s, key) for s in SCENARIOS for key in rule_keys(s)
         if not any(s == scen and key.startswith(own) for scen, own in OWN_TEST)]


@pytest.mark.parametrize("scenario,key", CASES)
@pytest.mark.parametrize("outcome", ["reproduced", "not reproduced", "inconclusive"])
def test_every_rule_can_come_out_each_way(scenario, key, outcome):
    rule = find(scenario, key)
    df = synthetic(rule, outcome_values(rule, outcome))
    verdict = evaluate(df, rule)
    assert verdict.verdict == outcome, (verdict.text, [g.number() for g in verdict.groups])
    assert len(verdict.groups) == len({g.label for g in verdict.groups}) >= 1


@pytest.mark.parametrize("gaps,verdict", [([0.001, 0.002, 0.0, 0.001, 0.003], "reproduced"),
                                          ([0.02, 0.03, 0.025, 0.02, 0.03], "not reproduced"),
                                          ([0.0, 0.02, 0.001, 0.015, 0.002], "inconclusive")])
def test_r1_count_rule_each_way(gaps, verdict):
    rule = find("variance", "precise BN from 10 batches")
    rows = [{"status": "ok", "seed": s, "train.batch_size": 2, "acc_test_r1_n200": 0.8,
             "acc_test_r1_n10": 0.8 + (g if s % 2 else -g)} for s, g in enumerate(gaps)]  # either sign counts
    assert evaluate(pd.DataFrame(rows), rule).verdict == verdict


def test_c02_needs_every_batch_count():
    """One B against the claim makes C02 not reproduced, not 'depends on B'."""
    rule = find("momentum", "with momentum exp(-1/B)")
    df = synthetic(rule, lambda group, seed: 0.0 if group.startswith("train.batches=g1") else 0.2)
    assert evaluate(df, rule).verdict == "not reproduced"


def test_c08_an_unconverged_attached_run_gives_no_value():
    """Issue #26: convergence is judged per run (the attached arm), not by a 0/1 rule over seeds gating C08."""
    rule = find("update_ops", "without the dependency inference")
    df = synthetic(rule, outcome_values(rule, "reproduced"))
    assert evaluate(df, rule).verdict == "reproduced"
    lagging = df.assign(stat_converged=0.0)
    assert evaluate(lagging, rule).verdict == "precondition not met"
    one = df.copy()
    one.loc[(one.seed == 0) & (one["update_ops.attach"] == True), "stat_converged"] = 0.0  # noqa: E712
    v = evaluate(one, rule)
    assert {g.n_seeds for g in v.groups} == {4} and v.verdict == "inconclusive"  # 4 seeds: fewer than 5


def test_every_threshold_zero_rule_has_a_margin():
    """Issue #26: with threshold 0 a consistent one-image effect would count; the margin is the effect that counts."""
    for scenario in SCENARIOS:
        for rule in scenario_rules(scenario):
            if float(rule["threshold"]) == 0:
                assert rule.get("margin"), (scenario, rule.get("id") or rule["says"])


def test_every_premise_gates_rules_with_its_groups():
    """A per-group premise (role: precondition with `by`) must share its `by` with an evidence rule of its claim,
    else it silently gates the whole claim; one meant for the whole claim says so with `require: all`."""
    for scenario in SCENARIOS:
        rules = scenario_rules(scenario)
        for gate in (r for r in rules if r.get("role") == "precondition" and r.get("by") and not r.get("require")):
            assert any(r.get("by") == gate["by"] and r["claim"] == gate["claim"] and r.get("role") != "precondition"
                       for r in rules), (scenario, gate["says"])


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_contrast_sides_and_baselines_are_in_the_reference_grid(scenario):
    """A contrast or a baseline whose value the reference sweep never runs would be judged on nothing."""
    grid = yaml.safe_load((ROOT / "configs" / "sweep" / "reference.yaml").read_text())["grids"][scenario]
    swept = {k: [yaml.safe_load(v) for v in str(vals).split(",")] for k, vals in grid.items()}
    for rule in scenario_rules(scenario):
        c = rule.get("contrast")
        wanted = {**({c["factor"]: [c["a"], c["b"]]} if c else {}),
                  **{k: [v] for k, v in (rule.get("baseline") or {}).items()}}
        for key, values in wanted.items():
            assert key in swept and set(values) <= set(swept[key]), (scenario, rule.get("says"), key, values)
