"""`make bench` (python -m bnexp.bench): the harness' costs, as ratios measured side by side in one run.

1. Training-step overhead: the harness' training path (bnexp.protocol.train: tf.data pipeline + chunked
   model.fit) vs a plain `model.fit(x, y)` on the same model, data and batch size; repetitions
   interleaved; the median ratio.                                     goal <= 1.05
2. Fixed cost of a run: a fresh `python -m bnexp run` (1 training step, warm data cache) until its record
   is written, and the child's time from its start to the first training step.   goal < 6 s
   Warm workers (bnexp.workers): a sequential multirun of 1-step runs in one warm worker vs in fresh
   processes; the per-run fixed cost is the launcher's time per run (record wall_s), warm median (the
   worker's first run, which starts it, excluded) / fresh median.     goal <= 0.2
   Memory: the warm worker's peak RSS after its 50th run / after its 1st.   goal <= 1.2
3. Sweep throughput: runs per minute of the whole quick grid (every scenario, one multirun, 2 parallel
   launcher processes) in warm workers vs fresh processes, and peak memory per worker.   goal >= 2.5x
4. Precise BN: one recomputation (probe.precise_batches batches) vs one training epoch.
5. The whole reference grid's wall time, read from results/sweeps/reference.json (written by the
   reference sweep, `make sweep`), with the machine's load average meanwhile.   goal <= 45 min (5 seeds, 2 idle cores)
6. Where the reference sweep's seconds go, per scenario: its committed records' wall, fit and precise-BN
   seconds (results/records.jsonl.gz and results/runs/, the reference's planned runs).
8. Precise BN's recording pass, compiled (a tf.function per model, moments in the graph: what runs use) vs
   eager (a model call and a NumPy reduction per BN layer and batch: what JAX and PyTorch runs use), side by
   side on small_cnn: 100 batches of 64, repetitions interleaved; the compiled pass' first call (tracing) apart.
7. `bnexp doctor` on a real architecture: keras.applications.MobileNetV2(weights=None) at 96x96, 10 classes,
   saved as .keras, checked on an .npz of 2,000 and of 10,000 random images (and `fix=true` at 2,000): wall
   time of the fresh `python -m bnexp doctor` process and the peak RSS of its largest process.
                                                                     goal 10,000 images < 60 s (2 cores)

Results go to stdout and results/bench.md (with date and machine), or to --out. Run
`python -m bnexp.bench --only 1,2` for a subset: the rows of the other measures are kept from the file.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

from omegaconf import OmegaConf

from bnexp import CONFIG_DIR, atomic
from bnexp.provenance import processor
from bnexp.workers import child_env

ROOT = Path(__file__).resolve().parents[1]
SMALL = ["data.train_size=2048", "data.test_size=512", "probe.precise_batches=20"]
# 1-step runs in one warm worker, for its fixed cost and its memory: its whole life at the default worker.max_runs
WARM_RUNS = int(OmegaConf.load(CONFIG_DIR / "config.yaml").worker.max_runs)
DOCTOR_SIZES = (2000, 10000)  # measure 7: images in the .npz given to `bnexp doctor` (doctor.max_samples too)
DOCTOR_FIX_AT = 2000          # measure 7: the size also checked with fix=true
DOCTOR_GOAL_S = {10000: 60.0}  # measure 7: wall-time goal by size, 2 cores


def _env(cache: Path, jobs: int = 2) -> dict:
    env = dict(os.environ, BNEXP_CACHE=str(cache), BNEXP_JOBS=str(jobs), PYTHONPATH=str(ROOT))
    env.pop("TF_USE_LEGACY_KERAS", None)
    return env


def _cli(args: list[str], cache: Path, jobs: int = 2) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "bnexp", *args], cwd=ROOT, env=_env(cache, jobs), check=True,
                   capture_output=True, text=True)
    return time.perf_counter() - start


def _records(results: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in results.glob("runs/*/*/metrics.json")]


def step_overhead(reps: int, steps: int, batch_size: int = 64, fixed_order: bool = False) -> dict:
    """Median time ratio harness/plain for `steps` optimizer steps on compiled, warmed-up models.

    Harness: bnexp.training.fit over bnexp.data.train_batches (the path every scenario trains with,
    after compile). Plain: model.fit(x, y, batch_size) on NumPy arrays; a second plain model gives the
    noise floor (plain / plain). The arms run in a new random order each repetition: the earlier 1.21
    "overhead" came from running the harness first in every round, a position that measured slower on a
    loaded machine whatever ran in it (`--fixed-order` runs harness, plain, plain again in that order to
    show it). Wall and process CPU time (all threads). Compiling and tracing are a per-run fixed cost,
    measured by fixed_cost().
    """
    import random

    from bnexp.toolkit import data, models, training
    from bnexp.toolkit.framework import activate

    fw = activate("keras3")
    fw.set_seed(0)
    arrays = data.load("fashion_mnist", "/usr/share/datasets/fashion-mnist", None, Path.home() / ".cache/bnexp")
    x = data.scale(arrays.x_train[: steps * batch_size], "unit")
    y = arrays.y_train[: steps * batch_size]

    def fresh():
        m = models.build(fw, "small_cnn", (28, 28, 1), 10)
        training.compile_model(fw, m, "adam", 1e-3)
        return m

    def harness_fit(m):
        training.fit(m, data.train_batches(x, y, batch_size, steps, seed=0), steps)

    def plain_fit(m):
        m.fit(x, y, batch_size=batch_size, epochs=1, verbose=0)

    arms = {"harness": (harness_fit, fresh()), "plain": (plain_fit, fresh()), "plain_again": (plain_fit, fresh())}
    for fn, m in arms.values():
        fn(m)  # warm-up: tracing and pipeline start-up
    wall = {k: [] for k in arms}
    cpu = {k: [] for k in arms}
    for rep in range(reps):
        order = list(arms)
        if not fixed_order:
            random.Random(rep).shuffle(order)
        for k in order:
            fn, m = arms[k]
            t, c = time.perf_counter(), time.process_time()
            fn(m)
            wall[k].append(time.perf_counter() - t)
            cpu[k].append(time.process_time() - c)

    def ratio(times, a, b):
        return statistics.median(x / y for x, y in zip(times[a], times[b]))

    return {"ratio_median": ratio(wall, "harness", "plain"), "cpu_ratio_median": ratio(cpu, "harness", "plain"),
            "noise_ratio_median": ratio(wall, "plain_again", "plain"), "reps": reps, "steps": steps,
            "order": "fixed (harness, plain, plain again)" if fixed_order else "random",
            "plain_steps_per_s": steps / statistics.median(wall["plain"])}


def fixed_cost(reps: int, cache: Path) -> dict:
    """Fresh process -> record written, for a 1-step run with a warm data cache."""
    walls, to_first_step = [], []
    with tempfile.TemporaryDirectory() as tmp:
        _cli(["run", "scenario=momentum", *SMALL, "train.batches=1", f"paths.results_dir={tmp}/warm"], cache)
        for i in range(reps):
            walls.append(_cli(["run", "scenario=momentum", *SMALL, "train.batches=1", f"seed={100 + i}",
                               f"paths.results_dir={tmp}/r"], cache))
        recs = _records(Path(tmp) / "r")
        to_first_step = [r["to_first_step_s"] for r in recs if "to_first_step_s" in r]
        probes_s = [r["child_s"] - r["to_first_step_s"] - r["fit_s"] for r in recs if "to_first_step_s" in r]
    return {"wall_median_s": statistics.median(walls), "walls": walls,
            "to_first_step_median_s": statistics.median(to_first_step) if to_first_step else None,
            "after_fit_probes_median_s": statistics.median(probes_s) if probes_s else None}


def warm_vs_fresh(fresh_runs: int, cache: Path) -> dict:
    """1-step runs one after another (hydra/launcher=basic): WARM_RUNS in one warm worker, `fresh_runs` in
    fresh processes. Per-run cost = the record's wall_s (launcher: child start or hand-over -> result)."""
    one_step = ["run", "-m", "hydra/launcher=basic", "scenario=momentum", *SMALL, "train.batches=1"]
    with tempfile.TemporaryDirectory() as tmp:
        _cli([*one_step, f"seed=range(0,{WARM_RUNS})", f"worker.max_runs={WARM_RUNS}",
              f"paths.results_dir={tmp}/warm"], cache)
        _cli([*one_step, f"seed=range(0,{fresh_runs})", "worker.warm=false", f"paths.results_dir={tmp}/fresh"], cache)
        warm = sorted(_records(Path(tmp) / "warm"), key=lambda r: r["seed"])
        fresh = _records(Path(tmp) / "fresh")
    warm_s = statistics.median(r["wall_s"] for r in warm[1:])
    fresh_s = statistics.median(r["wall_s"] for r in fresh)
    return {"warm_s": warm_s, "fresh_s": fresh_s, "ratio": warm_s / fresh_s, "first_warm_s": warm[0]["wall_s"],
            "runs": len(warm), "fresh_runs": len(fresh), "rss_first_mb": warm[0]["peak_rss_mb"],
            "rss_last_mb": warm[-1]["peak_rss_mb"], "rss_ratio": warm[-1]["peak_rss_mb"] / warm[0]["peak_rss_mb"]}


