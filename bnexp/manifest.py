"""A sweep's manifest: `<results_dir>/sweeps/<name>.json`, the named set of records a report is built from.

    {"name": "reference",
     "planned": {"momentum": ["0872ed73c6c5", ...], ...},   # run ids per scenario, written before any run
     "runs": 216, "already_done": 0, "seconds": 1763.4, "jobs": "2", "finished": "..."}   # timing, at the end

`bnexp sweep` writes `planned` as soon as its grid is validated (`write_plan`), so an interrupted sweep's
report still knows which runs it was meant to have; the timing keys come when the sweep ends.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from bnexp import CONFIG_DIR
from bnexp.atomic import write_text

DEFAULT = "reference"


def sweep_names() -> list[str]:
    """The sweeps there are: configs/sweep/<name>.yaml."""
    return sorted(p.stem for p in (CONFIG_DIR / "sweep").glob("*.yaml"))


def path(results_dir: str | os.PathLike, sweep_name: str) -> Path:
    return Path(results_dir) / "sweeps" / f"{sweep_name}.json"


def read(results_dir: str | os.PathLike, sweep_name: str) -> dict | None:
    """The manifest as a dict, or None if there is none (or it is unreadable)."""
    try:
        return json.loads(path(results_dir, sweep_name).read_text())
    except (OSError, ValueError):
        return None


def write_plan(results_dir: str | os.PathLike, sweep_name: str, planned: dict[str, list[str]]) -> Path:
    """Record the planned run ids of the given scenarios (replacing theirs, keeping other scenarios' and
    every other key of the manifest)."""
    data = read(results_dir, sweep_name) or {"name": sweep_name}
    data["planned"] = {**data.get("planned", {}), **{s: list(ids) for s, ids in planned.items()}}
    target = path(results_dir, sweep_name)
    target.parent.mkdir(parents=True, exist_ok=True)
    write_text(target, json.dumps(data, indent=1))
    return target


def planned_ids(data: dict) -> set[tuple[str, str]]:
    return {(scenario, rid) for scenario, ids in (data.get("planned") or {}).items() for rid in ids}


def all_manifests(results_dir: str | os.PathLike) -> dict[str, dict]:
    """Every readable manifest under `results_dir`, by sweep name."""
    out = {}
    for f in sorted((Path(results_dir) / "sweeps").glob("*.json")):
        data = read(results_dir, f.stem)
        if data is not None:
            out[f.stem] = data
    return out


def default_sweep(results_dir: str | os.PathLike) -> str | None:
    """`reference` if it has planned run ids, else the most recently written manifest that has them, else None."""
    with_plan = [name for name, data in all_manifests(results_dir).items() if data.get("planned")]
    if DEFAULT in with_plan:
        return DEFAULT
    if not with_plan:
        return None
    return max(with_plan, key=lambda name: path(results_dir, name).stat().st_mtime)
