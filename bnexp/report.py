"""Tables, figures and report.md from a named set of records (`python -m bnexp report [sweep=NAME]`).

The set is the planned run ids of one sweep (its manifest, `bnexp.manifest`); records in the folder
outside it are listed as ignored, never used. Three steps, each readable alone: bnexp.report_compute judges
the records (rule and claim verdicts, summary tables), bnexp.figures draws the figures the scenarios declare,
bnexp.report_render writes the markdown. This module reads the records and writes the files. Every sentence of
interpretation is generated from those numbers (verdicts from the rules and claim lines in the scenario
configs, fixed before the sweep).
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import pandas as pd

from bnexp import atomic, conformance_report, manifest, report_render, scenario_spec, store
from bnexp.errors import UserError
from bnexp.report_compute import (  # noqa: F401
    NO_RECORDS,
    Judged,
    Records,
    config_keys,
    default_setup,
    every_backend,
    factors,
    is_timing,
    judge,
    plain_records,
    rule_columns,
    summary,
)
from bnexp.report_render import keras3_outcomes  # noqa: F401
from bnexp.store import Store

ALL = report_render.ALL  # sweep=all: every record in the folder (no planned set)
RECORDS_FILE = store.RECORDS_FILE  # the report's records (bnexp.store): it rebuilds without training


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
        raise UserError(f"sweep manifest {manifest.path(root, name)} has no planned run ids (an older bnexp wrote "
                        f"it); run `python -m bnexp sweep sweep={name}` again: finished runs are skipped and the plan "
                        f"is written")
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
        store.write_records(plain_records(df), path)


# --- building --------------------------------------------------------------------------------------------------

def build(results_dir: str | os.PathLike = "results", sweep: str | None = None) -> Path:
    """Write tables/, figures/ and report.md under `results_dir` from the records of `sweep`; return the path."""
    root = Path(results_dir)
    scenario_spec.scenarios()  # every scenario file checked before anything is read or computed
    name, data, df_all, ignored, missing = records(root, sweep)
    recs = Records(name, data, df_all, ignored, missing, root)
    judged = judge(df_all)
    tables, figdir = root / "tables", root / "figures"
    tables.mkdir(parents=True, exist_ok=True)
    figdir.mkdir(parents=True, exist_ok=True)
    for scen, section in judged.sections.items():
        _write_csv(section.df, tables / f"{scen}.csv")
        _write_csv(section.summary, tables / f"{scen}_summary.csv")
        if not section.summary.empty:
            _write_text(tables / f"{scen}_summary.md", report_render.md_table(section.summary, section.columns) + "\n")
        section.figures = draw_figures(section, figdir, judged)
    if not (df_all.empty and ignored.empty):  # every record read, strays included, so a rebuild says the same
        write_records(pd.concat([df_all, ignored]), root / RECORDS_FILE)
    # a scenario judged on every backend compares backends itself (the conformance probes: their own per-release,
    # per-backend section, one seed a setup); the per-setup table leaves it out
    others = df_all[~every_backend(df_all)] if not df_all.empty else df_all
    keras3 = keras3_outcomes(others, scenario_spec.nodes())
    conformance = conformance_report.section(df_all, root, scenario_spec.nodes())  # "" without its records
    out = root / "report.md"
    _write_text(out, report_render.report(recs, judged, keras3, conformance))
    return out


def draw_figures(section, figdir: Path, judged: Judged) -> list[tuple[Path, str]]:
    """The scenario's figures; each of its claims gets its own figure for the verdict's link (else the first)."""
    from bnexp import figures

    figs = figures.draw(section.spec.name, section.df, figdir)
    drawn = {Path(f).stem: Path(f) for f, _ in figs}
    for claim in {r.claim for r in section.spec.rules}:
        own = [drawn[f] for f in figures.files_for(claim, list(section.spec.figures)) if f in drawn]
        if own or figs:
            judged.figure_of[(section.spec.name, claim)] = own[0] if own else figs[0][0]
    return figs


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


