"""`python -m bnexp sweep sweep=quick|reference [scenarios=a,b] [overrides...]`.

For each scenario in the sweep's `grids`, one Hydra multirun (`python -m bnexp run -m ...`) over its grid
and the sweep's seeds, with the configured launcher (parallel local processes by default). Before
anything runs, every grid point is composed and validated, so a bad grid fails at once, and its run id
is known: the progress display counts records in the store, and at the end every expected run must
have a record. Finished runs are skipped, so an interrupted sweep started again only does what is left.
"""

from __future__ import annotations

import itertools
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf

from bnexp import CONFIG_DIR, config_check, manifest
from bnexp.errors import UserError
from bnexp.runner import _die_with_parent
from bnexp.store import Store, run_id

GROUPS = {p.name for p in CONFIG_DIR.iterdir() if p.is_dir() and not p.name.startswith("_")}


@dataclass
class Point:
    scenario: str
    run_id: str
    grid: str = ""  # the grid it comes from: the scenario's name, or `<scenario>@<label>` for a further grid


def scenario_of(grid: str) -> str:
    """A grid `momentum@backends` is a further grid of scenario `momentum` (its own multirun)."""
    return grid.split("@", 1)[0]


def _split(argv: list[str]) -> tuple[dict, list[str]]:
    """Sweep options (sweep=, scenarios=) apart from overrides passed on to every run."""
    opts, rest = {"sweep": "quick", "scenarios": None}, []
    for a in argv:
        key = a.split("=", 1)[0]
        if key in opts and "=" in a:
            opts[key] = a.split("=", 1)[1]
        else:
            rest.append(a)
    return opts, rest


def _is_group(key: str) -> bool:
    return key.lstrip("+~").split("/")[0] in GROUPS and "." not in key


def expand(overrides: list[str]) -> list[list[str]]:
    """The cartesian product of comma/range sweeps in `overrides`, as lists of single overrides."""
    parsed = OverridesParser.create().parse_overrides(overrides)
    axes = []
    for o in parsed:
        key = o.input_line.split("=", 1)[0]
        values = list(o.sweep_string_iterator()) if o.is_sweep_override() else [o.get_value_element_as_str()]
        axes.append([f"{key}={v}" for v in values])
    return [list(p) for p in itertools.product(*axes)]


def plan(sweep_name: str, scenarios: list[str] | None, extra: list[str]) -> tuple[dict, dict[str, list[str]], list[Point], str]:
    """(sweep config, per-scenario multirun overrides, every grid point with its run id, results folder),
    all validated."""
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        try:
            base = compose("config", overrides=[f"+sweep={sweep_name}", *[e for e in extra if _is_group(e)]])
        except Exception as e:
            raise UserError(f"cannot compose sweep={sweep_name}: {str(e).splitlines()[0]} "
                            f"(sweeps: {', '.join(sorted(p.stem for p in (CONFIG_DIR / 'sweep').glob('*.yaml')))})")
        sweep = OmegaConf.to_container(base.sweep)
        grids = sweep["grids"]
        names = [g for g in grids if scenario_of(g) in scenarios or g in scenarios] if scenarios else list(grids)
        unknown = [n for n in scenarios or [] if n not in grids and n not in map(scenario_of, grids)]
        if unknown:
            raise UserError(f"sweep {sweep_name} has no grid for {', '.join(unknown)}; it has {', '.join(grids)}")
        seeds = ",".join(str(s) for s in sweep["seeds"])
        multirun, points = {}, []
        for name in names:
            grid = [f"{k}={v}" for k, v in (grids[name] or {}).items()]
            multirun[name] = [f"scenario={scenario_of(name)}", f"seed={seeds}", *grid, *extra]
            cache: dict = {}
            for point in expand(multirun[name]):
                groups = tuple(p for p in point if _is_group(p.split("=", 1)[0]))
                if groups not in cache:  # compose once per config-group choice, then set plain values
                    cache[groups] = compose("config", overrides=list(groups))  # a run's config has no sweep
                cfg = cache[groups].copy()
                values = [p for p in point if not _is_group(p.split("=", 1)[0])]
                for o in OverridesParser.create().parse_overrides(values):
                    OmegaConf.update(cfg, o.key_or_group.lstrip("+"), o.value(), force_add=o.is_add())
                resolved = OmegaConf.to_container(cfg, resolve=True)
                config_check.validate(resolved)
                points.append(Point(scenario_of(name), run_id(resolved), name))
                results_dir = resolved["paths"]["results_dir"]
    unique: dict = {}
    for p in points:  # an override may collapse a grid axis, and two grids of a scenario may share a run
        unique.setdefault((p.scenario, p.run_id), p)
    return sweep, multirun, list(unique.values()), results_dir


