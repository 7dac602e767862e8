"""`python -m bnexp sweep sweep=quick|reference [scenarios=a,b] [overrides...]`.

Every grid of the sweep (one per scenario in `grids`, and `<scenario>@<label>` further grids) times the
sweep's seeds, in ONE Hydra multirun (`python -m bnexp run -m hydra/sweeper=bnexp_grids ...`,
hydra_plugins/bnexp/grids_sweeper.py) with the configured launcher (parallel local processes by default),
so each launcher process keeps its warm workers (bnexp.workers) across scenarios; runs that need the
same kind of worker are launched together. Before anything runs, every grid point is composed and
validated, so a bad grid fails at once, and its run id is known: the progress display counts records in
the store, and at the end every expected run must have a current record. Runs with a current record (ok, and
computed by the code of this checkout: bnexp.fingerprint) are skipped, in runs/ or in the folder's committed
records.jsonl.gz, so an interrupted sweep started again, on this machine or on a fresh clone of what it
committed, does only what is left, and a code change re-runs only the scenarios whose code it touched; a
per-run lock (bnexp.store) lets two sweeps share one results folder without running a run twice.

Where it writes: the sweep's `results_dir` if its YAML sets one (only the reference sweep: the committed
results/), else paths.results_dir (default results/local/, git-ignored); paths.results_dir=... wins.
"""

from __future__ import annotations

import json
import os
import platform
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from omegaconf import OmegaConf

from bnexp import CONFIG_DIR, atomic, config_check, fingerprint, manifest, provenance
from bnexp.errors import UserError
from bnexp.launcher import die_with_parent
from bnexp.store import Store, os_error_line, run_id
from bnexp.workers import worker_key


@dataclass
class Point:
    scenario: str
    run_id: str
    grid: str = ""  # the grid it comes from: the scenario's name, or `<scenario>@<label>` for a further grid
    overrides: tuple[str, ...] = ()  # the run's own overrides (one value per key; no hydra settings)
    worker: tuple = ()  # the kind of warm worker it runs in (bnexp.workers.worker_key)


def scenario_of(grid: str) -> str:
    """A grid `momentum@backends` is a further grid of scenario `momentum` (its own multirun)."""
    return grid.split("@", 1)[0]


def _split(argv: list[str]) -> tuple[dict, list[str]]:
    """Sweep options (sweep=, scenarios=) apart from overrides passed on to every run."""
    opts, rest = {"sweep": None, "scenarios": None, "allow_dirty": "false"}, []
    for a in argv:
        key = a.split("=", 1)[0]
        if key in opts and "=" in a:
            opts[key] = a.split("=", 1)[1]
        else:
            rest.append(a)
    if not opts["sweep"]:  # never a default: a bare `bnexp sweep` would start hours of runs nobody asked for
        raise UserError(f"bnexp sweep needs sweep=NAME: pass sweep={'|'.join(manifest.sweep_names())} (quick: every "
                        f"scenario's smoke grid; reference: the committed reference; frameworks: Keras 3 backends "
                        f"and releases)")
    return opts, rest


def default_results_dir(sweep_name: str, extra: list[str]) -> list[str]:
    """`extra` plus the sweep's own `results_dir` (the reference sweep: the committed results/) unless the
    user chose a folder; every other sweep writes where single runs do (paths.results_dir's default)."""
    chosen = any(e.startswith("paths.results_dir=") for e in extra) or "BNEXP_RESULTS" in os.environ
    if chosen or sweep_name not in manifest.sweep_names():  # an unknown sweep: plan() says so
        return extra
    own = OmegaConf.load(CONFIG_DIR / "sweep" / f"{sweep_name}.yaml").get("results_dir")
    return extra if own is None else [*extra, f"paths.results_dir={own}"]


