"""The report's rendering half: report.md's markdown from what bnexp.report_compute computed.

Formats numbers and verdicts into text; computes no verdict and reads no records (the figures, drawn from the
records, are bnexp.figures). Each function takes the computed objects it shows.
"""

from __future__ import annotations

import os
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd

from bnexp import manifest, provenance
from bnexp.report_compute import Judged, Records, Section, keras3_cells, keras3_runs, plain_records
from bnexp.scenario_spec import ClaimText
from bnexp.values import labels
from bnexp.verdicts import MIN_SEEDS, ClaimVerdict, RuleResult, tally

ALL = "all"  # sweep=all: every record in the folder (no planned set)
SHOWN_IGNORED = 5


def md_table(df: pd.DataFrame, cols: list[str], digits: int = 3) -> str:
    show = df.copy()
    for c in cols:
        if c in show and f"{c}_ci" in show:
            show[c] = [f"{m:.{digits}f} ± {h:.{digits}f}" if np.isfinite(h)
                       else (f"{m:.{digits}f}" if np.isfinite(m) else "")
                       for m, h in zip(show[c], show[f"{c}_ci"])]
    keep = [c for c in show.columns if not c.endswith("_ci")]
    return show[keep].to_markdown(index=False, floatfmt=f".{digits}f")