def _launch(overrides: list[str]) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "bnexp", "run", "--multirun", *overrides]
    return subprocess.Popen(cmd, cwd=Path.cwd(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            preexec_fn=_die_with_parent)


def _status(store: Store, points: list[Point]) -> dict[str, int]:
    counts = {"ok": 0, "failed": 0, "diverged": 0, "missing": 0}
    for p in points:
        rec = store.get(p.scenario, p.run_id)
        counts[rec.get("status", "failed") if rec else "missing"] += 1
    return counts


def main(argv: list[str]) -> int:
    from tqdm import tqdm

    opts, extra = _split(argv)
    scenarios = opts["scenarios"].split(",") if opts["scenarios"] else None
    sweep, multirun, points, results_dir = plan(opts["sweep"], scenarios, extra)
    store = Store(results_dir)
    store.check_writable()
    manifest.write_plan(results_dir, sweep["name"], {s: [p.run_id for p in points if p.scenario == s]
                                                     for s in dict.fromkeys(map(scenario_of, multirun))})
    before = _status(store, points)
    print(f"bnexp sweep {sweep['name']}: {len(points)} runs in {len(multirun)} scenarios, "
          f"{before['ok']} already done; results in {store.root}")
    start = time.time()
    bar = tqdm(total=len(points), initial=before["ok"], unit="run", dynamic_ncols=True)
    logs = store.root / ".hydra" / "sweep-logs"
    logs.mkdir(parents=True, exist_ok=True)
    for name, overrides in multirun.items():
        mine = [p for p in points if p.grid == name]
        if _status(store, mine)["ok"] == len(mine):
            continue
        proc = _launch(overrides)
        with open(logs / f"{name}.log", "w") as log:
            for line in proc.stdout:  # the multirun's own output goes to a log; the bar shows progress
                log.write(line)
                if line.startswith("bnexp: "):
                    _refresh(bar, store, points)
        proc.wait()
        _refresh(bar, store, points)
        if proc.returncode != 0:
            print(f"\nbnexp: the {name} multirun exited {proc.returncode}; see {logs / (name + '.log')}",
                  file=sys.stderr)
    bar.close()
    if before["ok"] < len(points):  # a sweep that ran nothing measured nothing: keep the last measurement
        _write_meta(store, sweep["name"], points, before["ok"], start, extra)
    return _summary(store, points, time.time() - start, sweep["name"])


def _refresh(bar, store, points) -> None:
    counts = _status(store, points)
    done = len(points) - counts["missing"]
    bar.n = done
    bar.set_postfix(failed=counts["failed"] + counts["diverged"], refresh=False)
    bar.refresh()


def _write_meta(store: Store, name: str, points, already_done: int, start: float, extra: list[str]) -> None:
    """Wall time of this sweep, for the report's environment section."""
    import json
    import os
    from datetime import datetime, timezone

    launcher = next((e.split("=", 1)[1] for e in extra if e.startswith("hydra/launcher=")), "local")
    meta = {"name": name, "runs": len(points), "already_done": already_done, "seconds": time.time() - start,
            "jobs": os.environ.get("BNEXP_JOBS", "2") if launcher == "local" else launcher,
            "finished": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")}
    folder = store.root / "sweeps"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.json").write_text(json.dumps({**(manifest.read(store.root, name) or {}), **meta}, indent=1))


def _summary(store: Store, points: list[Point], seconds: float, sweep_name: str) -> int:
    bad, diverged = [], 0
    for p in points:
        rec = store.get(p.scenario, p.run_id)
        if rec is None:
            bad.append(f"  {p.scenario} {p.run_id}: no record (the run did not finish)")
        elif rec.get("status") == "diverged":  # a measured outcome (e.g. a too-high learning rate), not a fault
            diverged += 1
        elif rec.get("status") != "ok":
            bad.append(f"  {p.scenario} {p.run_id} {rec.get('status')}: {str(rec.get('error'))[:300]}")
    print(f"bnexp sweep: {len(points) - len(bad) - diverged}/{len(points)} runs ok, {diverged} diverged, "
          f"{len(bad)} failed, in {seconds:.0f} s")
    from bnexp import report

    report.build(store.root, sweep=sweep_name)
    if bad:
        print("failures:\n" + "\n".join(bad), file=sys.stderr)
        return 1
    return 0
