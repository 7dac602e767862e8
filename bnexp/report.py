"""Tables, figures and results/report.md from the stored records (`python -m bnexp report`).

Every number in the report is computed here from the records; every sentence of interpretation is
generated from those numbers (verdicts from the rules in the scenario configs, fixed before the sweep).
"""

from __future__ import annotations

import json
import platform
import os
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd
from omegaconf import OmegaConf

from bnexp import CONFIG_DIR
from bnexp.config_check import scenario_configs
from bnexp.store import Store
from bnexp.verdicts import Verdict, evaluate_all, mean_ci

CLAIM_LINES = {  # one line per claim, our words (full text: CLAIMS.md in the project's shared notes)
    "C01": ("002", "High momentum + few batches leave moving stats near 0/1: inference acc far below batch-stats acc"),
    "C02": ("002", "Momentum exp(-1/B) for B batches removes that gap"),
    "C03": ("002", "training=False hard-coded: moving stats never update; the model acts as if it had no BN"),
    "C04": ("002", "training=True hard-coded: a prediction depends on the rest of its batch"),
    "C05": ("000", "TF2 fine-tuning: trainable=True alone gives high train / low test acc; base needs training=True"),
    "C06": ("000", "Keras <= 2.2.4 frozen BN: batch stats in training, source moving stats at inference"),
    "C07": ("000, 004", "Keras 2 training=None follows the learning phase; hard-coded flags make fit = predict"),
    "C08": ("001, 003, 004", "TF1: without a dependency on UPDATE_OPS the moving stats never update"),
    "C09": ("001", "A checkpoint of trainable variables only loses the moving statistics"),
    "C10": ("004", "get_weights() order is [gamma, beta, mean, variance]; writing std in slot 4 changes inference"),
    "C11": ("003", "BN degrades at small batch sizes; GN/LN (and BRN) do not"),
    "C12": ("003", "Inference should use the unbiased population variance; the biased one hurts at small batch"),
    "C13": ("000, 003", "BN trains faster, ends more accurate and tolerates higher learning rates"),
    "C14": ("004", "fit updates the moving stats; predict and evaluate leave them unchanged"),
    "C15": ("guide", "Unfrozen base called with training=False keeps BN in inference mode during fine-tuning"),
    "R1": ("Wu & Johnson 2021", "Remedy: recompute population statistics after training (precise BN)"),
}
KEY_METRICS = ("acc_train_fit", "acc_train_batchstats", "acc_train_moving", "acc_train_precise",
               "acc_test_batchstats", "acc_test_moving", "acc_test_precise", "gap_test")
META = {"run_id", "scenario", "claims", "status", "error", "seed", "wall_s", "child_s", "peak_rss_mb", "device",
        "tensorflow", "keras", "git_commit", "started_at", "dataset", "semantics"}


def config_keys(scenario: str) -> set[str]:
    """Flattened keys of the scenario's composed config: the columns of a record that are settings."""
    from hydra import compose, initialize_config_dir

    from bnexp.store import flatten, identity

    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("config", overrides=[f"scenario={scenario}"])
    return set(flatten(identity(OmegaConf.to_container(cfg, resolve=True))))


def factors(df: pd.DataFrame, keys: set[str]) -> list[str]:
    """Settings that vary across this scenario's runs (seed excluded)."""
    return [c for c in df.columns if c in keys and c != "seed" and not c.startswith("scenario.")
            and df[c].astype(str).nunique() > 1]


def metrics(df: pd.DataFrame, keys: set[str]) -> list[str]:
    numeric = [c for c in df.columns if c not in META and c not in keys and not c.startswith("stat.")
               and pd.api.types.is_numeric_dtype(df[c])]
    first = [m for m in KEY_METRICS if m in numeric]
    return first + [m for m in numeric if m not in first]


def summary(df: pd.DataFrame, facs: list[str], cols: list[str]) -> pd.DataFrame:
    """Mean and 95% CI half-width over seeds for every factor combination."""
    ok = df[df["status"] == "ok"] if "status" in df else df
    if ok.empty:
        return pd.DataFrame()
    keyed = ok.assign(**{f: ok[f].astype(str) for f in facs})
    rows = []
    for key, g in (keyed.groupby(facs, dropna=False) if facs else [((), keyed)]):
        key = key if isinstance(key, tuple) else (key,)
        row = dict(zip(facs, key))
        row["seeds"] = g["seed"].nunique()
        for c in cols:
            mean, lo, hi = mean_ci(pd.to_numeric(g[c], errors="coerce").dropna())
            row[c] = mean
            row[f"{c}_ci"] = (hi - mean) if np.isfinite(hi) else np.nan
        rows.append(row)
    return pd.DataFrame(rows)


def _md_table(df: pd.DataFrame, cols: list[str], digits: int = 3) -> str:
    show = df.copy()
    for c in cols:
        if c in show and f"{c}_ci" in show:
            show[c] = [f"{m:.{digits}f} ± {h:.{digits}f}" if np.isfinite(h) else (f"{m:.{digits}f}" if np.isfinite(m) else "")
                       for m, h in zip(show[c], show[f"{c}_ci"])]
    keep = [c for c in show.columns if not c.endswith("_ci")]
    return show[keep].to_markdown(index=False, floatfmt=f".{digits}f")


