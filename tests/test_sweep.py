"""Real multiruns in subprocesses: the sweep command end to end, kill -9 and resume, submitit_local."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from tests.conftest import ROOT, TINY, bnexp, bnexp_env, records

# The quick momentum grid (4 runs, 1 seed) on little data; train.batches stays the grid's own (10, 30).
SMALL = [o for o in TINY if not o.startswith("train.batches=")]
SWEEP = ["sweep", "sweep=quick", "scenarios=momentum", *SMALL]


def _start_sweep(results, cache_dir, *extra):
    return subprocess.Popen([sys.executable, "-m", "bnexp", *SWEEP, *extra, f"paths.results_dir={results}"], cwd=ROOT,
                            env=bnexp_env(cache_dir), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)


def _assert_complete(results, n=4):
    recs = records(results, "momentum")
    assert len(recs) == n and len({r["run_id"] for r in recs}) == n
    assert all(r["status"] == "ok" for r in recs)
    leftovers = [p for p in (results / "runs" / "momentum").iterdir() if p.name.startswith(".")]
    assert leftovers == []


def _kill_after_records(results, cache_dir, wanted: int, extra_delay: float, *extra):
    proc = _start_sweep(results, cache_dir, *extra)
    deadline = time.time() + 240
    while len(records(results, "momentum")) < wanted and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
    time.sleep(extra_delay)
    os.killpg(proc.pid, signal.SIGKILL)  # what a crash or kill -9 of the whole sweep does
    proc.wait()
    time.sleep(1)  # children die with their parent (PR_SET_PDEATHSIG)


def test_sweep_killed_midway_resumes_without_loss_or_duplicates(tmp_path, cache_dir):
    results = tmp_path / "r"
    short = "train.batches=4"  # 2 of the grid's runs, 4 steps each (the slow random-kill test below: all 4)
    _kill_after_records(results, cache_dir, 1, 0, short)
    done_before = {r["run_id"]: r["started_at"] for r in records(results, "momentum")}
    assert len(done_before) == 1
    out = bnexp([*SWEEP, short], results, cache_dir).stdout
    assert "1 of 2 runs current; running 1 in scenarios momentum" in out
    _assert_complete(results, n=2)
    after = {r["run_id"]: r["started_at"] for r in records(results, "momentum")}
    assert all(after[k] == v for k, v in done_before.items())  # finished runs were not redone
    assert (results / "report.md").exists()
    meta = json.loads((results / "sweeps" / "quick.json").read_text())
    assert meta["runs"] == 2 and meta["already_done"] == 1 and meta["seconds"] > 0


@pytest.mark.slow
@pytest.mark.parametrize("killer_seed", [1, 2, 3])
def test_sweep_killed_at_random_points(tmp_path, cache_dir, killer_seed):
    import random

    rnd = random.Random(killer_seed)
    results = tmp_path / "r"
    _kill_after_records(results, cache_dir, wanted=rnd.randint(0, 2), extra_delay=rnd.uniform(0, 8))
    for rec in records(results, "momentum"):
        assert rec["status"] in ("ok", "failed", "diverged")
    bnexp(SWEEP, results, cache_dir)
    _assert_complete(results)


def test_sweep_with_a_failing_run_finishes_the_others_and_exits_nonzero(tmp_path, cache_dir):
    """Every run times out (train.timeout_s=1): each failure is recorded and the sweep still goes through
    every grid point, then lists the failures and exits 1."""
    proc = bnexp([*SWEEP, "train.batches=4", "train.timeout_s=1"], tmp_path / "r", cache_dir, check=False)
    assert proc.returncode == 1
    assert "failures:" in proc.stderr and "timeout" in proc.stderr
    assert len(records(tmp_path / "r", "momentum")) == 2  # both grid points (train.batches=4 leaves 2)


def test_submitit_local_launcher_runs_two_jobs(tmp_path, cache_dir):
    bnexp(["run", "-m", "scenario=momentum", "seed=0,1", "hydra/launcher=submitit_local", *TINY],
          tmp_path / "r", cache_dir)
    recs = records(tmp_path / "r", "momentum")
    assert sorted(r["seed"] for r in recs) == [0, 1] and all(r["status"] == "ok" for r in recs)


def test_unknown_sweep_or_scenario_is_a_clear_error(tmp_path, cache_dir):
    proc = bnexp(["sweep", "sweep=huge"], tmp_path / "r", cache_dir, check=False)
    assert proc.returncode == 2 and "cannot compose sweep=huge" in proc.stderr and "quick" in proc.stderr
    proc = bnexp(["sweep", "sweep=quick", "scenarios=nosuch"], tmp_path / "r", cache_dir, check=False)
    assert proc.returncode == 2 and "no grid for nosuch" in proc.stderr
    proc = bnexp(["sweep", "scenarios=momentum"], tmp_path / "r", cache_dir, check=False)  # no sweep=: no default
    assert proc.returncode == 2 and proc.stdout == "" and proc.stderr == (
        "bnexp: error: bnexp sweep needs sweep=NAME: pass sweep=frameworks|quick|reference (quick: every scenario's "
        "smoke grid; reference: the committed reference; frameworks: Keras 3 backends and releases)\n")
    assert not (tmp_path / "r").exists()



def _sweep_proc(results, cache_dir, *extra, sigint=signal.SIG_DFL):
    """A sweep in its own process group. SIG_DFL: Ctrl-C reaches it even when the tests run in a background job
    (which a shell starts with SIGINT ignored, and children inherit that); SIG_IGN: a sweep started that way."""
    return subprocess.Popen([sys.executable, "-m", "bnexp", *SWEEP, *extra, f"paths.results_dir={results}"],
                            cwd=ROOT, env=bnexp_env(cache_dir), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True, preexec_fn=lambda: signal.signal(signal.SIGINT, sigint))


def test_two_sweeps_on_one_folder_run_each_run_once(tmp_path, cache_dir):
    results = tmp_path / "r"
    procs = [_sweep_proc(results, cache_dir, "train.batches=4", "hydra/launcher=basic") for _ in range(2)]  # 2 runs
    outs = [p.communicate(timeout=400) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    recs = records(results, "momentum")
    assert len(recs) == 2 and all(r["status"] == "ok" for r in recs)
    logs = sorted((results / ".hydra" / "sweep-logs").glob("quick-*.log"))
    assert len(logs) == 2  # each sweep its own log
    text = "".join(log.read_text() for log in logs)
    for rec in recs:  # the run lock: one sweep ran it, the other waited and skipped it
        assert text.count(f"momentum {rec['run_id']} ok:") == 1


def test_ctrl_c_exits_130_and_the_sweep_resumes(tmp_path, cache_dir):
    results = tmp_path / "r"
    proc = _sweep_proc(results, cache_dir, "train.batches=4", "hydra/launcher=basic")
    deadline = time.time() + 240
    while not list(results.glob("runs/momentum/.tmp-*")) and time.time() < deadline and proc.poll() is None:
        time.sleep(0.1)  # the first run is training (its temp folder exists)
    os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal does: SIGINT to the foreground group
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err
    last = err.strip().splitlines()[-1]
    assert last.startswith("bnexp: interrupted; ") and last.endswith("; resume with the same command")
    out = bnexp([*SWEEP, "train.batches=4", "hydra/launcher=basic"], results, cache_dir).stdout
    assert " of 2 runs current; running " in out
    recs = records(results, "momentum")
    assert len(recs) == 2 and all(r["status"] == "ok" for r in recs)


def test_kill_stops_a_background_sweep_as_ctrl_c_does(tmp_path, cache_dir):
    """A sweep started in the background (`nohup make sweep &`: SIGINT ignored, as a shell starts background
    jobs) cannot get Ctrl-C; `kill PID` (SIGTERM) ends it with the same line, exit 143, and its multirun stops."""
    results = tmp_path / "r"
    proc = _sweep_proc(results, cache_dir, "train.batches=4", "hydra/launcher=basic", sigint=signal.SIG_IGN)
    deadline = time.time() + 240
    while not list(results.glob("runs/momentum/.tmp-*")) and time.time() < deadline and proc.poll() is None:
        time.sleep(0.1)  # the first run is training
    started = time.monotonic()
    proc.terminate()  # SIGTERM to the sweep alone, as `kill PID`
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err
    assert time.monotonic() - started < 10  # the multirun got SIGTERM too, not SIGINT it ignores (then 15 s)
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert last.startswith("bnexp: interrupted; ") and last.endswith("; resume with the same command")
    time.sleep(1)
    with pytest.raises(ProcessLookupError):  # nothing of the sweep's process group is left running
        os.killpg(proc.pid, 0)


def test_the_jobs_a_sweep_writes_compose_to_its_planned_runs_grouped_by_kind_of_worker():
    """The one multirun gets each point's own overrides: composed again they give the planned run id; the job
    order keeps each kind of worker together, first-seen kind first, grid order within a kind."""
    from bnexp import config_check, sweep
    from bnexp.store import run_id

    _, multirun, points, _ = sweep.plan("quick", ["momentum", "weights_order", "checkpoint"], ["seed=0"])
    assert len(multirun) == 3 and len({p.worker for p in points}) == 3  # keras3, tf_keras, tf1
    for p in points:
        assert not any(o.startswith("hydra") for o in p.overrides)
        assert len({o.split("=", 1)[0] for o in p.overrides}) == len(p.overrides)  # one value per key
        [resolved] = config_check.compose(list(p.overrides))
        assert run_id(resolved) == p.run_id
    ordered = sweep.job_order(points)
    kinds = [p.worker for p in ordered]
    assert kinds == sorted(kinds, key=[p.worker for p in points].index)  # contiguous, in order of first use
    assert [p for p in ordered if p.worker == kinds[0]] == [p for p in points if p.worker == kinds[0]]


@pytest.mark.slow  # ~1 min; make test's sweep tests cover the same path for one scenario
def test_a_sweep_over_several_scenarios_is_one_multirun_that_keeps_its_workers(tmp_path, cache_dir):
    """momentum and weights_order (keras3 and tf_keras runs), one launcher process: one keras3 worker serves
    both scenarios' keras3 runs."""
    results = tmp_path / "r"
    bnexp(["sweep", "sweep=quick", "scenarios=momentum,weights_order", *SMALL, "hydra/launcher=basic"], results,
          cache_dir)
    assert len(list((results / ".hydra" / "multirun").glob("*/multirun.yaml"))) == 1  # one multirun
    pids = {}
    for rec in records(results):
        log = (results / "runs" / rec["scenario"] / rec["run_id"] / "log.txt").read_text()
        pids.setdefault((rec["scenario"], rec["semantics"]), set()).add(log.split("warm worker pid ")[1].split(",")[0])
    assert pids[("momentum", "keras3")] == pids[("weights_order", "keras3")] and len(pids[("momentum", "keras3")]) == 1


