"""Tables, figures and report.md from a named set of records (`python -m bnexp report [sweep=NAME]`).

The set is the planned run ids of one sweep (its manifest, `bnexp.manifest`); records in the folder
outside it are listed as ignored, never used. Every number in the report is computed here from those
records; every sentence of interpretation is generated from those numbers (verdicts from the rules and
claim lines in the scenario configs, fixed before the sweep).
"""

from __future__ import annotations

import contextlib
import os
import re
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd
from omegaconf import OmegaConf

from bnexp import CONFIG_DIR, atomic, manifest, provenance
from bnexp.config_check import scenario_configs
from bnexp.errors import UserError
from bnexp import store
from bnexp.store import Store
from bnexp.verdicts import (MIN_SEEDS, ClaimVerdict, RuleResult, combine, describe, evaluate, labels, mean_ci, sort_key,
                            tally)

ALL = "all"  # sweep=all: every record in the folder (no planned set)
RECORDS_FILE = store.RECORDS_FILE  # the report's records (bnexp.store): it rebuilds without training
SHOWN_IGNORED = 5


def is_timing(column: str) -> bool:
    """Seconds and rates measured on the wall clock (every such record column ends in `_s`)."""
    return column.endswith("_s")


def config_keys(scenario: str) -> set[str]:
    """Flattened keys of the scenario's composed config: the columns of a record that are settings."""
    from hydra import compose, initialize_config_dir

    from bnexp.store import flatten, identity

    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("config", overrides=[f"scenario={scenario}"])
    return set(flatten(identity(OmegaConf.to_container(cfg, resolve=True))))


def factors(df: pd.DataFrame, keys: set[str]) -> list[str]:
    """Settings that vary across this scenario's runs (seed excluded); null, false and true are three values."""
    return [c for c in df.columns if c in keys and c != "seed" and not c.startswith("scenario.")
            and labels(df[c]).nunique() > 1]


def claim_specs(configs: dict[str, dict]) -> dict[str, dict]:
    """claim -> {source, text, combine, primary, scenario}: the `claim_text` blocks of every scenario config.
    A claim is described once, in one scenario's file."""
    out: dict[str, dict] = {}
    for name, scfg in configs.items():
        for claim, spec in (scfg.get("claim_text") or {}).items():
            if claim in out:
                raise UserError(f"claim {claim} is described in configs/scenario/{out[claim]['scenario']}.yaml "
                                f"and {name}.yaml; describe it once")
            out[claim] = {"source": "", "text": "", "combine": "all", **spec, "scenario": name}
    return out


NO_RECORDS = "no records of scenario"  # the detail of a rule whose scenario has no records (judged as inconclusive)


def labelled_rules(configs: dict[str, dict]) -> dict[str, list[tuple[dict, str]]]:
    """scenario -> [(rule, label)]: C06/<id>, or C06.<n> numbered per claim across every scenario, so a claim
    whose rules sit in several scenarios (R1) never has two rules of the same label."""
    count: dict[str, int] = {}
    out: dict[str, list[tuple[dict, str]]] = {}
    for scen, scfg in configs.items():
        out[scen] = []
        for rule in scfg.get("verdicts", []) or []:
            count[rule["claim"]] = count.get(rule["claim"], 0) + 1
            label = f"{rule['claim']}/{rule['id']}" if rule.get("id") else f"{rule['claim']}.{count[rule['claim']]}"
            out[scen].append((rule, label))
    return out


def rule_columns(rules: list[dict], df: pd.DataFrame) -> list[str]:
    """The record columns the rules read (an expression's columns, in order)."""
    out = []
    for rule in rules:
        metric = rule["metric"]
        tokens = [t.strip("`") for t in re.split(r"[\s+\-*/()]+", metric)]  # `a.b` quotes a dotted column
        names = [metric] if metric in df else [t for t in tokens if t in df]
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


def _md_table(df: pd.DataFrame, cols: list[str], digits: int = 3) -> str:
    show = df.copy()
    for c in cols:
        if c in show and f"{c}_ci" in show:
            show[c] = [f"{m:.{digits}f} ± {h:.{digits}f}" if np.isfinite(h) else (f"{m:.{digits}f}" if np.isfinite(m) else "")
                       for m, h in zip(show[c], show[f"{c}_ci"])]
    keep = [c for c in show.columns if not c.endswith("_ci")]
    return show[keep].to_markdown(index=False, floatfmt=f".{digits}f")