def build(results_dir: str | os.PathLike = "results") -> Path:
    """Write tables/, figures/ and report.md under `results_dir`; return the report's path."""
    from bnexp import figures

    root = Path(results_dir)
    store = Store(root)
    tables, figdir = root / "tables", root / "figures"
    tables.mkdir(parents=True, exist_ok=True)
    figdir.mkdir(parents=True, exist_ok=True)
    configs = scenario_configs()
    all_df = store.table()
    verdicts: list[tuple[str, Verdict]] = []
    sections, first_figure = [], {}
    for name, scfg in configs.items():
        df = all_df[all_df["scenario"] == name] if not all_df.empty else pd.DataFrame()
        if df.empty:
            continue
        df = df.dropna(axis=1, how="all")
        df.to_csv(tables / f"{name}.csv", index=False)
        keys = config_keys(name)
        facs = factors(df, keys)
        cols = [c for c in (scfg.get("report", {}) or {}).get("metrics", []) if c in df] or metrics(df, keys)[:8]
        summ = summary(df, facs, cols)
        summ.to_csv(tables / f"{name}_summary.csv", index=False)
        if not summ.empty:
            (tables / f"{name}_summary.md").write_text(_md_table(summ, cols) + "\n")
        figs = figures.draw(name, df, figdir)
        results = evaluate_all(df, scfg.get("verdicts", []) or [])
        verdicts.extend((name, v) for v in results)
        if figs:
            first_figure[name] = figs[0][0]
        sections.append(_section(name, scfg, df, summ, cols, figs, results, root))
    text = _header(all_df, verdicts, first_figure, root) + "\n".join(sections) + _environment(all_df, root)
    out = root / "report.md"
    out.write_text(text)
    return out


def _rel(path: Path, root: Path) -> str:
    return os.path.relpath(path, root)


def _header(all_df, verdicts, first_figure, root) -> str:
    lines = ["# bnexp report", "",
             "Every number below is recomputed by `python -m bnexp report` from the run records in "
             "`results/runs/`. Verdict rules are fixed in `configs/scenario/*.yaml` before the sweep; "
             "numbers are mean [95% CI] over seeds.", "",
             "## Verdicts", "",
             "| claim | claim in one line | source note | verdict | key number [95% CI] | seeds | rule | figure |",
             "|---|---|---|---|---|---|---|---|"]
    by_claim = {}
    for scen, v in verdicts:
        by_claim.setdefault(v.claim, []).append((scen, v))
    for claim in sorted(set(CLAIM_LINES) | set(by_claim)):
        src, line = CLAIM_LINES.get(claim, ("", ""))
        if claim not in by_claim:
            lines.append(f"| {claim} | {line} | {src} | not measured (no records) | | | | |")
            continue
        for scen, v in by_claim[claim]:
            fig = first_figure.get(scen)
            link = f"[fig]({_rel(fig, root)})" if fig and Path(fig).exists() else ""
            says = f" ({v.says})" if v.says else ""
            cells = [claim, line + says, src, f"**{v.verdict}**", v.number(), str(v.n_seeds), f"{scen}: {v.rule}", link]
            lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines) + "\n\n"


def _section(name, scfg, df, summ, cols, figs, results, root) -> str:
    ok = int((df["status"] == "ok").sum()) if "status" in df else len(df)
    lines = [f"## Scenario `{name}` ({', '.join(scfg.get('claims', []))})", "",
             (scfg.get("description") or "").strip(), "",
             f"Runs: {len(df)} ({ok} ok). Reproduce: `python -m bnexp sweep sweep=reference scenarios={name}` "
             f"(one run: `python -m bnexp run scenario={name}`).", ""]
    bad = df[df["status"] != "ok"] if "status" in df else df.iloc[0:0]
    if not bad.empty:
        lines += [f"Runs that did not finish ok ({len(bad)}):", ""]
        lines += [f"- `{r.run_id}` {r.status}: {str(r.error)[:200]}" for r in bad.itertuples()][:10]
        lines.append("")
    for v in results:
        lines.append(f"- **{v.claim}: {v.verdict}**: {v.rule}; measured {v.number()} over {v.n_seeds} seeds.")
        for value, g in v.groups.items():
            lines.append(f"  - {value}: {g.verdict}, {g.number()}")
    lines.append("")
    if not summ.empty:
        lines += [f"Summary (mean ± 95% CI half-width; table: `tables/{name}_summary.csv`):", "",
                  _md_table(summ, cols), ""]
    for path, caption in figs:
        lines += [f"![{caption}]({_rel(path, root)})", f"*{caption}*", ""]
    return "\n".join(lines) + "\n"


def _environment(all_df, root) -> str:
    lines = ["## Environment", ""]
    if not all_df.empty:
        for col in ("tensorflow", "keras", "device", "git_commit"):
            if col in all_df:
                counts = all_df[col].dropna().astype(str).value_counts().sort_index()
                lines.append(f"- {col} (runs): {', '.join(f'{k} ({n})' for k, n in counts.items())}")
    lines.append(f"- machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}")
    for f in sorted((root / "sweeps").glob("*.json")):
        s = json.loads(f.read_text())
        lines.append(f"- sweep `{s['name']}`: {s['runs']} runs ({s['already_done']} already done at start), "
                     f"{s['seconds']:.0f} s wall, {s['jobs']} parallel jobs, finished {s['finished']}")
    lines.append(f"- report built {datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}")
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> None:
    results_dir = "results"
    for a in argv:
        if a.startswith("paths.results_dir="):
            results_dir = a.split("=", 1)[1]
    print(f"bnexp: report written to {build(results_dir)}")
