"""Every verdict rule issue #12 or the audit changed or added (update_ops, batch_size, variance, bn_benefit, momentum,
trainable_after_compile), taken
from its scenario config and judged on synthetic records built to come out each way: reproduced, not
reproduced, inconclusive. The records have exactly the rows the rule reads (its `where`, `by` groups,
contrast sides and baseline), so a typo in a factor or a wrong sign in a rule shows up here."""

from __future__ import annotations

import itertools
import re

import pandas as pd
import pytest
import yaml

from bnexp.verdicts import combine, evaluate
from conftest import ROOT

SEEDS = range(5)
RULES = {  # scenario -> ids or `says` prefixes of the rules issue #12 changed or added
    "update_ops": ["without the dependency inference accuracy is poor", "converged"],
    "batch_size": ["drop", "with the norm on the convolutions only", "at batch 2 GroupNorm", "at batch 2 LayerNorm",
                   "at batch 2 Batch Renormalization (Keras", "at batch 2 Batch Renormalization clipped", "moving",
                   "at batch 2, precise BN"],
    "variance": ["the unbiased variance"],   # the R1 count rule (an absolute value): test_r1_count_rule_each_way
    "bn_benefit": ["loss", "accuracy", "high_lr", "(3') at learning rate 0.1"],
    "momentum": ["with momentum exp(-1/B)", "with momentum 0.99 and 10-30 training batches", "precise BN"],
    "trainable_after_compile": ["without recompiling, the BN moving statistics"],   # added after the audit
}


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
            for extra, v in sides:
                rows.append({"status": "ok", "seed": seed, **base, **group, **extra, cols[0]: v,
                             **{col: 0.0 for col in cols[1:]}, **({rule["reached"]: 1.0} if rule.get("reached") else {})})
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


CASES = [(s, key) for s, keys in RULES.items() for key in keys]


@pytest.mark.parametrize("scenario,key", CASES)
@pytest.mark.parametrize("outcome", ["reproduced", "not reproduced", "inconclusive"])
def test_changed_rule_can_come_out_each_way(scenario, key, outcome):
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


def test_c08_precondition_gates_the_claim():
    gate, accuracy = find("update_ops", "converged"), find("update_ops", "without the dependency inference")
    good = evaluate(synthetic(accuracy, outcome_values(accuracy, "reproduced")), accuracy, "C08.2")
    lagging = evaluate(synthetic(gate, lambda group, seed: 0.0), gate, "C08/converged")
    converged = evaluate(synthetic(gate, lambda group, seed: 1.0), gate, "C08/converged")
    assert combine("C08", [good, converged]).verdict == "reproduced"
    assert combine("C08", [good, lagging]).verdict == "precondition not met"


@pytest.mark.parametrize("scenario", sorted(RULES))
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
