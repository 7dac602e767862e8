"""The report's computing half: from a sweep's records to rule verdicts, claim verdicts and summary tables.

Reads no files and writes none, draws nothing and formats no markdown (bnexp.report_render does that; bnexp.report
reads the records and writes the outputs). Every scenario comes from bnexp.scenario_spec, checked, before any
number is computed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from bnexp import CONFIG_DIR, scenario_spec
from bnexp.scenario_spec import ClaimText, Scenario
from bnexp.values import labels, mean_ci, sort_key
from bnexp.verdicts import ClaimVerdict, RuleResult, combine, describe, evaluate

NO_RECORDS = "no records of scenario"  # the detail of a rule whose scenario has no records (judged as inconclusive)


@dataclass
class Records:
    """What a report is built from: the records of one sweep's planned set, and what is not in it."""

    name: str                   # the sweep (or "all")
    manifest: dict | None       # its manifest (None for "all")
    df: pd.DataFrame            # the records in the planned set
    ignored: pd.DataFrame       # records in the folder outside it
    missing: list               # planned (scenario, run id) without a record
    root: Path                  # the results folder


@dataclass
class Section:
    """One scenario's part: its records (default setup), rule verdicts and summary table."""

    spec: Scenario
    df: pd.DataFrame
    results: list[RuleResult]
    summary: pd.DataFrame = field(default_factory=pd.DataFrame)
    columns: list[str] = field(default_factory=list)   # the summary's metric columns
    figures: list[tuple[Path, str]] = field(default_factory=list)  # (png, caption), once drawn


@dataclass
class Judged:
    """Every scenario's section and every claim's verdict (None: no records of its rules)."""

    sections: dict[str, Section]            # the scenarios with records, in file order
    results: dict[str, list[RuleResult]]    # every scenario's rules, as the claims' premises gated them
    claims: dict[str, ClaimVerdict | None]
    texts: dict[str, ClaimText]
    figure_of: dict[tuple[str, str], Path] = field(default_factory=dict)  # (scenario, claim) -> its figure


def is_timing(column: str) -> bool:
    """Seconds and rates measured on the wall clock (every such record column ends in `_s`)."""
    return column.endswith("_s")


def config_keys(scenario: str) -> set[str]:
    """Flattened keys of the scenario's composed config: the columns of a record that are settings."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from bnexp.store import flatten, identity

    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("config", overrides=[f"scenario={scenario}"])
    # backend and keras_version are settings too: null by default, so the run id (identity) leaves them out
    return set(flatten(identity(OmegaConf.to_container(cfg, resolve=True)))) | {"backend", "keras_version"}


def factors(df: pd.DataFrame, keys: set[str]) -> list[str]:
    """Settings that vary across this scenario's runs (seed excluded); null, false and true are three values."""
    return [c for c in df.columns if c in keys and c != "seed" and not c.startswith("scenario.")
            and labels(df[c]).nunique() > 1]


def rule_columns(rules: list[dict], df: pd.DataFrame) -> list[str]:
    """The record columns the rules read (an expression's columns, in order)."""
    out = []
    for rule in rules:
        metric = rule["metric"]
        names = [metric] if metric in df else [c for c in scenario_spec.expression_columns(metric) if c in df]
        out += [c for c in names if c not in out]
    return out


def summary(df: pd.DataFrame, facs: list[str], cols: list[str]) -> pd.DataFrame:
    """Mean and 95% CI half-width over seeds for every factor combination (factor values as labels)."""
    ok = df[df["status"] == "ok"] if "status" in df else df
    if ok.empty:
        return pd.DataFrame()
    keyed = ok.assign(**{f: labels(ok[f]) for f in facs})
    rows = []
    for key, g in (keyed.groupby(facs, sort=True) if facs else [((), keyed)]):
        key = key if isinstance(key, tuple) else (key,)
        row = dict(zip(facs, key))
        row["seeds"] = g["seed"].nunique()
        for c in cols:
            mean, lo, hi = mean_ci(pd.to_numeric(g[c], errors="coerce").dropna())
            row[c] = mean
            row[f"{c}_ci"] = (hi - mean) if np.isfinite(hi) else np.nan
        rows.append(row)
    rows.sort(key=lambda row: [sort_key(row[f]) for f in facs])  # 2, 4, 32, 128: numbers in numeric order
    return pd.DataFrame(rows)


def every_backend(df: pd.DataFrame) -> pd.Series:
    """Records of the scenarios whose rules name the backend they read (report.every_backend: the conformance
    probes judge C18 per backend)."""
    names = [name for name, spec in scenario_spec.scenarios().items() if spec.every_backend]
    return df["scenario"].isin(names) if "scenario" in df else pd.Series(False, index=df.index)


def default_setup(df: pd.DataFrame) -> pd.Series:
    """Records of the default setup: Keras 3 on TensorFlow with the installed Keras (every backend for a scenario
    with report.every_backend). Verdicts, tables and figures use these; runs on JAX/PyTorch or a pinned Keras
    release are compared in keras3_outcomes instead."""
    keep = pd.Series(True, index=df.index)
    if "backend" in df:
        keep &= df["backend"].isna() | (df["backend"] == "tensorflow") | every_backend(df)
    if "keras_version" in df:
        keep &= df["keras_version"].isna()
    return keep