def _n(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _rel(path: Path, root: Path) -> str:
    return os.path.relpath(path, root)


def _shown(root: Path) -> str:
    """The results folder as the user would type it: relative to the working directory when inside it."""
    rel = os.path.relpath(root.absolute(), Path.cwd()) if root.is_absolute() else str(root)
    return root.as_posix() if rel.startswith("..") else Path(rel).as_posix()


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


def report(records: Records, judged: Judged, keras3: str, conformance: str = "") -> str:
    """report.md: the header with the claims table, a section per scenario with records, then the Keras 3
    comparison (`keras3`, rendered by keras3_outcomes), any further section given, provenance and environment."""
    text = [header(records, judged)]
    text += [section(s, judged, records.root) for s in judged.sections.values()]
    text += [keras3, *([conformance] if conformance else []), _provenance(records.df),
             _environment(records.root, records.name, records.df)]
    return "\n".join(text)


def header(records: Records, judged: Judged) -> str:
    """Title, smoke and provenance warnings, which records were used, how to read a verdict, the claims table."""
    name, data, df, ignored, missing, root = (records.name, records.manifest, records.df, records.ignored,
                                              records.missing, records.root)
    lines = ["# bnexp report", ""]
    reasons = _smoke_reasons(name, df, missing)
    if reasons:
        lines += [f"> **Smoke run: these verdicts mean nothing.** {'; '.join(reasons)}. Verdicts need the "
                  "reference sweep (`make sweep`, then `python -m bnexp report sweep=reference`).", ""]
    problems = provenance.warnings(plain_records(df))
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
            ids = ", ".join(f"{s}/{r}" for s, r in zip(ignored["scenario"][:SHOWN_IGNORED],
                                                      ignored["run_id"][:SHOWN_IGNORED]))
            more = " ..." if len(ignored) > SHOWN_IGNORED else ""
            lines.append(f"Ignored: {len(ignored)} record(s) in the folder outside that set ({ids}{more}).")
        if missing:
            ids = ", ".join(f"{s}/{r}" for s, r in missing[:SHOWN_IGNORED])
            more = " ..." if len(missing) > SHOWN_IGNORED else ""
            lines.append(f"Missing: {len(missing)} planned run(s) without a record ({ids}{more}).")
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
              "| claim | in our words | source | verdict | number that carries it [95% CI] | seeds | rules "
              "| evidence |",
              "|---|---|---|---|---|---|---|---|"]
    for claim, cv in judged.claims.items():
        spec = judged.texts.get(claim) or ClaimText(claim, "")
        if cv is None:
            lines.append(f"| {claim} | {_cell(spec.text)} | {_cell(spec.source)} | not measured (no records) | | | | |")
            continue
        number, seeds = _number_cell(cv)
        scen = cv.deciding.scenario
        evidence = f"[section](#scenario-{scen})"
        if (scen, claim) in judged.figure_of:
            evidence += f", [figure]({_rel(judged.figure_of[(scen, claim)], root)})"
        rules = f"{cv.combine.split(';')[0]} ({tally(cv.rules)})"
        tag = " (exploratory: a hypothesis from earlier tables, not a test of a source's claim)" \
            if spec.exploratory else ""
        cells = [claim, spec.text, spec.source, f"**{cv.verdict}**{tag}" + _brief(cv),
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
        parts.append(f"`{sem}`: " + ", ".join(f"TensorFlow {tf}, Keras {k} ({_n(n, 'run')})"
                                              for (tf, k), n in combos.items()))
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


def section(sec: Section, judged: Judged, root: Path) -> str:
    """One scenario: description, runs, each claim's verdict with its rules here, the summary table, figures."""
    scen, df = sec.spec.name, sec.df
    ok = int((df["status"] == "ok").sum()) if "status" in df else len(df)
    lines = [f'<a id="scenario-{scen}"></a>', "",
             f"## Scenario `{scen}` ({', '.join(sec.spec.claims)})", "",
             sec.spec.description, "",
             f"Runs: {len(df)} ({ok} ok). Semantics and versions: {_versions(df) or 'not recorded'}. Reproduce: "
             f"`python -m bnexp sweep sweep=reference scenarios={scen}` (one run: "
             f"`python -m bnexp run scenario={scen}`).",
             ""]
    bad = df[df["status"] != "ok"] if "status" in df else df.iloc[0:0]
    if not bad.empty:
        lines += [f"Runs that did not finish ok ({len(bad)}):", ""]
        lines += [f"- `{r.run_id}` {r.status}: {str(r.error)[:200]}" for r in bad.itertuples()][:10]
        lines.append("")
    for claim in dict.fromkeys(r.claim for r in sec.results):
        cv, spec = judged.claims[claim], judged.texts.get(claim) or ClaimText(claim, "")
        here = [r for r in sec.results if r.claim == claim]
        lines += [f"### {claim}: {spec.text}", "",
                  f"Claim verdict: **{cv.text}** ({cv.combine}; rules in all scenarios: {tally(cv.rules)}).", ""]
        for r in here:
            lines += _rule_lines(r)
        lines.append("")
    if not sec.summary.empty:
        lines += [f"Summary of the metrics the rules use (mean ± 95% CI half-width over seeds; "
                  f"table: `tables/{scen}_summary.csv`):", "", md_table(sec.summary, sec.columns), ""]
    for path, caption in sec.figures:
        lines += [f"![{caption}]({_rel(path, root)})", f"*{caption}*", ""]
    return "\n".join(lines) + "\n"


def keras3_outcomes(df: pd.DataFrame, configs: dict[str, dict]) -> str:
    """Per Keras 3 claim, each of its rules judged apart on the runs of every backend and Keras release that
    ran (the records' keras_backend and keras fields); a pointer to that sweep unless the records hold more
    than one of them. `configs`: scenario name -> its `scenario:` node."""
    if df.empty or "semantics" not in df:
        return ""
    setups = sorted(keras3_runs(df)["_setup"].unique())
    if len(setups) < 2:
        return ("## Keras 3 claims by backend and Keras release\n\nThese records hold one Keras 3 setup only "
                f"({', '.join(setups) or 'none'}). The grids on JAX, PyTorch and older Keras releases are a sweep "
                "of their own, `make sweep SWEEP=frameworks` (configs/sweep/frameworks.yaml); its report, in "
                "results/local/, has this table.\n")
    lines = ["## Keras 3 claims by backend and Keras release", "",
             "Each rule judged on the Keras 3 runs of one backend and Keras release only (the release that ran, "
             "from the records); cells: the verdict and the deciding mean [95% CI]; '-' where no run matches.", ""]
    for scen, here, rows in keras3_cells(df, configs):
        lines += [f"### `{scen}`", "", "| rule | " + " | ".join(here) + " |", "|---" * (len(here) + 1) + "|"]
        for rule, results in rows:
            cells = ["-" if r is None else _cell(f"{r.verdict} {r.key.number()}") for r in results]
            lines.append(f"| {rule['claim']}: {_cell(rule.get('says', ''))[:90]} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines) + "\n"


def _provenance(df: pd.DataFrame) -> str:
    lines = ["## Provenance", "",
             "Each run's record carries the fingerprint of the code that computed it (its experiment module, the "
             "project modules that module and the run's child process import, and the pinned framework versions: "
             "`bnexp/fingerprint.py`). A scenario is current when every record's fingerprint is the one this "
             "checkout computes; `make sweep` redoes the runs of the others and nothing else. Rules, claim texts "
             "and figures are not part of it: `bnexp report` rebuilds them.", "",
             "| scenario | runs | commit(s) | fingerprint(s) | current |", "|---|---|---|---|---|"]
    for s in provenance.by_scenario(plain_records(df)):
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