def plan(sweep_name: str, scenarios: list[str] | None,
         extra: list[str]) -> tuple[dict, dict[str, list[str]], list[Point], str]:
    """(sweep config, per-scenario multirun overrides, every grid point with its run id, results folder),
    all validated."""
    if sweep_name not in manifest.sweep_names():
        raise UserError(f"unknown sweep {sweep_name!r}{config_check._hint(sweep_name, manifest.sweep_names())}; "
                        f"valid: {', '.join(manifest.sweep_names())} (cannot compose sweep={sweep_name})")
    sweep = OmegaConf.to_container(OmegaConf.load(CONFIG_DIR / "sweep" / f"{sweep_name}.yaml"))
    grids = sweep["grids"]
    if scenarios is not None and not scenarios:
        raise UserError(f"scenarios= is empty; give one or more of {', '.join(grids)} (or leave scenarios= out "
                        f"for all of them)")
    names = [g for g in grids if scenario_of(g) in scenarios or g in scenarios] if scenarios else list(grids)
    unknown = [n for n in scenarios or [] if n not in grids and n not in map(scenario_of, grids)]
    if unknown:
        raise UserError(f"sweep {sweep_name} has no grid for {', '.join(unknown)}; it has {', '.join(grids)}")
    seeds = ",".join(str(s) for s in sweep["seeds"])
    multirun, points = {}, []
    for name in names:
        grid = [f"{k}={v}" for k, v in (grids[name] or {}).items()]
        multirun[name] = [f"scenario={scenario_of(name)}", f"seed={seeds}", *grid, *extra]
        for single, resolved in zip(config_check.expand(multirun[name]), config_check.compose(multirun[name])):
            points.append(Point(scenario_of(name), run_id(resolved), name, _job_overrides(single),
                                worker_key(resolved)))
            results_dir = resolved["paths"]["results_dir"]
    unique: dict = {}
    for p in points:  # an override may collapse a grid axis, and two grids of a scenario may share a run
        unique.setdefault((p.scenario, p.run_id), p)
    return sweep, multirun, list(unique.values()), results_dir


def _is_hydra(override: str) -> bool:
    return override.lstrip("+~").startswith("hydra")


def _job_overrides(single: list[str]) -> tuple[str, ...]:
    """One grid point's overrides for its Hydra job: the last value of each key (as composing applies
    them: an override may repeat a grid axis), hydra settings left to the multirun's command line."""
    last = {o.split("=", 1)[0]: o for o in single if not _is_hydra(o)}
    return tuple(last.values())


def job_order(points: list[Point]) -> list[Point]:
    """The points with those that share a kind of warm worker together (kinds in order of first appearance,
    grid order within a kind), so a launcher process moves through few workers."""
    first = {key: i for i, key in reversed(list(enumerate(p.worker for p in points)))}
    return sorted(points, key=lambda p: first[p.worker])