def sweep_throughput(cache: Path) -> dict:
    """sweep=quick (every scenario, at SMALL sizes), 2 parallel launcher processes, in fresh processes and in
    warm workers (fresh first, so both find the data cache and the pretrained bases warm). A sweep this short
    pays each launcher process' worker start-ups (one per kind of semantics) in full: the ratio grows with a
    sweep's length."""
    out = {}
    for mode in ("fresh", "warm"):
        with tempfile.TemporaryDirectory() as tmp:
            seconds = _cli(["sweep", "sweep=quick", *SMALL,
                            f"worker.warm={'true' if mode == 'warm' else 'false'}", f"paths.results_dir={tmp}"],
                           cache, jobs=2)
            recs = _records(Path(tmp))
            out[mode] = {"runs": len(recs), "seconds": seconds, "runs_per_min": 60 * len(recs) / seconds,
                         "peak_rss_mb": max(r.get("peak_rss_mb") or 0 for r in recs)}
    out["speedup"] = out["warm"]["runs_per_min"] / out["fresh"]["runs_per_min"]
    return out


def reference_sweep() -> dict:
    """The last reference sweep's timing (results/sweeps/reference.json), if there is one, and the size of the
    reference grid now (it may have grown since)."""
    from bnexp import sweep

    path = ROOT / "results" / "sweeps" / "reference.json"
    last = json.loads(path.read_text()) if path.exists() else None
    _, _, points, _ = sweep.plan("reference", None, [])
    return {"last": last, "planned_runs": len(points)}


