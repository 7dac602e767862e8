"""Warm workers: the same numbers as fresh processes, recycling, chunked submitit jobs, no orphans."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from bnexp import CONFIG_DIR, runner, workers
from bnexp.store import Store
from tests.conftest import ROOT, TINY, bnexp, bnexp_env, records

# A mixed sequence: three kinds of workers (keras3; tf_keras with keras2_v1; tf1), five scenarios, two seeds;
# each kind's second run follows another scenario or semantics in the same worker.
SEQUENCE = [
    ["scenario=training_flag", "seed=1", "training_flag.eval_samples=64", "training_flag.eval_batch_sizes=[1,8]",
     "training_flag.probe_steps=2"],
    ["scenario=weights_order", "semantics=tf_keras", "seed=0"],
    ["scenario=checkpoint", "semantics=tf1", "checkpoint.strategy=trainable", "seed=0"],
    ["scenario=momentum", "seed=0"],
    ["scenario=weights_order", "semantics=keras2_v1", "seed=1"],
    ["scenario=update_ops", "update_ops.impl=tf_layers", "seed=1"],
]
NOT_COMPARED = re.compile(r"(_s$|rss|wall|started_at|git_commit|from_cache|pid)")  # time, memory, provenance


def _configs(results: Path, warm: bool, sequence=SEQUENCE) -> list[dict]:
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        return [OmegaConf.to_container(compose("config", overrides=[
            *TINY, *o, f"paths.results_dir={results}", f"worker.warm={str(warm).lower()}", "worker.pool_size=3"]),
            resolve=True)
            for o in sequence]


def _worker_pid(run_folder: Path) -> int | None:
    m = re.search(r"bnexp: warm worker pid (\d+), its run (\d+)", (run_folder / "log.txt").read_text())
    return int(m.group(1)) if m else None


@pytest.fixture
def env_for_children(monkeypatch, cache_dir):
    monkeypatch.setenv("BNEXP_CACHE", str(cache_dir))
    monkeypatch.delenv("TF_USE_LEGACY_KERAS", raising=False)
    yield
    workers.close_all()


@pytest.mark.slow  # ~100 s on 2 cores (6 fresh processes, 3 workers): the slow pass in CI runs it
def test_warm_workers_give_the_numbers_of_fresh_processes_bit_for_bit(tmp_path, env_for_children):
    """The same mixed sequence in this process' warm workers and in fresh processes: every record field but
    timings, memory and cache provenance is identical."""
    out = {}
    for warm in (True, False):
        store = Store(tmp_path / str(warm))
        out[warm] = [runner.execute(cfg, store) for cfg in _configs(store.root, warm)]
    for (w, _), (f, _) in zip(out[True], out[False]):
        compared = lambda rec: {k: v for k, v in rec.items() if not NOT_COMPARED.search(k)}  # noqa: E731
        assert w["status"] == "ok" and compared(w) == compared(f), w["scenario"]
        assert len(compared(w)) > 20
    pids = [_worker_pid(folder) for _, folder in out[True]]
    assert [_worker_pid(folder) for _, folder in out[False]] == [None] * len(SEQUENCE)
    assert pids[0] == pids[3] and pids[1] == pids[4] and pids[2] == pids[5]  # keras2_v1 in the tf_keras worker
    assert len(set(pids)) == 3


def test_the_pool_keeps_pool_size_workers_and_stops_the_least_recently_used(tmp_path, monkeypatch):
    """No processes: a stand-in Worker records starts and stops; kinds a, b, a, c with pool_size 2 stop b."""
    events = []

    class Fake:
        def __init__(self, env):
            self.kind, self.runs, self.proc = env["kind"], 0, None
            events.append(("start", self.kind))

        def alive(self):
            return True

        def run(self, run_dir, timeout):
            self.runs += 1
            return "ok"

        def close(self):
            events.append(("stop", self.kind))

    monkeypatch.setattr(workers, "Worker", Fake)
    monkeypatch.setattr(workers, "env_for", lambda cfg: {"kind": cfg["semantics"]})
    monkeypatch.setattr(workers, "_pool", {})
    for semantics in ("keras3", "tf_keras", "keras3", "tf1", "keras3"):
        cfg = {"semantics": semantics, "device": "cpu", "backend": "tensorflow", "keras_version": None}
        assert workers.run_warm(cfg, tmp_path, timeout=5, max_runs=20, pool_size=2) == 0
    assert events == [("start", "keras3"), ("start", "tf_keras"), ("stop", "tf_keras"), ("start", "tf1")]
    assert [w.kind for w in workers._pool.values()] == ["tf1", "keras3"] and workers._pool[
        workers.worker_key(cfg)].runs == 3


@pytest.mark.slow  # ~11 s of worker start-ups
def test_a_worker_is_recycled_after_a_timeout_a_failed_run_and_max_runs(tmp_path, env_for_children, monkeypatch):
    started = []

    class Tracked(workers.Worker):
        def __init__(self, *args):
            super().__init__(*args)
            started.append(self)

    monkeypatch.setattr(workers, "Worker", Tracked)
    store = Store(tmp_path / "r")
    slow, failing, last = _configs(store.root, True, [["seed=0"], ["seed=1", "data.train_size=16"], ["seed=2"]])
    slow["train"]["timeout_s"] = 2.0  # less than TensorFlow's start-up
    rec, _ = runner.execute(slow, store)
    assert rec["status"] == "failed" and "timeout" in rec["error"]
    assert len(started) == 1 and started[0].proc.returncode == -signal.SIGKILL and workers._pool == {}
    rec, folder = runner.execute(failing, store)  # batch size 32 > 16 samples: fails inside the run
    assert rec["status"] == "failed" and "exceeds" in rec["error"] and _worker_pid(folder) == started[1].proc.pid
    assert workers._pool == {}
    last["worker"]["max_runs"] = 1
    rec, folder = runner.execute(last, store)
    assert rec["status"] == "ok" and _worker_pid(folder) == started[2].proc.pid and workers._pool == {}


@pytest.mark.slow  # ~12 s of submitit start-up
def test_slurm_local_runs_a_chunk_of_runs_in_one_submitit_job_and_one_worker(tmp_path, cache_dir):
    """hydra/launcher=slurm_local, 3 runs, worker.chunk=2: two submitit jobs, the first's two runs in one
    warm worker."""
    bnexp(["run", "-m", "scenario=momentum", "seed=0,1,2", "hydra/launcher=slurm_local", "worker.chunk=2", *TINY],
          tmp_path / "r", cache_dir)
    recs = records(tmp_path / "r", "momentum")
    assert sorted(r["seed"] for r in recs) == [0, 1, 2] and all(r["status"] == "ok" for r in recs)
    pid = {r["seed"]: _worker_pid(tmp_path / "r" / "runs" / "momentum" / r["run_id"]) for r in recs}
    assert pid[0] == pid[1] != pid[2]
    jobs = [p for p in (tmp_path / "r").glob(".hydra/multirun/*/.submitit/*") if p.name.isdigit()]
    assert len(jobs) == 2


def _processes_with(marker: str) -> list[int]:
    found = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and marker.encode() in (proc / "environ").read_bytes():
                found.append(int(proc.name))
        except OSError:
            pass
    return found


@pytest.mark.slow  # ~10 s; test_sweep's kill -9 test runs in make test
def test_kill_9_of_a_multirun_leaves_no_worker_behind(tmp_path, cache_dir):
    marker = f"BNEXP_TEST_MARK={uuid.uuid4().hex}"  # in the environment of every process the multirun starts
    env = {**bnexp_env(cache_dir, BNEXP_TEST_MARK=marker.split("=")[1]), "BNEXP_JOBS": "2"}
    results = tmp_path / "r"
    proc = subprocess.Popen([sys.executable, "-m", "bnexp", "run", "-m", "scenario=momentum", "seed=0,1,2,3", *TINY,
                             f"paths.results_dir={results}"], cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 120
    while not records(results, "momentum") and time.time() < deadline:
        time.sleep(0.2)
    workers_seen = [p for p in _processes_with(marker)
                    if b"bnexp.toolkit.worker" in Path(f"/proc/{p}/cmdline").read_bytes()]
    assert workers_seen, "no warm worker was running"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    deadline = time.time() + 10
    while _processes_with(marker) and time.time() < deadline:
        time.sleep(0.2)
    assert _processes_with(marker) == []


@pytest.mark.parametrize("key, value, message", [
    ("max_runs", 0, "worker.max_runs must be a whole number in [1, inf], got 0"),
    ("chunk", 2.5, "worker.chunk must be a whole number in [1, inf], got 2.5"),
    ("warm", "yes", "worker.warm must be true or false, got 'yes'"),
])
def test_bad_worker_settings_are_one_clear_line(tmp_path, key, value, message):
    from bnexp.config_check import validate
    from bnexp.errors import UserError

    cfg = _configs(tmp_path, True, [["seed=0"]])[0]
    cfg["worker"][key] = value
    with pytest.raises(UserError, match=re.escape(message)):
        validate(cfg)


RETAINED_GRAPHS = """
import gc
import numpy as np
from tensorflow.python.framework import ops
from tensorflow.python.framework.func_graph import FuncGraph
from bnexp.toolkit.child import reset
from bnexp.toolkit.framework import activate