def _fake_sweep(tmp_path, done: int):
    """A store with the 4 planned momentum runs of sweep quick, the first `done` of them current and ok."""
    from bnexp import fingerprint, sweep
    from bnexp.store import Store

    _, _, points, _ = sweep.plan("quick", ["momentum"], [f"paths.results_dir={tmp_path}"])
    store = Store(tmp_path)
    for p in points[:done]:
        rec = {"run_id": p.run_id, "scenario": p.scenario, "status": "ok", "fingerprint": fingerprint.of(p.scenario),
               "acc_test_moving": 0.5}
        store.commit(store.begin(p.scenario, p.run_id), p.scenario, p.run_id, rec)
    return sweep, store, points


def test_closing_line_says_what_the_sweep_ran_itself_and_what_was_already_done(tmp_path, monkeypatch, capsys):
    from bnexp import report

    monkeypatch.setattr(report, "build", lambda *a, **k: None)
    sweep, store, points = _fake_sweep(tmp_path, done=4)
    assert sweep._summary(store, points, 3.0, "quick", pending=[]) == 0
    assert capsys.readouterr().out == "bnexp sweep: ran nothing; all 4 runs were already done (3 s)\n"
    # 2 runs done before; this sweep ran the other 2: one ended ok, one left no record
    sweep, store, points = _fake_sweep(tmp_path / "b", done=3)
    assert sweep._summary(store, points, 5.0, "quick", pending=points[2:]) == 1
    out = capsys.readouterr().out
    assert out == "bnexp sweep: ran 2 of 4 runs in 5 s: 1 ok, 0 diverged, 1 failed; 2 already done at the start\n"