def precise_cost(cache: Path) -> dict:
    """One precise-BN recomputation vs one training epoch, from a default momentum run."""
    with tempfile.TemporaryDirectory() as tmp:
        _cli(["run", "scenario=momentum", "train.batches=300", f"paths.results_dir={tmp}"], cache)
        rec = _records(Path(tmp))[0]
    epoch_s = (60000 / rec["train.batch_size"]) / rec["steps_per_s"]
    return {"precise_batches": rec["precise_forward_passes"], "precise_s": rec["precise_s"],
            "epoch_s_estimated": epoch_s, "ratio": rec["precise_s"] / epoch_s}


def precise_compiled_vs_eager(reps: int, batches: int = 100, batch_size: int = 64) -> dict:
    """Measure 8: one precise-BN recomputation on small_cnn, compiled vs eager pass, interleaved; the median
    ratio, the compiled pass' first call (its trace) and the largest difference of the statistics."""
    from unittest import mock

    import numpy as np

    from bnexp.toolkit import models, precise_bn
    from bnexp.toolkit.framework import activate

    fw = activate("keras3")
    fw.set_seed(0)
    rng = np.random.default_rng(0)
    xs = [rng.random((batch_size, 28, 28, 1), dtype=np.float32) for _ in range(batches)]
    model = models.build(fw, "small_cnn", (28, 28, 1), 10)

    def eager():
        with mock.patch.object(precise_bn.framework, "BACKEND", "eager"):
            return precise_bn.population_stats(model, xs)

    first = precise_bn.population_stats(model, xs)  # traces
    eager()  # its warm-up
    times = {"compiled": [], "eager": []}
    stats = {}
    for rep in range(reps):
        for arm in (("compiled", "eager") if rep % 2 else ("eager", "compiled")):
            stats[arm] = eager() if arm == "eager" else precise_bn.population_stats(model, xs)
            times[arm].append(stats[arm].seconds)
    diff = max(float(np.max(np.abs(a.var_biased / b.var_biased - 1)))
               for a, b in zip(stats["compiled"].layers, stats["eager"].layers))
    return {"batches": batches, "batch_size": batch_size, "reps": reps, "first_compiled_s": first.seconds,
            "compiled_s": statistics.median(times["compiled"]), "eager_s": statistics.median(times["eager"]),
            "ratio": statistics.median(c / e for c, e in zip(times["compiled"], times["eager"])),
            "max_rel_diff": diff}