def unjudged(spec: Scenario) -> list[RuleResult]:
    """A scenario without records: its rules are still listed, as inconclusive."""
    return [RuleResult(r.claim, r.label, "inconclusive", describe(r.rule), r.rule.get("says", ""), r.rule["metric"],
                       spec.name, detail=f"{NO_RECORDS} {spec.name}", role=r.rule.get("role", "evidence"),
                       aspect=str(r.rule.get("aspect") or "")) for r in spec.rules]


def judge_scenario(spec: Scenario, df: pd.DataFrame) -> Section:
    """Rule verdicts and the summary table (the rules' metrics and report.metrics, no timings) of one scenario's
    records; its factors and declared columns checked against its config first."""
    keys = config_keys(spec.name)
    scenario_spec.check_factors(spec, keys)
    results = [evaluate(df, r.rule, r.label, spec.name) for r in spec.rules]
    facs = factors(df, keys)
    wanted = rule_columns([r.rule for r in spec.rules], df) + [c for c in spec.report_metrics if c in df]
    cols = [c for c in dict.fromkeys(wanted) if not is_timing(c)]
    return Section(spec, df, results, summary(df, facs, cols), cols)


def judge(df_all: pd.DataFrame) -> Judged:
    """Every scenario's section and every claim's verdict from the records of one report."""
    specs = scenario_spec.scenarios()
    sections: dict[str, Section] = {}
    results: dict[str, list[RuleResult]] = {}
    for name, spec in specs.items():
        df = df_all[(df_all["scenario"] == name) & default_setup(df_all)] if not df_all.empty else pd.DataFrame()
        if df.empty:
            results[name] = unjudged(spec)
            continue
        sections[name] = judge_scenario(spec, df.dropna(axis=1, how="all"))
        results[name] = sections[name].results
    texts = scenario_spec.claim_texts()
    claims = claim_verdicts(texts, results)
    judged = {(r.scenario, r.label): r for cv in claims.values() if cv for r in cv.rules}  # as premises gated them
    results = {scen: [judged.get((scen, r.label), r) for r in rules] for scen, rules in results.items()}
    for name, section in sections.items():
        section.results = results[name]
    return Judged(sections, results, claims, texts)


def claim_verdicts(texts: dict[str, ClaimText], results: dict[str, list[RuleResult]]
                   ) -> dict[str, ClaimVerdict | None]:
    """claim -> its verdict from its rules in every scenario (None when none of them has records)."""
    by_claim: dict[str, list[RuleResult]] = {}
    for rules in results.values():
        for r in rules:
            by_claim.setdefault(r.claim, []).append(r)
    out: dict[str, ClaimVerdict | None] = {}
    for claim in sorted(set(texts) | set(by_claim), key=lambda c: (c.startswith("R"), c)):
        text = texts.get(claim) or ClaimText(claim, "")
        rules = by_claim.get(claim)
        measured = rules and not all(r.detail.startswith(NO_RECORDS) for r in rules)
        out[claim] = combine(claim, rules, text.combine, text.primary, text.split) if measured else None
    return out


def keras3_cells(df: pd.DataFrame, nodes: dict[str, dict]) -> list[tuple[str, list[str], list[tuple[dict, list]]]]:
    """Per scenario with Keras 3 runs of two or more setups (backend / Keras release): (scenario, setups,
    [(rule, [RuleResult or None per setup])]), each Keras 3 rule judged on each setup's runs alone."""
    k3 = keras3_runs(df)
    out = []
    for scen, node in nodes.items():
        rules = [r for r in node.get("verdicts") or [] if _applies_to_keras3(r)]
        runs = k3[k3["scenario"] == scen]
        if not rules or runs["_setup"].nunique() < 2:
            continue
        here = sorted(runs["_setup"].unique())
        rows = []
        for rule in rules:
            cells = []
            for setup in here:
                r = evaluate(runs[runs["_setup"] == setup], rule, rule["claim"], scen)
                cells.append(None if r.key is None or r.key.n_seeds == 0 else r)
            rows.append((rule, cells))
        out.append((scen, here, rows))
    return out


def keras3_runs(df: pd.DataFrame) -> pd.DataFrame:
    """The Keras 3 records with `_setup` = '<backend> / Keras <release>' (records from before backends: TensorFlow)."""
    k3 = df[df["semantics"] == "keras3"]

    def column(name, missing):
        return k3[name].fillna(missing).astype(str) if name in k3 else pd.Series(missing, index=k3.index)

    return k3.assign(_setup=column("keras_backend", "tensorflow") + " / Keras " + column("keras", "?"))


def _applies_to_keras3(rule: dict) -> bool:
    wanted = (rule.get("where") or {}).get("semantics")
    return wanted is None or wanted == "keras3" or (isinstance(wanted, list) and "keras3" in wanted)


def plain_records(df: pd.DataFrame) -> list[dict]:
    """The table's rows as records again, without the cells pandas filled in for keys a record lacks (NaN)."""
    def missing(value) -> bool:
        return isinstance(value, float) and value != value

    return [{k: v for k, v in rec.items() if not missing(v)} for rec in df.to_dict("records")] if not df.empty else []