def _n(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _rel(path: Path, root: Path) -> str:
    return os.path.relpath(path, root)


# --- the named set of records ---------------------------------------------------------------------------------

def records(root: Path, sweep: str | None) -> tuple[str, dict | None, pd.DataFrame, pd.DataFrame, list]:
    """(sweep name, its manifest, the records in its planned set, the ignored records, planned ids with no record).

    sweep=None: `reference` if it has planned run ids, else the newest manifest that has them, else every record
    (said at the top of the report). sweep=all: every record in the folder.
    """
    everything = Store(root).table()  # runs/ and the committed records.jsonl.gz (a fresh clone has only that)
    name = sweep or manifest.default_sweep(root) or ALL
    if name == ALL:
        return name, None, everything, everything.iloc[0:0], []
    data = manifest.read(root, name)
    known = manifest.sweep_names()
    if data is None and name not in known:  # no such sweep at all: never advise running it
        have = ", ".join(manifest.all_manifests(root)) or "none"
        raise UserError(f"unknown sweep {name!r}; sweeps: {', '.join(known)} (with a manifest in {root}: {have}); "
                        f"or report every record with sweep=all")
    if data is None:
        have = ", ".join(manifest.all_manifests(root)) or "none"
        raise UserError(f"no sweep manifest {manifest.path(root, name)} (sweeps there: {have}); run "
                        f"`python -m bnexp sweep sweep={name}` first, or report every record with sweep=all")
    if not data.get("planned"):
        raise UserError(f"sweep manifest {manifest.path(root, name)} has no planned run ids (an older bnexp wrote it); "
                        f"run `python -m bnexp sweep sweep={name}` again: finished runs are skipped and the plan is written")
    planned = manifest.planned_ids(data)
    if everything.empty:
        return name, data, everything, everything, sorted(planned)
    inside = pd.Series([(s, r) in planned for s, r in zip(everything["scenario"], everything["run_id"])],
                       index=everything.index)
    found = set(zip(everything["scenario"][inside], everything["run_id"][inside]))
    return name, data, everything[inside], everything[~inside], sorted(planned - found)


def write_records(df: pd.DataFrame, path: Path) -> None:
    """The records a report used, sorted, as gzipped JSON lines (byte-identical for the same records)."""
    with _named(path):
        store.write_records(_plain_records(df), path)


def _missing(value) -> bool:
    """A cell pandas filled in for a key this record does not have (NaN), not a value the record holds."""
    return isinstance(value, float) and value != value


# --- building --------------------------------------------------------------------------------------------------

def build(results_dir: str | os.PathLike = "results", sweep: str | None = None) -> Path:
    """Write tables/, figures/ and report.md under `results_dir` from the records of `sweep`; return the path."""
    from bnexp import figures

    root = Path(results_dir)
    name, data, df_all, ignored, missing = records(root, sweep)
    tables, figdir = root / "tables", root / "figures"
    tables.mkdir(parents=True, exist_ok=True)
    figdir.mkdir(parents=True, exist_ok=True)
    configs = scenario_configs()
    specs = claim_specs(configs)
    results: dict[str, list[RuleResult]] = {}
    sections, figure_of = {}, {}
    rule_labels = labelled_rules(configs)
    for scen, scfg in configs.items():
        df = df_all[(df_all["scenario"] == scen) & default_setup(df_all)] if not df_all.empty else pd.DataFrame()
        rules = scfg.get("verdicts", []) or []
        if df.empty:  # its claims' rules are still listed, as unjudged
            results[scen] = [RuleResult(rule["claim"], label, "inconclusive", describe(rule), rule.get("says", ""),
                                        rule["metric"], scen, detail=f"{NO_RECORDS} {scen}",
                                        role=rule.get("role", "evidence"), aspect=str(rule.get("aspect") or ""))
                             for rule, label in rule_labels[scen]]
            continue
        df = df.dropna(axis=1, how="all")
        _write_csv(df, tables / f"{scen}.csv")
        results[scen] = [evaluate(df, rule, label, scen) for rule, label in rule_labels[scen]]
        keys = config_keys(scen)
        facs = factors(df, keys)
        wanted = rule_columns(rules, df) + [c for c in (scfg.get("report") or {}).get("metrics", []) if c in df]
        cols = [c for c in dict.fromkeys(wanted) if not is_timing(c)]
        summ = summary(df, facs, cols)
        _write_csv(summ, tables / f"{scen}_summary.csv")
        if not summ.empty:
            _write_text(tables / f"{scen}_summary.md", _md_table(summ, cols) + "\n")
        figs = figures.draw(scen, df, figdir)
        drawn = {Path(f).stem: Path(f) for f, _ in figs}
        for claim in {r["claim"] for r in rules}:  # each verdict links the figure of its own claim's evidence
            own = [drawn[f] for f in figures.files_for(claim, scfg.get("figures") or []) if f in drawn]
            if own or figs:
                figure_of[(scen, claim)] = own[0] if own else figs[0][0]
        sections[scen] = (scfg, df, summ, cols, figs)
    if not (df_all.empty and ignored.empty):  # every record read, strays included, so a rebuild says the same
        write_records(pd.concat([df_all, ignored]), root / RECORDS_FILE)
    claims = _claims(specs, results)
    judged = {(r.scenario, r.label): r for cv in claims.values() if cv for r in cv.rules}  # as premises gated them
    results = {scen: [judged.get((scen, r.label), r) for r in rules] for scen, rules in results.items()}
    text = [_header(name, data, df_all, ignored, missing, claims, specs, figure_of, root)]
    for scen, (scfg, df, summ, cols, figs) in sections.items():
        text.append(_section(scen, scfg, df, summ, cols, figs, results[scen], claims, specs, root))
    text.append(keras3_outcomes(df_all, configs))
    text.append(_provenance(df_all))
    text.append(_environment(root, name, df_all))
    out = root / "report.md"
    _write_text(out, "\n".join(text))
    return out


@contextlib.contextmanager
def _named(path: Path):
    """An OSError of a write (a full disk fails in write or flush, without a file name) names `path`."""
    try:
        yield
    except OSError as e:
        if e.filename is None:
            e.filename = str(path)
        raise


def _write_csv(df: pd.DataFrame, path: Path) -> None:
    """A table, complete or absent (bnexp.atomic): a full disk leaves the old file or none, never a part."""
    with _named(path), atomic.atomic_open(path, "w") as f:
        df.to_csv(f, index=False)


def _write_text(path: Path, text: str) -> None:
    with _named(path):
        atomic.write_text(path, text)


def _shown(root: Path) -> str:
    """The results folder as the user would type it: relative to the working directory when inside it."""
    rel = os.path.relpath(root.absolute(), Path.cwd()) if root.is_absolute() else str(root)
    return root.as_posix() if rel.startswith("..") else Path(rel).as_posix()


def _claims(specs: dict, results: dict[str, list[RuleResult]]) -> dict[str, ClaimVerdict | None]:
    by_claim: dict[str, list[RuleResult]] = {}
    for rules in results.values():
        for r in rules:
            by_claim.setdefault(r.claim, []).append(r)
    out: dict[str, ClaimVerdict | None] = {}
    for claim in sorted(set(specs) | set(by_claim), key=lambda c: (c.startswith("R"), c)):
        spec = specs.get(claim, {})
        rules = by_claim.get(claim)
        measured = rules and not all(r.detail.startswith(NO_RECORDS) for r in rules)
        out[claim] = (combine(claim, rules, spec.get("combine", "all"), spec.get("primary"), spec.get("split"))
                      if measured else None)
    return out


def _smoke_reasons(name: str, df: pd.DataFrame, missing: list) -> list[str]:
    reasons = []
    if name == "quick":
        reasons.append("sweep `quick` is the smoke grid: tiny runs, one seed")
    ok = df[df["status"] == "ok"] if "status" in df and not df.empty else df
    seeds = ok["seed"].nunique() if "seed" in ok else 0
    if seeds < MIN_SEEDS:
        reasons.append(f"{_n(seeds, 'seed')} (a verdict needs at least {MIN_SEEDS})")
    if missing:
        reasons.append(f"{len(missing)} planned run(s) have no record (the sweep did not finish)")
    return reasons


def _number_cell(cv: ClaimVerdict) -> tuple[str, str]:
    """The deciding rule's worst group; for `depends`, also where it holds (a holding group, or aspect)."""
    r = cv.deciding
    key = r.key if r else None
    if key is None:
        return "n/a", ""
    where = f" ({key.label})" if key.label else ""
    text = f"{key.number()}{where}: {r.label}, {r.metric}"
    if cv.verdict.startswith("depends"):
        failing = [g for g in r.groups if g.outcome == "fails" and np.isfinite(g.support)]
        unmet = [g.label for g in r.groups if g.outcome == "precondition not met"]
        if failing:
            worst = min(failing, key=lambda g: g.support)
            text = f"fails: {worst.number()} ({worst.label}): {r.label}, {r.metric}"
        elif unmet:
            text = f"precondition not met: {', '.join(unmet)} ({r.label})"
        other = cv.holding or r
        held = [g for g in other.groups if g.outcome == "holds" and np.isfinite(g.support)]
        if held:
            best = max(held, key=lambda g: g.support)
            at = f" ({best.label})" if best.label else ""
            text += f"; holds: {best.number()}{at}: {other.label}, {other.metric}"
    return text, str(key.n_seeds)


def _header(name, data, df, ignored, missing, claims, specs, figure_of, root) -> str:
    lines = ["# bnexp report", ""]
    reasons = _smoke_reasons(name, df, missing)
    if reasons:
        lines += [f"> **Smoke run: these verdicts mean nothing.** {'; '.join(reasons)}. Verdicts need the "
                  "reference sweep (`make sweep`, then `python -m bnexp report sweep=reference`).", ""]
    problems = provenance.warnings(_plain_records(df))
    if problems:
        lines += [f"> **Provenance: {'; '.join(problems)}.** The numbers below are not all from the current code "
                  "(see [Provenance](#provenance)).", ""]
    if name == ALL:
        lines.append(f"Built from every record in `{_shown(root)}/runs/` ({len(df)}), not from a sweep's planned set "
                     "(no sweep manifest with planned run ids was found, or sweep=all was asked for).")
    else:
        lines.append(f"Built from the {len(manifest.planned_ids(data))} planned runs of sweep `{name}` "
                     f"(`sweeps/{name}.json`): {len(df)} records found.")
        if len(ignored):
            ids = ", ".join(f"{s}/{r}" for s, r in zip(ignored["scenario"][:SHOWN_IGNORED], ignored["run_id"][:SHOWN_IGNORED]))
            more = " ..." if len(ignored) > SHOWN_IGNORED else ""
            lines.append(f"Ignored: {len(ignored)} record(s) in the folder outside that set ({ids}{more}).")
        if missing:
            ids = ", ".join(f"{s}/{r}" for s, r in missing[:SHOWN_IGNORED])
            lines.append(f"Missing: {len(missing)} planned run(s) without a record ({ids}{' ...' if len(missing) > SHOWN_IGNORED else ''}).")
    bad = int((df["status"] != "ok").sum()) if "status" in df and not df.empty else 0
    if bad:
        lines.append(f"{bad} run(s) did not finish ok: the verdicts use the ok runs only (each section lists them).")
    lines += ["",
              "Every number below is recomputed by `python -m bnexp report` from those records. Verdict rules and "
              "how they combine into a claim's verdict are fixed in `configs/scenario/*.yaml` before the sweep; "
              "numbers are mean [95% Student-t CI] over seeds, each seed counted once. The number shown for a "
              "claim is the rule that decides its verdict, at its worst group (the one with the least support for "
              "the prediction), never a pool of groups.", "",
              "How to read a verdict (CLAIMS.md): `reproduced` / `not reproduced` where every group's interval "
              "clears the rule's boundary (threshold plus the smallest effect that counts) one way; `depends on X` "
              "only where the claim holds for some values of X and fails, or has its premise false, for others; "
              "`inconclusive` where an interval straddles the boundary (including a claim that holds or fails for "
              "some groups while others are unsettled); `precondition not met` where the premise the claim rests "
              "on is false (e.g. the framework ignores the flag the claim is about). Each rule's *Power* line gives "
              "its widest 95% interval half-width: effects closer to the boundary than that cannot be settled "
              "with these seeds.", "",
              "## Verdicts", "",
              "| claim | in our words | source | verdict | number that carries it [95% CI] | seeds | rules | evidence |",
              "|---|---|---|---|---|---|---|---|"]
    for claim, cv in claims.items():
        spec = specs.get(claim, {})
        if cv is None:
            lines.append(f"| {claim} | {_cell(spec.get('text', ''))} | {_cell(spec.get('source', ''))} | "
                         f"not measured (no records) | | | | |")
            continue
        number, seeds = _number_cell(cv)
        scen = cv.deciding.scenario
        evidence = f"[section](#scenario-{scen})"
        if (scen, claim) in figure_of:
            evidence += f", [figure]({_rel(figure_of[(scen, claim)], root)})"
        rules = f"{cv.combine.split(';')[0]} ({tally(cv.rules)})"
        tag = " (exploratory: a hypothesis from earlier tables, not a test of a source's claim)" \
            if spec.get("exploratory") else ""
        cells = [claim, spec.get("text", ""), spec.get("source", ""), f"**{cv.verdict}**{tag}" + _brief(cv),
                 number, seeds, rules, evidence]
        lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    return "\n".join(lines) + "\n"


def _brief(cv: ClaimVerdict, most: int = 6) -> str:
    """The claim's detail for the top table; with many groups, how many went each way (the section lists them)."""
    groups = cv.deciding.groups if cv.deciding else []
    if not cv.detail:
        return ""
    if len(groups) <= most:
        return f": {cv.detail}"
    by_outcome: dict[str, list[str]] = {}
    for g in groups:
        by_outcome.setdefault(g.outcome, []).append(g.label)
    # the few groups that went another way are named; the many are counted
    parts = [f"{o} for {', '.join(names)}" if len(names) <= 3 else f"{o} for {len(names)} of {len(groups)} groups"
             for o, names in by_outcome.items()]
    return f": {cv.deciding.label}: " + "; ".join(parts)


def _versions(df: pd.DataFrame) -> str:
    """'keras3: TensorFlow 2.20.0, Keras 3.11.3 (30 runs); ...' from the records' own fields."""
    if "semantics" not in df:
        return ""
    df = df[df["semantics"].notna()]
    parts = []
    for sem, g in df.groupby(labels(df["semantics"]), sort=True):
        combos = g.assign(tf=labels(g.get("tensorflow", pd.Series(None, index=g.index))),
                          k=labels(g.get("keras", pd.Series(None, index=g.index)))).groupby(["tf", "k"]).size()
        parts.append(f"`{sem}`: " + ", ".join(f"TensorFlow {tf}, Keras {k} ({_n(n, 'run')})" for (tf, k), n in combos.items()))
    return "; ".join(parts)


def _rule_lines(r: RuleResult) -> list[str]:
    says = f" {r.says[:1].upper()}{r.says[1:]}." if r.says else ""
    head = f"- **{r.label}: {r.verdict}**{' (' + r.detail + ')' if r.detail else ''}.{says} Rule: {r.rule}."
    single = len(r.groups) == 1 and not r.groups[0].label
    if single:
        head += f" Measured {r.groups[0].number()} over {_n(r.groups[0].n_seeds, 'seed')}."
    lines = [head]
    if r.resolution == 0:
        lines.append("  - Power: every seed gave the same value in every group (an all-or-nothing measurement): one "
                     "seed of five that disagreed would leave a group inconclusive.")
    elif np.isfinite(r.resolution):
        n = min(g.n_seeds for g in r.groups if np.isfinite(g.lo))
        lines.append(f"  - Power: the widest group's 95% CI is ±{r.resolution:.3g} at {_n(n, 'seed')}: an effect "
                     f"that far or less from the rule's boundary cannot be settled with these seeds.")
    if r.excluded:
        lines.append(f"  - {r.excluded} selected run(s) failed the precondition and are not evidence.")
    if single:
        return lines
    went = {"holds": "as predicted", "fails": "against the prediction"}
    for g in r.groups:
        pred = f" (predicted: {g.expect or 'nothing'}, so {went.get(g.outcome, g.outcome)})" if r.split else ""
        few = (f", fewer than the {r.min_seeds} a verdict needs" if g.verdict == "inconclusive"
               and 0 < g.n_seeds < r.min_seeds else "")
        lines.append(f"  - {g.label}: {g.verdict}{pred}, {g.number()}, {_n(g.n_seeds, 'seed')}{few}")
    return lines


def _section(scen, scfg, df, summ, cols, figs, results, claims, specs, root) -> str:
    ok = int((df["status"] == "ok").sum()) if "status" in df else len(df)
    lines = [f'<a id="scenario-{scen}"></a>', "",
             f"## Scenario `{scen}` ({', '.join(scfg.get('claims', []))})", "",
             (scfg.get("description") or "").strip(), "",
             f"Runs: {len(df)} ({ok} ok). Semantics and versions: {_versions(df) or 'not recorded'}. Reproduce: "
             f"`python -m bnexp sweep sweep=reference scenarios={scen}` (one run: `python -m bnexp run scenario={scen}`).",
             ""]
    bad = df[df["status"] != "ok"] if "status" in df else df.iloc[0:0]
    if not bad.empty:
        lines += [f"Runs that did not finish ok ({len(bad)}):", ""]
        lines += [f"- `{r.run_id}` {r.status}: {str(r.error)[:200]}" for r in bad.itertuples()][:10]
        lines.append("")
    for claim in dict.fromkeys(r.claim for r in results):
        cv, spec = claims[claim], specs.get(claim, {})
        here = [r for r in results if r.claim == claim]
        lines += [f"### {claim}: {spec.get('text', '')}", "",
                  f"Claim verdict: **{cv.text}** ({cv.combine}; rules in all scenarios: {tally(cv.rules)}).", ""]
        for r in here:
            lines += _rule_lines(r)
        lines.append("")
    if not summ.empty:
        lines += [f"Summary of the metrics the rules use (mean ± 95% CI half-width over seeds; "
                  f"table: `tables/{scen}_summary.csv`):", "", _md_table(summ, cols), ""]
    for path, caption in figs:
        lines += [f"![{caption}]({_rel(path, root)})", f"*{caption}*", ""]
    return "\n".join(lines) + "\n"


def default_setup(df: pd.DataFrame) -> pd.Series:
    """Records of the default setup: Keras 3 on TensorFlow with the installed Keras. Verdicts, tables and figures
    use these; runs on JAX/PyTorch or a pinned Keras release are compared in keras3_outcomes instead."""
    keep = pd.Series(True, index=df.index)
    if "backend" in df:
        keep &= df["backend"].isna() | (df["backend"] == "tensorflow")
    if "keras_version" in df:
        keep &= df["keras_version"].isna()
    return keep


def keras3_outcomes(df: pd.DataFrame, configs: dict[str, dict]) -> str:
    """Per Keras 3 claim, each of its rules judged apart on the runs of every backend and Keras release that
    ran (the records' keras_backend and keras fields); empty unless the records hold more than one of them."""
    if df.empty or "semantics" not in df:
        return ""
    k3 = df[df["semantics"] == "keras3"]
    def column(name, missing):
        return k3[name].fillna(missing).astype(str) if name in k3 else pd.Series(missing, index=k3.index)

    # runs recorded before backends existed ran on TensorFlow
    k3 = k3.assign(_setup=column("keras_backend", "tensorflow") + " / Keras " + column("keras", "?"))
    setups = sorted(k3["_setup"].unique())
    if len(setups) < 2:
        return ("## Keras 3 claims by backend and Keras release\n\nThese records hold one Keras 3 setup only "
                f"({', '.join(setups) or 'none'}). The grids on JAX, PyTorch and older Keras releases are a sweep "
                "of their own, `make sweep SWEEP=frameworks` (configs/sweep/frameworks.yaml); its report, in "
                "results/local/, has this table.\n")
    lines = ["## Keras 3 claims by backend and Keras release", "",
             "Each rule judged on the Keras 3 runs of one backend and Keras release only (the release that ran, "
             "from the records); cells: the verdict and the deciding mean [95% CI]; '-' where no run matches.", ""]
    for scen, scfg in configs.items():
        rules = [r for r in scfg.get("verdicts") or [] if _applies_to_keras3(r)]
        runs = k3[k3["scenario"] == scen]
        if not rules or runs["_setup"].nunique() < 2:
            continue
        here = sorted(runs["_setup"].unique())
        lines += [f"### `{scen}`", "", "| rule | " + " | ".join(here) + " |", "|---" * (len(here) + 1) + "|"]
        for rule in rules:
            cells = []
            for setup in here:
                r = evaluate(runs[runs["_setup"] == setup], rule, rule["claim"], scen)
                empty = r.key is None or r.key.n_seeds == 0
                cells.append("-" if empty else _cell(f"{r.verdict} {r.key.number()}"))
            lines.append(f"| {rule['claim']}: {_cell(rule.get('says', ''))[:90]} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines) + "\n"


def _applies_to_keras3(rule: dict) -> bool:
    wanted = (rule.get("where") or {}).get("semantics")
    return wanted is None or wanted == "keras3" or (isinstance(wanted, list) and "keras3" in wanted)


def _plain_records(df: pd.DataFrame) -> list[dict]:
    """The table's rows as records again, without the cells pandas filled in for keys a record lacks."""
    return [{k: v for k, v in rec.items() if not _missing(v)} for rec in df.to_dict("records")] if not df.empty else []


def _provenance(df: pd.DataFrame) -> str:
    lines = ["## Provenance", "",
             "Each run's record carries the fingerprint of the code that computed it (its experiment module, the "
             "project modules that module and the run's child process import, and the pinned framework versions: "
             "`bnexp/fingerprint.py`). A scenario is current when every record's fingerprint is the one this "
             "checkout computes; `make sweep` redoes the runs of the others and nothing else. Rules, claim texts "
             "and figures are not part of it: `bnexp report` rebuilds them.", "",
             "| scenario | runs | commit(s) | fingerprint(s) | current |", "|---|---|---|---|---|"]
    for s in provenance.by_scenario(_plain_records(df)):
        lines.append(f"| {s['scenario']} | {s['runs']} | {', '.join(s['commits'])} | {', '.join(s['fingerprints'])} | "
                     f"{'yes' if s['current'] else '**no**'} |")
    return "\n".join(lines) + "\n"


def _environment(root: Path, name: str, df: pd.DataFrame) -> str:
    lines = ["## Environment", ""]
    if not df.empty:
        for col in ("tensorflow", "keras", "device", "cpu", "onednn", "git_commit"):
            if col in df:
                counts = labels(df[col]).value_counts().sort_index()
                lines.append(f"- {col} (runs): {', '.join(f'{k} ({n})' for k, n in counts.items())}")
    lines.append("- determinism: every run seeds Python, NumPy and TensorFlow and turns on TensorFlow's op determinism "
                 "(tf1 graphs: the graph seed), so a run is bit-identical given its seed on the same processor, "
                 "oneDNN setting and library versions (`tests/test_cli.py::test_same_seed_gives_identical_metrics`); "
                 "a processor with other vector extensions rounds float32 kernels differently, and its numbers "
                 "differ in the last digits (`tests/test_numbers_unchanged.py` states by how much). The intervals "
                 "are over seeds.")
    ids = set(zip(df["scenario"], df["run_id"])) if not df.empty else set()
    for sweep, data in manifest.all_manifests(root).items():
        if sweep != name and not (manifest.planned_ids(data) & ids):
            continue  # a sweep none of whose records are in this report
        if "seconds" in data:
            lines.append(f"- sweep `{sweep}`: {data.get('runs')} runs ({data.get('already_done')} already done at "
                         f"start), {data['seconds']:.0f} s wall, {data.get('jobs')} parallel jobs, finished "
                         f"{data.get('finished')}" + (f" on {data['machine']}" if data.get("machine") else ""))
        else:
            lines.append(f"- sweep `{sweep}`: planned, not finished")
    lines.append(f"- report built {datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}")
    return "\n".join(lines) + "\n"
