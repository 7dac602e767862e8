"""`bnexp run|sweep|report|list|doctor|compare` (also `python -m bnexp ...`).

`run` is a Hydra app over configs/ (resolved from the package, so it works from any directory); the
subcommand is stripped before Hydra parses the overrides. Every config a command asks for is composed and
checked (bnexp.config_check) before Hydra starts a job, so bad input ends in one line before TensorFlow
starts. Nothing here imports TensorFlow.
"""

from __future__ import annotations

import os
import sys
import threading
from pathlib import Path

from omegaconf import OmegaConf

from bnexp import CONFIG_DIR
from bnexp.errors import UserError

USAGE = """usage: bnexp COMMAND [overrides...]      (or: python -m bnexp COMMAND ...)

  run      one scenario, one config:  bnexp run scenario=frozen_base seed=1
           (Hydra app: --multirun / -m sweeps comma lists; --cfg job prints the config)
  sweep    every scenario's grid:      bnexp sweep sweep=quick   (or sweep=reference)
  report   tables, figures and report.md from a sweep's planned runs:  bnexp report sweep=quick
           (paths.results_dir=..., default results/local; the committed reference: paths.results_dir=results)
  list     scenarios (with claim ids), datasets, models, norms, semantics
  doctor   check your own saved Keras model's BN:  bnexp doctor model=m.keras data=x.npz [fix=true]
  compare  do two sets of records hold the same numbers?  bnexp compare results /tmp/rerun
           (records files or results folders; runs matched by run id; timings left out)

Single runs, sweep=quick and your own sweeps write to results/local/ (git-ignored); only sweep=reference
writes the committed results/.
"""
# Hydra flags that take a value; any other flag than -m leaves the config checks to Hydra (--help, --cfg, ...).
_VALUE_FLAGS = {"--cfg", "-c", "--package", "-p", "--config-path", "-cp", "--config-name", "-cn",
                "--config-dir", "-cd", "--info", "-i", "--experimental-rerun"}
_run_state: dict = {}  # what the running command knows about its runs, for the interrupt and fault lines


def fail(message: str, code: int = 2):
    print(f"bnexp: error: {message}", file=sys.stderr)
    sys.exit(code)


def _one_line(text) -> str:
    lines = [ln.strip() for ln in str(text or "").splitlines() if ln.strip()]
    return lines[0] if lines else "no error message"


# ---------------------------------------------------------------- run


def _follow(log_dir_glob: str, parent: Path, stop: threading.Event) -> None:
    """Echo the child's compact `progress:` lines from its log while a single run trains (the file stays
    open, so the lines written last are read even after the run's folder is renamed into place)."""
    log = None
    while True:
        if log is None:
            found = sorted(parent.glob(log_dir_glob))
            try:
                log = open(found[0] / "log.txt") if found else None
            except OSError:
                log = None
        if log is not None:
            for line in log.readlines():
                if line.startswith("progress: "):
                    print("  " + line[len("progress: "):].rstrip(), flush=True)
        if stop.is_set():
            break
        stop.wait(0.5)
    if log is not None:
        log.close()


def key_numbers(rec: dict) -> list[str]:
    """A finished run's accuracy with batch, moving and population statistics, and what the gap means."""
    batch, moving = rec.get("acc_test_batchstats"), rec.get("acc_test_moving")
    precise = rec.get("acc_test_precise")
    if not isinstance(batch, (int, float)) or not isinstance(moving, (int, float)):
        metrics = {k: v for k, v in rec.items() if k.startswith("acc_test") and isinstance(v, (int, float))}
        return [f"  {k} {v:.3f}" for k, v in list(metrics.items())[:4]]
    gap = batch - moving
    pop = f", population statistics (precise BN) {precise:.3f}" if isinstance(precise, (int, float)) else ""
    lines = [f"  test accuracy: batch statistics {batch:.3f}, moving statistics {moving:.3f}{pop}",
             f"  gap (batch - moving statistics): {gap:+.3f}"]
    if abs(gap) < 0.02:
        lines.append("  The moving statistics serve inference as well as batch statistics: BN's inference mode "
                     "costs nothing here.")
    elif gap > 0 and pop and abs(batch - precise) < 0.02:
        lines.append(f"  Inference with the moving statistics loses {100 * gap:.1f} points that recomputed "
                     f"population statistics recover: the moving averages, not the trained weights, are off.")
    elif gap > 0:
        lines.append(f"  Inference with the moving statistics loses {100 * gap:.1f} points against batch "
                     f"statistics{' and population statistics do not close it' if pop else ''}: BN's inference "
                     f"mode, not training, decides this accuracy.")
    else:  # the stored statistics beat batch statistics (and, where below them, the recomputed ones)
        below = f" and {100 * (moving - precise):.1f} points above population statistics" \
            if pop and precise < moving else ""
        lines.append(f"  Inference with the moving statistics scores {100 * -gap:.1f} points above batch "
                     f"statistics{below}: here the stored statistics suit the test data better; BN's inference "
                     f"mode, not training, decides this accuracy.")
    return lines