def _launch(jobs_file: Path, points: list[Point], results_dir: str, extra: list[str]) -> subprocess.Popen:
    """One multirun of `points` (pending runs) through the bnexp_grids sweeper."""
    jobs = [{"overrides": list(p.overrides), "scenario": p.scenario, "run_id": p.run_id, "results_dir": results_dir}
            for p in job_order(points)]
    atomic.write_text(jobs_file, json.dumps({"jobs": jobs}))
    cmd = [sys.executable, "-m", "bnexp", "run", "--multirun", "hydra/sweeper=bnexp_grids",
           f"hydra.sweeper.jobs_file={jobs_file}", f"paths.results_dir={results_dir}",
           *(e for e in extra if _is_hydra(e))]
    return subprocess.Popen(cmd, cwd=Path.cwd(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            preexec_fn=die_with_parent)


def state(rec: dict | None) -> str:
    """ok, failed or diverged for a record of the current code; missing for none or a stale one."""
    if rec is None or rec.get("fingerprint") != fingerprint.of(rec["scenario"]):
        return "missing"
    return rec.get("status", "failed")


def _status(store: Store, points: list[Point]) -> dict[str, int]:
    counts = {"ok": 0, "failed": 0, "diverged": 0, "missing": 0}
    for p in points:
        counts[state(store.get(p.scenario, p.run_id))] += 1
    return counts


def main(argv: list[str]) -> int:
    from tqdm import tqdm

    opts, extra = _split(argv)
    extra = default_results_dir(opts["sweep"], extra)
    scenarios = [s for s in opts["scenarios"].split(",") if s] if opts["scenarios"] is not None else None
    sweep, multirun, points, results_dir = plan(opts["sweep"], scenarios, extra)
    _check_tree(sweep, opts["allow_dirty"])
    store = Store(results_dir)
    store.check_writable()
    manifest.write_plan(results_dir, sweep["name"], {s: [p.run_id for p in points if p.scenario == s]
                                                     for s in dict.fromkeys(map(scenario_of, multirun))})
    pending = [p for p in points if state(store.get(p.scenario, p.run_id)) != "ok"]
    done_before = len(points) - len(pending)
    log_name = f"{sweep['name']}-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log"
    log_path = store.root / ".hydra" / "sweep-logs" / log_name
    todo = ", ".join(dict.fromkeys(p.scenario for p in pending)) or "none"
    print(f"bnexp sweep {sweep['name']}: {done_before} of {len(points)} runs current; running {len(pending)} in "
          f"scenarios {todo}; results in {store.root} (log: {log_path})", flush=True)
    start = time.time()
    load = LoadSampler()
    bar = tqdm(total=len(points), initial=done_before, unit="run", dynamic_ncols=True)
    proc = None
    in_main = threading.current_thread() is threading.main_thread()  # only there can Python take a signal
    previous = signal.signal(signal.SIGTERM, _terminated) if in_main else None
    try:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(log_path, "w") as log:  # this sweep's own log: concurrent sweeps never share one
            if pending:
                proc = _launch(log_path.with_suffix(".jobs.json"), pending, results_dir, extra)
                shown = 0.0
                for line in proc.stdout:  # the multirun's own output goes to the log; the bar shows progress
                    log.write(line)
                    log.flush()  # a killed sweep's log still holds every line its runs printed
                    if line.startswith("bnexp: ") and time.monotonic() - shown > 2:  # reads every record
                        _refresh(bar, store, points)
                        shown = time.monotonic()
                proc.wait()
                _refresh(bar, store, points)
                if proc.returncode != 0:
                    print(f"\nbnexp: the multirun exited {proc.returncode}; see {log_path}", file=sys.stderr)
        bar.close()
        if pending:  # a sweep that ran nothing measured nothing: keep the last measurement
            _write_meta(store, sweep["name"], points, done_before, start, extra, load.summary())
        return _summary(store, points, time.time() - start, sweep["name"], pending)
    except KeyboardInterrupt as e:
        _stop(proc)
        bar.close()
        print(f"bnexp: interrupted; {_kept(store, points)}; resume with the same command", file=sys.stderr)
        return 128 + (signal.SIGTERM if isinstance(e, Terminated) else signal.SIGINT)
    except OSError as e:  # disk full, folder made read-only: what was kept, and how to go on
        _stop(proc)
        bar.close()
        print(f"bnexp: error: {os_error_line(e)}; {_kept(store, points)}; fix that and run the same command "
              f"again", file=sys.stderr)
        return 1
    finally:
        if previous is not None:  # None: not in the main thread (nothing set), or a handler set outside Python
            signal.signal(signal.SIGTERM, previous)


class Terminated(KeyboardInterrupt):
    """SIGTERM (`kill PID`) while a sweep runs."""


def _terminated(signum, frame):
    """`kill PID` stops a sweep as Ctrl-C does. A sweep started in the background (`nohup make sweep &`) has
    SIGINT ignored, as a shell starts background jobs, so SIGTERM is the only way to stop it there."""
    raise Terminated


def _stop(proc: subprocess.Popen | None) -> None:
    """Stop the running multirun (its jobs' training children die with their parents): SIGINT, as Ctrl-C
    would, unless SIGINT is ignored here (a background sweep), and so in the multirun too: then SIGTERM."""
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM if signal.getsignal(signal.SIGINT) == signal.SIG_IGN else signal.SIGINT)
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()


def _kept(store: Store, points: list[Point]) -> str:
    counts = _status(store, points)
    return f"{counts['ok']} of {len(points)} runs are done and kept in {store.root}"


def _refresh(bar, store, points) -> None:
    counts = _status(store, points)
    done = len(points) - counts["missing"]
    bar.n = done
    bar.set_postfix(failed=counts["failed"] + counts["diverged"], refresh=False)
    bar.refresh()


