"""The verdict rules of training_flag, frozen_base, weights_order and checkpoint (issue #12) on synthetic
records: every rule can come out reproduced, not reproduced, inconclusive, and (with a precondition)
precondition not met. The records satisfy the rule's `where`, one group per `by` value, five seeds."""

from __future__ import annotations

import itertools
import re

import pandas as pd
import pytest
import yaml
from conftest import ROOT

from bnexp.verdicts import evaluate

SCENARIOS = ("training_flag", "frozen_base", "weights_order", "checkpoint")


def _rules() -> list:
    return list(_each_rule())


def _each_rule():
    for scenario in SCENARIOS:
        rules = yaml.safe_load((ROOT / "configs" / "scenario" / f"{scenario}.yaml").read_text())["scenario"]["verdicts"]
        for i, rule in enumerate(rules):
            if not rule.get("expect") and not rule.get("contrast"):  # split predictions: test_frozen_base
                yield pytest.param(rule, id=f"{scenario}-{rule['claim']}.{i + 1}")


def _as_list(value) -> list:
    return list(value) if isinstance(value, list) else [value]


def records(rule: dict, values: list[float], precondition: float = 1.0) -> pd.DataFrame:
    """Rows matching the rule's `where` (every listed value), two groups per `by` factor that `where` does
    not fix, seed i with every column of the metric expression set to values[i]."""
    where = rule.get("where") or {}
    by = _as_list(rule.get("by")) if rule.get("by") else []
    axes = {k: _as_list(v) for k, v in where.items()}
    axes.update({b: ["g1", "g2"] for b in by if b not in where})
    names = list(dict.fromkeys(re.findall(r"[A-Za-z_][\w.]*", rule["metric"])))
    columns = set(names)
    # sums or means of columns: every column at v / k gives v; a difference (k = 0): the first column v, the rest 0
    k = float(pd.DataFrame([dict.fromkeys(columns, 1.0)]).eval(rule["metric"]).iloc[0]) if len(columns) > 1 else 1.0
    rows = []
    for combo in itertools.product(*axes.values()):
        for seed, value in enumerate(values):
            cells = {c: value / k for c in columns} if k else {c: value if c == names[0] else 0.0 for c in columns}
            row = {"status": "ok", "seed": seed, **dict(zip(axes, combo)), **cells}
            if rule.get("precondition"):
                row[rule["precondition"]] = precondition
            rows.append(row)
    return pd.DataFrame(rows)


def _side(rule: dict, distance: float) -> list[float]:
    """Five seeds' values `distance` (+ a little spread) beyond the threshold on the claim's side (> 0)
    or on the other side (< 0)."""
    sign = 1 if rule["compare"] == ">" else -1
    t = float(rule["threshold"])
    return [t + sign * (distance + 0.01 * i) if distance > 0 else t + sign * (distance - 0.01 * i) for i in range(5)]


@pytest.mark.parametrize("rule", _rules())
def test_rule_can_come_out_each_way(rule):
    assert evaluate(records(rule, _side(rule, 0.2)), rule).verdict == "reproduced"
    assert evaluate(records(rule, _side(rule, -0.2)), rule).verdict == "not reproduced"
    t = float(rule["threshold"])
    assert evaluate(records(rule, [t - 0.3, t + 0.3, t + 0.05, t - 0.3, t + 0.3]), rule).verdict == "inconclusive"
    if rule.get("precondition"):
        verdict = evaluate(records(rule, _side(rule, 0.2), precondition=0.0), rule)
        assert verdict.verdict == "precondition not met"


def test_flag_rules_ignore_runs_where_the_flag_never_reached_bn():
    """Keras 3 functional (flag ignored) next to a variant that honours it: the ignored one is
    `precondition not met`, not evidence against C03, and the headline says where the premise is false."""
    rules = yaml.safe_load((ROOT / "configs" / "scenario" / "training_flag.yaml").read_text())["scenario"]["verdicts"]
    rule = next(r for r in rules if r["metric"] == "acc_vs_nobn_abs")
    rows = [{"status": "ok", "seed": s, "bn.training": False, "variant": v,
             "acc_vs_nobn_abs": 0.3 if v == "keras3/functional" else 0.005 + 0.001 * s,
             "flag_honoured": float(v != "keras3/functional")}
            for s in range(5) for v in ("keras3/functional", "tf_keras/functional")]
    verdict = evaluate(pd.DataFrame(rows), rule)
    assert [(g.label, g.outcome) for g in verdict.groups] == [("variant=keras3/functional", "precondition not met"),
                                                              ("variant=tf_keras/functional", "holds")]
    assert verdict.verdict == "depends on variant"
