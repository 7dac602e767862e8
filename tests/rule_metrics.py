"""Test helper: do a scenario's verdict rules name metrics its records actually have? (typo guard)"""

from __future__ import annotations

import pandas as pd
import yaml
from conftest import ROOT


def missing_rule_metrics(rec: dict, scenario: str) -> set[str]:
    """Metrics (columns or pandas expressions) of the scenario's verdict rules that `rec` cannot provide."""
    rules = yaml.safe_load((ROOT / "configs" / "scenario" / f"{scenario}.yaml").read_text())["scenario"]["verdicts"]
    df, missing = pd.DataFrame([rec]), set()
    for rule in rules:
        by = rule.get("by") or []
        for key in [*(rule.get("where") or {}), *(by if isinstance(by, list) else [by]),
                    *([rule["contrast"]["factor"]] if rule.get("contrast") else []),
                    *([rule["precondition"]] if rule.get("precondition") else [])]:
            if key not in df:
                missing.add(key)
        if rule["metric"] not in df:
            try:
                df.eval(rule["metric"])
            except Exception:
                missing.add(rule["metric"])
    return missing