def test_a_sweeps_log_holds_each_line_as_soon_as_it_is_printed(tmp_path, monkeypatch):
    """The multirun's lines reach the sweep's own log at once (flushed per line): a sweep killed while its
    multirun still runs leaves them, not a 0-byte log. The multirun is a stand-in that prints a line and waits."""
    import threading

    from bnexp import sweep

    _, store, _ = _fake_sweep(tmp_path, done=0)
    line = "bnexp: momentum abc ok: somewhere/metrics.json"
    procs = []

    def launch(jobs_file, points, results_dir, extra):
        procs.append(subprocess.Popen([sys.executable, "-c", f"import time; print({line!r}, flush=True); "
                                       "time.sleep(60)"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
        return procs[-1]

    monkeypatch.setattr(sweep, "_launch", launch)
    monkeypatch.setattr(sweep, "_summary", lambda *a, **k: 0)
    monkeypatch.setattr(sweep, "_write_meta", lambda *a, **k: None)
    worker = threading.Thread(target=sweep.main, args=(["sweep=quick", "scenarios=momentum",
                                                        f"paths.results_dir={tmp_path}"],), daemon=True)
    worker.start()
    try:
        deadline = time.time() + 60
        logs = []
        while time.time() < deadline and not (logs and line in logs[0].read_text()):
            logs = sorted((tmp_path / ".hydra" / "sweep-logs").glob("quick-*.log"))
            time.sleep(0.1)
        assert logs and logs[0].read_text() == line + "\n"  # while the multirun still runs
        assert procs[0].poll() is None
    finally:
        for proc in procs:
            proc.kill()
        worker.join(timeout=30)


def test_load_sampler_summarises_the_load_average_while_a_sweep_runs():
    from bnexp import sweep

    sampler = sweep.LoadSampler(every=0.01)
    time.sleep(0.1)
    got = sampler.summary()
    assert len(sampler.samples) >= 2 and 0 <= got["load_mean"] <= got["load_max"]
    n = len(sampler.samples)
    time.sleep(0.05)
    assert len(sampler.samples) <= n + 1  # stopped by summary()