def task(cfg) -> dict | None:
    """One Hydra job: run (or skip) the config in a child process under a per-run lock, say where the record is."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from bnexp import config_check, fingerprint, runner
    from bnexp.store import Store, os_error_line, run_id

    resolved = OmegaConf.to_container(cfg, resolve=True)
    single = HydraConfig.get().mode == RunMode.RUN
    try:
        config_check.validate(resolved)
        store = Store(resolved["paths"]["results_dir"])
        store.check_writable()
    except UserError as e:
        fail(str(e))
    scenario, rid = resolved["scenario"]["name"], run_id(resolved)
    force = bool(resolved.get("force"))
    try:
        with store.lock(scenario, rid):  # a concurrent sweep on this folder waits here, then skips
            if fingerprint.is_current(store.get(scenario, rid)) and not force:
                print(f"bnexp: {scenario} {rid} already done (force=true to redo): {store.where(scenario, rid)}")
                return {"run_id": rid, "status": "ok"}
            stop = threading.Event()
            follower = threading.Thread(target=_follow, daemon=True,
                                        args=(f".tmp-{rid}-{os.getpid()}-*", store.runs / scenario, stop))
            if single:
                print(f"bnexp: {scenario} {rid} running (semantics {resolved['semantics']})", flush=True)
                follower.start()
            try:
                record, where = runner.execute(resolved, store, force=force)
            finally:
                stop.set()
                if follower.is_alive():
                    follower.join(timeout=5)
    except OSError as e:  # disk full, folder gone read-only: nothing of this run is kept
        message = f"{os_error_line(e)}; this run was not kept (records already in {store.root} are); " \
                  f"fix that and run the same command again"
        if single:
            fail(message, code=1)
        print(f"bnexp: error: {scenario} {rid}: {message}", file=sys.stderr)
        return {"run_id": rid, "status": "failed"}
    status = record.get("status")
    print(f"bnexp: {scenario} {rid} {status}: {where / 'metrics.json'}")
    if single and status == "ok":
        print("\n".join(key_numbers(record)))
    if status != "ok" and single:
        fail(f"run {status}: {_one_line(record.get('error'))} (log: {where / 'log.txt'})", code=1)
    return {"run_id": rid, "status": status}


def _split_hydra_args(argv: list[str]) -> tuple[list[str], bool, bool]:
    """(overrides, multirun?, any other Hydra flag?)."""
    overrides, multirun, other, skip = [], False, False, False
    for a in argv:
        if skip:
            skip = False
        elif a in ("-m", "--multirun"):
            multirun = True
        elif a.startswith("-"):
            other = True
            skip = a in _VALUE_FLAGS
        else:
            overrides.append(a)
    return overrides, multirun, other


def run(argv: list[str]) -> int:
    import hydra

    from bnexp import config_check
    from bnexp.store import Store, run_id

    config_check.check_environment()
    overrides, multirun, other_flags = _split_hydra_args(argv)
    planned = []
    jobs_file = next((o.split("=", 1)[1] for o in overrides if o.startswith("hydra.sweeper.jobs_file=")), None)
    if jobs_file:  # `bnexp sweep`'s one multirun: it composed and checked every job it wrote
        from hydra_plugins.bnexp.grids_sweeper import read_jobs

        planned = [(Store(j["results_dir"]), j["scenario"], j["run_id"]) for j in read_jobs(jobs_file)]
        _run_state["planned"] = planned
    elif not other_flags:
        configs = config_check.compose(overrides)
        if len(configs) > 1 and not multirun:
            raise UserError("the overrides list several values (a,b); add -m to run each of them")
        planned = [(Store(c["paths"]["results_dir"]), c["scenario"]["name"], run_id(c)) for c in configs]
        for store in {str(s.root): s for s, _, _ in planned}.values():
            store.check_writable()
        _run_state["planned"] = planned
    sys.argv = ["bnexp", *argv]
    hydra.main(config_path=str(CONFIG_DIR), config_name="config", version_base="1.3")(task)()
    if multirun and planned and not jobs_file:  # a sweep's multirun: the sweep reports (its log keeps this quiet)
        print("\n".join(runs_table(planned)))
    if multirun and planned:
        ok = sum(1 for store, scenario, rid in planned
                 if (store.get(scenario, rid) or {}).get("status") == "ok")
        if ok < len(planned):
            print(f"bnexp: {len(planned) - ok} of {len(planned)} runs did not end ok (see the lines above)",
                  file=sys.stderr)
            return 1
    return 0


def runs_table(planned: list) -> list[str]:
    """`run -m`'s closing table: each run's status and key numbers (test accuracy with batch, moving and
    population statistics, and the gap), one row per run in the order they were asked for."""
    def cell(value) -> str:
        return f"{value:.3f}" if isinstance(value, (int, float)) and not isinstance(value, bool) else "-"

    rows = [f"{'scenario':<24} {'run':<12} {'status':<8} {'batch':>6} {'moving':>6} {'precise':>7} {'gap':>7}"]
    for store, scenario, rid in planned:
        rec = store.get(scenario, rid) or {}
        gap = rec.get("gap_test")
        rows.append(f"{scenario:<24} {rid:<12} {rec.get('status', 'missing'):<8} "
                    f"{cell(rec.get('acc_test_batchstats')):>6} {cell(rec.get('acc_test_moving')):>6} "
                    f"{cell(rec.get('acc_test_precise')):>7} "
                    f"{(f'{gap:+.3f}' if isinstance(gap, (int, float)) and not isinstance(gap, bool) else '-'):>7}")
    return ["bnexp: runs (test accuracy with batch, moving and population statistics; gap = batch - moving):",
            *("  " + r for r in rows)]


def _kept() -> str:
    planned = _run_state.get("planned")
    if not planned:
        return "finished runs are kept"
    ok = sum(1 for store, scenario, rid in planned if (store.get(scenario, rid) or {}).get("status") == "ok")
    return f"{ok} of {len(planned)} runs are done and kept in {planned[0][0].root}"


# ---------------------------------------------------------------- report, list


def report(argv: list[str]) -> None:
    from bnexp import report as report_mod

    results_dir, sweep = os.environ.get("BNEXP_RESULTS", "results/local"), None
    for a in argv:
        key, _, value = a.partition("=")
        if key == "paths.results_dir":
            results_dir = value
        elif key == "sweep" and value:
            sweep = value
        else:
            raise UserError(f"unknown report option {a!r}; valid: sweep=NAME (or sweep=all), paths.results_dir=DIR")
    if not results_dir.strip():
        raise UserError("paths.results_dir is empty; give the folder that holds runs/ "
                        "(results for the reference sweep, results/local for your own runs)")
    if not (Path(results_dir) / "runs").is_dir() and not (Path(results_dir) / report_mod.RECORDS_FILE).is_file():
        raise UserError(f"{results_dir} holds no runs/ folder and no {report_mod.RECORDS_FILE}: nothing to report "
                        f"(reference runs: paths.results_dir=results; your own: results/local)")
    print(f"bnexp: report written to {report_mod.build(results_dir, sweep)}")


def list_all() -> None:
    from bnexp import scenario_spec
    from bnexp.names import DATASETS, MODELS, NORMS, SEMANTICS

    scenarios = scenario_spec.scenarios()  # every scenario file checked: a malformed one is one line here
    width = max(map(len, scenarios)) + 1
    print("scenarios (scenario=NAME):")
    for name, spec in scenarios.items():
        print(f"  {name:<{width}} claims {', '.join(spec.claims):<20} semantics {', '.join(spec.semantics)}")
    print("claims (source: the claim in our words; full texts in the report):")
    texts = scenario_spec.claim_texts()
    for claim in sorted(texts, key=lambda c: (c[0], int(c[1:]) if c[1:].isdigit() else 0)):
        print(f"  {claim:<4} {texts[claim].source}: {texts[claim].text}")
    for title, table in (("datasets (data=NAME)", DATASETS), ("models (model=NAME)", MODELS),
                         ("norms (norm=NAME)", NORMS), ("semantics (semantics=NAME)", SEMANTICS)):
        print(f"{title}:")
        for k, v in table.items():
            print(f"  {k:<14} {v}")
    from bnexp import backends, manifest

    print("Keras 3 backends (backend=NAME, semantics=keras3) and releases (keras_version=3.x.y):")
    print("\n".join(backends.list_lines()))
    print(f"sweeps (sweep=NAME): {', '.join(manifest.sweep_names())}")


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(USAGE)
        return
    cmd, rest = argv[0], argv[1:]
    try:
        if cmd == "run":
            sys.exit(run(rest))
        elif cmd == "sweep":
            from bnexp import config_check, sweep

            config_check.check_environment()
            sys.exit(sweep.main(rest))
        elif cmd == "report":
            report(rest)
        elif cmd == "list":
            list_all()
        elif cmd == "doctor":
            from bnexp import doctor

            sys.exit(doctor.main(rest))
        elif cmd == "compare":
            from bnexp import compare

            sys.exit(compare.main(rest))
        else:
            fail(f"unknown command {cmd!r}; valid: run, sweep, report, list, doctor, compare (bnexp --help)")
        sys.stdout.flush()  # a closed pipe shows here, inside the handler below
    except UserError as e:
        fail(str(e))
    except KeyboardInterrupt:
        print(f"\nbnexp: interrupted; {_kept()}; resume with the same command", file=sys.stderr)
        sys.exit(130)
    except BrokenPipeError:  # `bnexp list | head`: the reader left; stop quietly with one line
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        print("bnexp: output closed early (broken pipe); nothing else was affected", file=sys.stderr)
        sys.exit(141)
    except OSError as e:
        from bnexp.store import os_error_line

        fail(f"{os_error_line(e)}; {_kept()}; fix that and run the same command again", code=1)