def graphs():
    gc.collect()
    return sum(isinstance(o, FuncGraph) for o in gc.get_objects())

fw = activate("keras3")
reset(fw, 0)
before = graphs()
for _ in range(2):  # two runs' worth: each traces a train step and then is reset away
    model = fw.keras.Sequential([fw.keras.Input((4,)), fw.keras.layers.Dense(2)])
    model.compile(optimizer="adam", loss="mse")
    model.fit(np.zeros((8, 4)), np.zeros((8, 2)), epochs=1, verbose=0)
    del model
    custom = [n for n in ops._gradient_registry.list() if n.startswith("CustomGradient-")]
    print("custom gradients registered by fit:", len(custom))
    reset(fw, 0)
print("graphs before", before, "after", graphs())
assert graphs() == before
assert not [n for n in ops._gradient_registry.list() if n.startswith("CustomGradient-")]
"""


def test_reset_frees_the_graphs_of_earlier_runs():
    """A warm worker's reset leaves no traced graph of an earlier run alive: graph-mode tf.custom_gradient
    (Keras' optimizer uses one in every train step) pins its graph in TensorFlow's global gradient registry,
    which made a worker grow by ~15 MiB per run."""
    proc = subprocess.run([sys.executable, "-c", RETAINED_GRAPHS], cwd=ROOT, env=workers.child_env("keras3", "cpu"),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