def steps_per_call(reps: int, cases=((2, 1024), (64, 300))) -> list[dict]:
    """Measure 9: Keras 3 `fit` of small_cnn (training.fit, logging on) with one optimizer step per call of the
    train function vs training.steps_per_execution steps per call, interleaved; per (batch size, steps) the
    median ratio of wall and of process CPU time."""
    import tempfile

    import numpy as np

    from bnexp.toolkit import data, models, training
    from bnexp.toolkit.framework import activate

    fw = activate("keras3")
    rng = np.random.default_rng(0)
    x = rng.random((20000, 28, 28, 1), dtype=np.float32)
    y = rng.integers(0, 10, 20000)
    out = []
    with tempfile.TemporaryDirectory() as tmp:
        training.log_to(fw, Path(tmp))  # the callbacks of a real run

        weights = {}

        def fit(batch_size: int, steps: int, epoch_steps: int) -> tuple[float, float]:
            fw.keras.backend.clear_session()
            fw.set_seed(0)
            model = models.build(fw, "small_cnn", (28, 28, 1), 10)
            training.compile_model(fw, model, "adam", 1e-3, epoch_steps=epoch_steps)
            wall, cpu = time.perf_counter(), sum(os.times()[:2])
            training.fit(model, data.train_batches(x, y, batch_size, steps, 1), steps)
            wall, cpu = time.perf_counter() - wall, sum(os.times()[:2]) - cpu
            weights[model.steps_per_execution] = [w.numpy() for w in model.weights]
            return wall, cpu

        fit(32, 10, 1)  # warm-up: first trace of the process
        for batch_size, steps in cases:
            epoch_steps = training.chunks(steps)[1]  # what protocol.train compiles for
            per_call = training.steps_per_execution(fw, epoch_steps)
            times = {1: [], per_call: []}
            for rep in range(reps):
                for k in ((1, per_call) if rep % 2 else (per_call, 1)):
                    times[k].append(fit(batch_size, steps, 1 if k == 1 else epoch_steps))
            out.append({"batch_size": batch_size, "steps": steps, "per_call": per_call, "reps": reps,
                        "wall": statistics.median(m[0] / o[0] for m, o in zip(times[per_call], times[1])),
                        "cpu": statistics.median(m[1] / o[1] for m, o in zip(times[per_call], times[1])),
                        "one_s": statistics.median(t[0] for t in times[1]),
                        "many_s": statistics.median(t[0] for t in times[per_call]),
                        "same_weights": all(np.array_equal(a, b) for a, b in zip(weights[1], weights[per_call]))})
    return out


def reference_seconds() -> list[dict]:
    """Per scenario of the reference sweep's planned runs (records in results/): runs, run-seconds and the
    median seconds of a run, of its fit and of its precise-BN recomputations."""
    from bnexp import manifest
    from bnexp.store import Store

    plan = manifest.read(ROOT / "results", "reference") or {}
    planned = manifest.planned_ids(plan)
    by: dict[str, list[dict]] = {}
    for rec in Store(ROOT / "results").records():
        if (rec["scenario"], rec["run_id"]) in planned and rec.get("wall_s") is not None:
            by.setdefault(rec["scenario"], []).append(rec)
    rows = []
    for scenario, recs in sorted(by.items()):
        def median(key, recs=recs):
            return statistics.median(r.get(key) or 0.0 for r in recs)

        rows.append({"scenario": scenario, "runs": len(recs), "run_s": sum(r["wall_s"] for r in recs),
                     "wall_s": median("wall_s"), "fit_s": median("fit_s"), "precise_s": median("precise_s")})
    return rows