def _check_tree(sweep: dict, allow_dirty: str) -> None:
    """The committed reference comes from committed code: a sweep that asks for a clean tree refuses a dirty one
    unless allow_dirty=true (its records then say +dirty, and the report says so at its top)."""
    if allow_dirty not in ("true", "false"):
        raise UserError(f"allow_dirty must be true or false, got {allow_dirty!r}")
    commit, clean = provenance.checkout()
    if sweep.get("requires_clean_tree") and not clean and allow_dirty == "false":
        raise UserError(f"sweep {sweep['name']} writes the committed results and needs a clean tree, but {commit} has "
                        "uncommitted changes (git status); commit them, or pass allow_dirty=true (the report will "
                        "say so at its top)")


class LoadSampler:
    """The machine's 1-minute load average, sampled every `every` s while a sweep runs: a sweep's wall time says
    little without how busy the cores were (2 jobs on 2 otherwise idle cores load them to about 2)."""

    def __init__(self, every: float = 30.0):
        import threading

        self.samples: list[float] = []
        self._stop = threading.Event()
        self._every = every
        threading.Thread(target=self._sample, daemon=True).start()

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.samples.append(os.getloadavg()[0])
            self._stop.wait(self._every)

    def summary(self) -> dict:
        self._stop.set()
        if not self.samples:
            return {}
        return {"load_mean": round(sum(self.samples) / len(self.samples), 2), "load_max": round(max(self.samples), 2)}


def _write_meta(store: Store, name: str, points, already_done: int, start: float, extra: list[str],
                load: dict | None = None) -> None:
    """Wall time of this sweep (and the machine's load meanwhile), for the report's environment section."""
    from datetime import datetime, timezone

    launcher = next((e.split("=", 1)[1] for e in extra if e.startswith("hydra/launcher=")), "local")
    meta = {"name": name, "runs": len(points), "already_done": already_done, "seconds": time.time() - start,
            "jobs": os.environ.get("BNEXP_JOBS", config_check.DEFAULT_JOBS) if launcher == "local" else launcher,
            "finished": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
            "git_commit": provenance.git_commit(), **(load or {})}
    folder = store.root / "sweeps"
    folder.mkdir(parents=True, exist_ok=True)
    planned = manifest.read(store.root, name) or {}
    atomic.write_text(folder / f"{name}.json", json.dumps({**planned, **meta}, indent=1))


def _summary(store: Store, points: list[Point], seconds: float, sweep_name: str,
             pending: list[Point] | None = None) -> int:
    """The closing line: what this sweep ran itself (`pending`: the runs not current at its start; ok, diverged,
    failed) and how many were already done at its start; then the report, and the failures listed."""
    pending = points if pending is None else pending
    mine = {(p.scenario, p.run_id) for p in pending}
    bad, outcome = [], {"ok": 0, "diverged": 0, "failed": 0}
    for p in points:
        rec = store.get(p.scenario, p.run_id)
        if state(rec) == "missing":
            bad.append(f"  {p.scenario} {p.run_id}: no current record (the run did not finish)")
            kind = "failed"
        elif rec.get("status") == "diverged":  # a measured outcome (e.g. a too-high learning rate), not a fault
            kind = "diverged"
        elif rec.get("status") != "ok":
            bad.append(f"  {p.scenario} {p.run_id} {rec.get('status')}: {str(rec.get('error'))[:300]}")
            kind = "failed"
        else:
            kind = "ok"
        if (p.scenario, p.run_id) in mine:
            outcome[kind] += 1
    before = len(points) - len(mine)
    if not mine:
        print(f"bnexp sweep: ran nothing; all {len(points)} runs were already done ({seconds:.0f} s)")
    else:
        print(f"bnexp sweep: ran {len(mine)} of {len(points)} runs in {seconds:.0f} s: {outcome['ok']} ok, "
              f"{outcome['diverged']} diverged, {outcome['failed']} failed; {before} already done at the start")
    from bnexp import report

    report.build(store.root, sweep=sweep_name)
    if bad:
        print("failures:\n" + "\n".join(bad), file=sys.stderr)
        return 1
    return 0