_BUILD_MOBILENET = """
import sys
from bnexp.toolkit.framework import activate
fw = activate("keras3")
size = int(sys.argv[2])
model = fw.keras.applications.MobileNetV2(weights=None, input_shape=(size, size, 3), classes=10)
model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
model.save(sys.argv[1])
"""


def _doctor_run(model: Path, data: Path, n: int, out: Path, fix: bool, cache: Path) -> dict:
    """One fresh `python -m bnexp doctor` process: its wall time, the peak RSS of the largest process in its tree
    (os.wait4's rusage: the process and the children it waited for, i.e. the check child), its exit code and
    doctor.json."""
    args = [f"model={model}", f"data={data}", f"doctor.max_samples={n}", f"out={out}", f"fix={str(fix).lower()}"]
    log = out.with_suffix(".log")
    with open(log, "w") as f:
        start = time.perf_counter()
        proc = subprocess.Popen([sys.executable, "-m", "bnexp", "doctor", *args], cwd=ROOT, env=_env(cache),
                                stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode not in (0, 1):  # 0: no error finding, 1: findings; 2 bad input, 3 the doctor failed
        raise RuntimeError(f"bnexp doctor {' '.join(args)} exited {proc.returncode}:\n{log.read_text()[-3000:]}")
    report = json.loads((out / "doctor.json").read_text())
    fix_report = report.get("fix") or {}
    return {"n": n, "fix": fix, "wall_s": wall, "peak_mib": usage.ru_maxrss / 1024, "exit": proc.returncode,
            "bn_layers": len(report.get("bn_layers", [])), "samples": (report.get("data") or {}).get("samples"),
            "errors": sum(x.get("severity") == "error" for x in report.get("findings", [])),
            "fix_status": fix_report.get("status")}


def doctor_mobilenet(cache: Path, sizes=DOCTOR_SIZES, image: int = 96, fix_at: int | None = DOCTOR_FIX_AT) -> dict:
    """`bnexp doctor` on keras.applications.MobileNetV2(weights=None, input_shape=(image, image, 3), classes=10),
    saved as .keras (built in a child process: no weights downloaded, no TensorFlow in this one), on an .npz of
    n random images in [0, 1] (float32) with random labels 0..9 for each n in `sizes`, doctor.max_samples=n;
    once more with fix=true at n = fix_at (if it is one of `sizes`). The values are random: what the check
    costs does not depend on them (the same passes run whatever the data)."""
    import numpy as np

    runs = []
    with tempfile.TemporaryDirectory(prefix="bnexp-bench-doctor-") as tmp:
        model = Path(tmp) / f"mobilenetv2_{image}.keras"
        subprocess.run([sys.executable, "-c", _BUILD_MOBILENET, str(model), str(image)], cwd=ROOT,
                       env=child_env("keras3", "auto", base=_env(cache)), check=True, capture_output=True, text=True)
        for n in sizes:
            data = Path(tmp) / f"random_{n}.npz"
            rng = np.random.default_rng(n)
            x = rng.random((n, image, image, 3), dtype=np.float32)
            np.savez(data, x=x, y=rng.integers(0, 10, n))
            del x
            for fix in (False, True) if n == fix_at else (False,):
                out = Path(tmp) / f"out_{n}{'_fix' if fix else ''}"
                out.mkdir()
                runs.append(_doctor_run(model, data, n, out, fix, cache))
                print(f"  {n} images{', fix=true' if fix else ''}: {runs[-1]['wall_s']:.1f} s, "
                      f"{runs[-1]['peak_mib']:.0f} MiB", flush=True)
            data.unlink()
    return {"image": image, "runs": runs}


def _doctor_rows(d: dict) -> list[str]:
    rows = []
    for r in sorted(d["runs"], key=lambda r: (r["fix"], r["n"])):
        what = ("doctor `fix=true` on MobileNetV2" if r["fix"] else "doctor on MobileNetV2")
        extra = ("; recalibration + the copy saved, reloaded and compared on the held-out half (paired), "
                 f"copy {(r['fix_status'] or 'none').replace('_', ' ')}" if r["fix"] else "")
        goal = DOCTOR_GOAL_S.get(r["n"]) if not r["fix"] else None
        cmd = f"python -m bnexp doctor model=<.keras> data=<.npz> doctor.max_samples={r['n']}" + " fix=true" * r["fix"]
        rows.append(f"| {what} ({d['image']}x{d['image']}, {r['n']:,} images): wall s, peak MiB (a fresh "
                    f"`{cmd}`, start to exit "
                    f"{r['exit']}; peak RSS of its largest process; `keras.applications.MobileNetV2(weights=None)`, "
                    f"{r['bn_layers']} BN layers found; random images in [0, 1] and random labels: the check's cost "
                    f"does not depend on the values{extra}) | {r['wall_s']:.1f} s, {r['peak_mib']:,.0f} MiB |"
                    + (f" < {goal:.0f} s |" if goal else " |"))
    return rows


def _seconds_table(rows: list[dict], sweep: dict | None) -> list[str]:
    total = sum(r["run_s"] for r in rows)
    lines = ["## Where the reference sweep's seconds go", "",
             "Per scenario, from the reference's records (`python -m bnexp.bench --only 6`): run-seconds are the sum "
             "of each run's wall time in its launcher (start-up, data, training, probes, precise BN, record); fit "
             "and precise BN are the median run's own timers, the rest of its wall time is start-up, probes, "
             "replays, base pretraining and evaluation.", ""]
    if sweep and sweep.get("seconds"):
        lines.append(f"The sweep: {sweep.get('runs')} runs ({sweep.get('already_done')} already done at its start) "
                     f"in {sweep['seconds'] / 60:.0f} min wall with {sweep.get('jobs')} jobs, finished "
                     f"{sweep.get('finished')}" + (f" on {sweep['machine']}" if sweep.get("machine") else "") + ".")
        lines.append("")
    lines += ["| scenario | runs | run-seconds | share | median run (s) | its fit (s) | its precise BN (s) |",
              "|---|---|---|---|---|---|---|"]
    for r in sorted(rows, key=lambda r: -r["run_s"]):
        lines.append(f"| {r['scenario']} | {r['runs']} | {r['run_s']:.0f} | {r['run_s'] / total:.0%} | "
                     f"{r['wall_s']:.1f} | {r['fit_s']:.1f} | {r['precise_s']:.1f} |")
    lines.append(f"| all | {sum(r['runs'] for r in rows)} | {total:.0f} | 100% | | | |")
    return lines


# Each measure's rows in the table, by the start of their first cell: a subset run keeps the others' rows.
ROWS = {"1": ("| training-step overhead",), "2": ("| per-run fixed cost", "| warm worker peak RSS",
        "| fresh `python -m bnexp run`", "| child process start", "| after fit:"),
        "3": ("| quick-grid throughput", "| peak memory per worker"), "4": ("| precise BN,",),
        "5": ("| whole reference grid",), "8": ("| precise BN's recording pass",),
        "9": ("| Keras 3 fit, several steps per call",),
        "7": ("| doctor on MobileNetV2", "| doctor `fix=true` on MobileNetV2")}


def merged(new: str, old: str, rerun: set[str]) -> str:
    """The new file, with the old file's rows and sections of the measures not rerun."""
    if not old:
        return new
    stale = tuple(p for m, prefixes in ROWS.items() if m in rerun for p in prefixes)
    fresh = tuple(p for m, prefixes in ROWS.items() if m not in rerun for p in prefixes)
    kept = [ln for ln in old.splitlines() if ln.startswith(fresh)]
    lines = new.splitlines()
    head = lines.index("|---|---|---|") + 1
    table_end = next((i for i in range(head, len(lines)) if not lines[i].startswith("|")), len(lines))
    order = [p for prefixes in ROWS.values() for p in prefixes]
    rows = sorted([ln for ln in lines[head:table_end] if ln.startswith(stale) or not ln.startswith(fresh)] + kept,
                  key=lambda ln: next((i for i, p in enumerate(order) if ln.startswith(p)), len(order)))
    tail = lines[table_end:]
    if "6" not in rerun and "## Where the reference sweep's seconds go" in old:
        tail = [""] + old[old.index("## Where the reference sweep's seconds go"):].rstrip().splitlines()
    when = re.search(r"^Measured (.+?) by `make bench`", old, re.M)  # when, and on which machine and processor
    kept_note = f"Rows of measures not rerun are kept from the previous file (measured {when[1]})." if when else ""
    intro = lines[:head - 2] + ([kept_note, ""]
                                if when and set(ROWS) - rerun else [])
    return "\n".join(intro + lines[head - 2:head] + rows + tail) + "\n"


def _markdown(res: dict) -> str:
    now = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = ["# bnexp benchmarks", "",
             f"Measured {now} on {platform.machine()} ({processor()}), {os.cpu_count()} cores, Python "
             f"{platform.python_version()} "
             "by `make bench` (`python -m bnexp.bench`). Ratios are comparable across machines; seconds are not; "
             "both move with other load on the machine.", "",
             "| measure | value | goal |", "|---|---|---|"]
    if "overhead" in res:
        o = res["overhead"]
        lines.append(f"| training-step overhead: harness / plain `model.fit` wall time (median of {o['reps']} rounds "
                     f"in {o['order']} order, {o['steps']} steps; CPU time {o['cpu_ratio_median']:.3f}; noise floor, "
                     f"plain / plain: {o['noise_ratio_median']:.3f}) | {o['ratio_median']:.3f} | <= 1.05 |")
    if "warm" in res:
        w = res["warm"]
        lines.append(f"| per-run fixed cost (1-step run), warm worker / fresh process (median of {w['runs'] - 1} "
                     f"warm, {w['fresh_runs']} fresh: {w['warm_s']:.2f} s / {w['fresh_s']:.2f} s) | "
                     f"{w['ratio']:.2f} | <= 0.2 |")
    if "sweep" in res:
        s = res["sweep"]
        lines.append(f"| quick-grid throughput, warm / fresh (every scenario, {s['warm']['runs']} runs in one "
                     f"multirun, "
                     f"2 jobs; {s['warm']['runs_per_min']:.1f} vs {s['fresh']['runs_per_min']:.1f} runs/min) | "
                     f"{s['speedup']:.2f}x | >= 2.5x |")
    if "warm" in res:
        lines.append(f"| warm worker peak RSS (ru_maxrss, its high-water mark so far) after {w['runs']} runs / after "
                     f"1 run ({w['rss_last_mb']:.0f} / {w['rss_first_mb']:.0f} MiB) | {w['rss_ratio']:.2f} | <= 1.2 |")
    if "reference" in res:
        r, last = res["reference"], res["reference"]["last"]
        done = int(last.get("already_done") or 0) if last else 0
        ran = (f"{last['runs'] - done} of {last['runs']} runs, {done} already done at its start" if done
               else f"{last['runs']} runs")  # a resumed sweep's time is not the whole grid's
        value = (f"{last['seconds'] / 60:.0f} min ({ran}, {last['jobs']} jobs, {last['finished']})"
                 if last else "no results/sweeps/reference.json yet")
        if last and last.get("load_mean") is not None:  # how busy the machine was: 2 jobs alone load 2 cores to ~2
            value += f", 1-min load average {last['load_mean']:.1f} (max {last['load_max']:.1f})"
        if last and last["runs"] != r["planned_runs"]:
            value += f"; the grid has {r['planned_runs']} runs now, not yet run"
        lines.append(f"| whole reference grid (`make sweep`, from results/sweeps/reference.json) | {value} "
                     f"| <= 45 min (stretch 30) at 5 seeds, 2 idle cores |")
    if "fixed" in res:
        f = res["fixed"]
        lines.append(f"| fresh `python -m bnexp run` to record written, 1 step, warm cache (median of "
                     f"{len(f['walls'])}) | {f['wall_median_s']:.1f} s | < 6 s |")
        if f["to_first_step_median_s"] is not None:
            lines.append(f"| child process start to first training step (median) | "
                         f"{f['to_first_step_median_s']:.1f} s | |")
            lines.append(f"| after fit: probes + precise BN (20 batches) + record (median) | "
                         f"{f['after_fit_probes_median_s']:.1f} s | |")
    if "sweep" in res:
        lines.append(f"| peak memory per worker (max child RSS in the throughput sweeps) | "
                     f"{max(s['warm']['peak_rss_mb'], s['fresh']['peak_rss_mb']):.0f} MiB | < 2048 MiB |")
    if "precise" in res:
        p = res["precise"]
        lines.append(f"| precise BN, {p['precise_batches']} batches, vs one training epoch | {p['ratio']:.2f}x "
                     f"({p['precise_s']:.1f} s vs {p['epoch_s_estimated']:.1f} s) | |")
    if "precise_pass" in res:
        p = res["precise_pass"]
        lines.append(f"| precise BN's recording pass, compiled / eager ({p['batches']} batches of {p['batch_size']}, "
                     f"small_cnn, median of {p['reps']} interleaved: {p['compiled_s']:.2f} s / {p['eager_s']:.2f} s; "
                     f"the compiled pass' first call, with its trace: {p['first_compiled_s']:.2f} s; statistics "
                     f"differ by {p['max_rel_diff']:.0e} relative at most) | {p['ratio']:.2f} | |")
    for c in res.get("steps_per_call", []):
        same = "the same bits" if c["same_weights"] else "DIFFERENT"
        lines.append(f"| Keras 3 fit, several steps per call / one (small_cnn, batch {c['batch_size']}, {c['steps']} "
                     f"steps, {c['per_call']} per call; median of {c['reps']} interleaved: {c['many_s']:.2f} s / "
                     f"{c['one_s']:.2f} s; CPU time {c['cpu']:.2f}; weights after fit {same}) | {c['wall']:.2f} | |")
    if "doctor" in res:
        lines += _doctor_rows(res["doctor"])
    if "seconds" in res:
        lines += [""] + _seconds_table(res["seconds"], (res.get("reference") or {}).get("last"))
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", default="1,2,3,4,5,6,7,8,9", help="which measures, e.g. 1,2")
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--fixed-order", action="store_true", help="step overhead: the old fixed order of arms")
    ap.add_argument("--doctor-sizes", default=",".join(map(str, DOCTOR_SIZES)),
                    help="measure 7: images per doctor run, e.g. 64 for a quick check")
    ap.add_argument("--doctor-image", type=int, default=96, help="measure 7: MobileNetV2's input size")
    ap.add_argument("--out", default=str(ROOT / "results" / "bench.md"))
    args = ap.parse_args(argv)
    only = set(args.only.split(","))
    cache = Path(os.environ.get("BNEXP_CACHE", Path.home() / ".cache" / "bnexp"))
    res = {}
    if "2" in only:
        print("fixed cost of a run ...", flush=True)
        res["fixed"] = fixed_cost(max(3, args.reps // 2), cache)
        print(f"per-run fixed cost and memory, {WARM_RUNS} runs in a warm worker vs fresh processes ...", flush=True)
        res["warm"] = warm_vs_fresh(max(3, args.reps // 2), cache)
    if "3" in only:
        print("sweep throughput, warm workers vs fresh processes ...", flush=True)
        res["sweep"] = sweep_throughput(cache)
    if "4" in only:
        print("precise BN cost ...", flush=True)
        res["precise"] = precise_cost(cache)
    if "5" in only or "6" in only:
        res["reference"] = reference_sweep()
    if "6" in only:
        res["seconds"] = reference_seconds()
    if "7" in only:
        sizes = tuple(int(n) for n in args.doctor_sizes.split(","))
        print(f"bnexp doctor on MobileNetV2 ({args.doctor_image}x{args.doctor_image}), {', '.join(map(str, sizes))} "
              f"images ...", flush=True)
        res["doctor"] = doctor_mobilenet(cache, sizes, args.doctor_image, min(sizes))
    if "8" in only:  # imports TensorFlow (Keras 3) into this process, like measure 1
        print("precise BN's recording pass, compiled vs eager ...", flush=True)
        res["precise_pass"] = precise_compiled_vs_eager(args.reps)
    if "9" in only:  # imports TensorFlow (Keras 3) into this process, like measure 1
        print("Keras 3 fit, several steps per call vs one ...", flush=True)
        res["steps_per_call"] = steps_per_call(args.reps)
    if "1" in only:  # last: it imports TensorFlow into this process
        print("training-step overhead ...", flush=True)
        res["overhead"] = step_overhead(args.reps, steps=200, fixed_order=args.fixed_order)
    out = Path(args.out)
    text = merged(_markdown(res), out.read_text() if out.exists() else "", only)
    print(text)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic.write_text(out, text)
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
