"""Keras 3 backends (jax, torch) and pinned Keras releases: bad input fails with one line before any run,
the parent never imports a framework, run ids of TensorFlow runs stay as they were, NumPy batches off
TensorFlow, and each backend and an older release end to end at tiny size (slow)."""

from __future__ import annotations

import math
import os
import socket
import subprocess
import sys

import pandas as pd
import pytest
import yaml
from conftest import ROOT, bnexp

from bnexp import backends, report
from bnexp.config_check import scenario_configs
from bnexp.errors import UserError
from bnexp.store import run_id
from bnexp.workers import child_env


def cfg(tmp_path, **over) -> dict:
    return {"semantics": "keras3", "backend": "tensorflow", "keras_version": None,
            "paths": {"cache_dir": str(tmp_path)}, **over}


# ---------------------------------------------------------------- bad input: one line each, before any run


@pytest.mark.parametrize("over, says", [
    ({"backend": "mxnet"}, "unknown backend 'mxnet'; valid: tensorflow, jax, torch"),
    ({"semantics": "tf_keras", "backend": "jax"}, "backend=jax is for semantics=keras3 only"),
    ({"semantics": "keras2_v1", "keras_version": "3.10.0"}, "keras_version=3.10.0 is for semantics=keras3 only"),
    ({"keras_version": "2.15.0"}, "unknown keras_version '2.15.0': a Keras 3 release is 3.<minor>.<patch>"),
    ({"keras_version": "latest"}, "unknown keras_version 'latest'"),
    ({"keras_version": "3.16.0.dev"}, "nightly (or one build, e.g. 3.16.0.dev2026102704) is the development build"),
])
def test_bad_backend_or_release_is_one_line(tmp_path, over, says):
    with pytest.raises(UserError, match=None) as e:
        backends.check(cfg(tmp_path, **over))
    assert says in str(e.value) and "\n" not in str(e.value)


def test_backend_not_installed_is_one_line(tmp_path, monkeypatch):
    monkeypatch.setattr(backends, "installed", lambda name: name != "torch")
    with pytest.raises(UserError, match=r"^backend=torch is not installed .*pip install -e '\.\[backends\]'"):
        backends.check(cfg(tmp_path, backend="torch"))


def test_release_not_cached_while_offline_fails_within_seconds(tmp_path, monkeypatch):
    monkeypatch.setattr(backends, "reachable", lambda host, timeout_s: False)
    with pytest.raises(UserError, match=r"keras_version=3\.9\.2 is not cached in .* is not reachable"):
        backends.check(cfg(tmp_path, keras_version="3.9.2"))
    assert not (tmp_path / "keras" / "3.9.2").exists()


def test_pip_says_no_such_release_in_one_line():
    pip_output = ("ERROR: Could not find a version that satisfies the requirement keras==3.99.0 (from versions: "
                  "2.15.0, 3.0.0, 3.10.0, 3.15.1)\nERROR: No matching distribution found for keras==3.99.0\n")
    line = backends._pip_failure("3.99.0", pip_output, "pypi.org")
    assert line == ("keras_version=3.99.0 is not a release on the package registry (pypi.org); Keras 3 releases "
                    "there: 3.0.0, 3.10.0, 3.15.1")


# ---------------------------------------------------------------- keras_version=nightly (keras-nightly)


def fake_pip(calls: list, build: str = "3.16.0.dev2026102704", fail: str | None = None):
    """Stands in for `pip install --target DIR ...`: leaves the package and its dist-info as pip does."""
    def run(cmd, **kwargs):
        calls.append(cmd)
        if fail is not None:
            return subprocess.CompletedProcess(cmd, 1, stdout="", stderr=fail)
        target = cmd[cmd.index("--target") + 1]
        dist = "keras_nightly" if cmd[-1].startswith("keras-nightly") else "keras"
        version = build if dist == "keras_nightly" else cmd[-1].split("==")[1]
        os.makedirs(os.path.join(target, "keras"))
        os.makedirs(os.path.join(target, f"{dist}-{version}.dist-info"))
        return subprocess.CompletedProcess(cmd, 0, stdout="", stderr="")
    return run


def test_nightly_installs_keras_nightly_once_and_records_the_exact_build(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(backends, "reachable", lambda host, timeout_s: True)
    monkeypatch.setattr(backends.subprocess, "run", fake_pip(calls))
    folder = tmp_path / "keras" / "nightly"
    extra = backends.child_env_extra(cfg(tmp_path, backend="jax", keras_version="nightly"))
    assert extra == {"KERAS_BACKEND": "jax", "PYTHONPATH": str(folder)}
    assert calls[0][-1] == "keras-nightly" and "--pre" in calls[0] and "--no-deps" in calls[0]
    assert backends.installed_build(folder) == "3.16.0.dev2026102704"
    assert backends.cached_releases(tmp_path) == ["nightly (3.16.0.dev2026102704)"]
    # cached: a second run installs nothing, and needs no registry
    monkeypatch.setattr(backends, "reachable", lambda host, timeout_s: pytest.fail("asked the registry"))
    backends.check(cfg(tmp_path, keras_version="nightly"))
    assert len(calls) == 1


def test_one_nightly_build_is_pinned_by_its_version(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(backends, "reachable", lambda host, timeout_s: True)
    monkeypatch.setattr(backends.subprocess, "run", fake_pip(calls, build="3.16.0.dev2026101104"))
    backends.check(cfg(tmp_path, keras_version="3.16.0.dev2026101104"))
    assert calls[0][-1] == "keras-nightly==3.16.0.dev2026101104"
    assert backends.installed_build(tmp_path / "keras" / "3.16.0.dev2026101104") == "3.16.0.dev2026101104"
    monkeypatch.setattr(backends.subprocess, "run", fake_pip(calls))
    backends.check(cfg(tmp_path, keras_version="3.9.2"))
    # releases and builds oldest first, the floating nightly last
    (tmp_path / "keras" / "nightly").mkdir()
    (tmp_path / "keras" / "nightly" / backends.COMPLETE).write_text("keras-nightly==3.16.0.dev2026102704\n")
    assert backends.cached_releases(tmp_path) == ["3.9.2", "3.16.0.dev2026101104", "nightly (3.16.0.dev2026102704)"]


def test_nightly_not_cached_while_offline_is_one_line(tmp_path, monkeypatch):
    monkeypatch.setattr(backends, "reachable", lambda host, timeout_s: False)
    with pytest.raises(UserError) as e:
        backends.check(cfg(tmp_path, keras_version="nightly"))
    assert str(e.value).startswith("keras_version=nightly is not cached in ") and "\n" not in str(e.value)
    assert "not reachable" in str(e.value) and not (tmp_path / "keras" / "nightly").exists()


def test_a_nightly_build_the_registry_lacks_is_one_line_with_the_newest(tmp_path, monkeypatch):
    pip_output = ("ERROR: Could not find a version that satisfies the requirement keras-nightly==3.16.0.dev1 (from "
                  "versions: 3.16.0.dev2026101104, 3.16.0.dev2026102704, 3.16.0.dev2026102604)\n"
                  "ERROR: No matching distribution found for keras-nightly==3.16.0.dev1\n")
    monkeypatch.setattr(backends, "reachable", lambda host, timeout_s: True)
    monkeypatch.setattr(backends.subprocess, "run", fake_pip([], fail=pip_output))
    monkeypatch.delenv("PIP_INDEX_URL", raising=False)  # the line names the registry: PyPI here
    with pytest.raises(UserError) as e:
        backends.check(cfg(tmp_path, keras_version="3.16.0.dev1"))
    assert str(e.value) == ("keras_version=3.16.0.dev1: the package registry (pypi.org) has no such keras-nightly "
                            "build; newest there: 3.16.0.dev2026101104, 3.16.0.dev2026102604, 3.16.0.dev2026102704 "
                            "(keras_version=nightly takes the newest)")
    assert not (tmp_path / "keras" / "3.16.0.dev1").exists()


def _registry_up() -> bool:
    try:
        socket.create_connection((backends._registry_host(), 443), timeout=3).close()
        return True
    except OSError:
        return False


@pytest.mark.skipif(not _registry_up(), reason="the package registry is not reachable")
def test_release_missing_on_the_registry_through_the_cli(tmp_path, cache_dir):
    proc = bnexp(["run", "scenario=training_flag", "keras_version=3.99.0"], tmp_path / "r", tmp_path, check=False,
                 timeout=120)
    assert proc.returncode != 0 and not (tmp_path / "r" / "runs").exists()
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "keras_version=3.99.0 is not a release on the package registry" in lines[0]


def test_cli_rejects_a_backend_for_tf_keras_before_any_run(tmp_path, cache_dir):
    proc = bnexp(["run", "scenario=training_flag", "semantics=tf_keras", "backend=torch"], tmp_path / "r",
                 cache_dir, check=False, timeout=60)
    assert proc.returncode != 0 and not (tmp_path / "r" / "runs").exists()
    assert "backend=torch is for semantics=keras3 only" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


# ---------------------------------------------------------------- parent side


def test_defaults_keep_old_run_ids_and_a_backend_makes_a_new_run(tmp_path):
    old = {"scenario": {"name": "momentum"}, "seed": 0, "semantics": "keras3"}
    assert run_id({**old, "backend": "tensorflow", "keras_version": None}) == run_id(old)
    assert run_id({**old, "backend": "jax"}) != run_id(old) != run_id({**old, "keras_version": "3.10.0"})


def test_child_env_sets_keras_backend_for_keras3_only():
    assert child_env("keras3", "cpu", {}, backend="jax")["KERAS_BACKEND"] == "jax"
    assert "KERAS_BACKEND" not in child_env("tf_keras", "cpu", {"KERAS_BACKEND": "jax"}, backend="tensorflow")


def test_child_env_extra_puts_a_cached_release_first(tmp_path):
    folder = tmp_path / "keras" / "3.9.2"
    folder.mkdir(parents=True)
    (folder / backends.COMPLETE).write_text("keras==3.9.2\n")  # as an install leaves it
    extra = backends.child_env_extra(cfg(tmp_path, backend="torch", keras_version="3.9.2"))
    assert extra == {"KERAS_BACKEND": "torch", "PYTHONPATH": str(folder)}
    assert backends.child_env_extra(cfg(tmp_path, semantics="tf_keras")) == {}
    assert backends.cached_releases(tmp_path) == ["3.9.2"]
    assert any("cached releases: 3.9.2" in line for line in backends.list_lines(tmp_path))
    # the venv's own release needs no cache
    assert "PYTHONPATH" not in backends.child_env_extra(cfg(tmp_path, keras_version=backends.installed_keras()))


def test_report_tables_outcomes_per_backend_and_release():
    rows = []
    for seed in range(5):
        for backend, keras, changed in (("tensorflow", "3.15.1", 0.0), ("jax", "3.15.1", 1.0), (None, "3.12.1", 0.0)):
            rows.append({"scenario": "frozen_base", "status": "ok", "seed": seed, "semantics": "keras3",
                         "keras_backend": backend, "keras": keras, "transfer.stage2": True, "base.trainable": False,
                         "base.training": False, "base.flag_style": "functional", "s2_bn_stats_changed": changed,
                         "s2_flag_honoured": 1.0})
    text = report.keras3_outcomes(pd.DataFrame(rows), {"frozen_base": scenario_configs()["frozen_base"]})
    assert "| rule | jax / Keras 3.15.1 | tensorflow / Keras 3.12.1 | tensorflow / Keras 3.15.1 |" in text
    c15 = next(line for line in text.splitlines() if line.startswith("| C15:"))
    assert c15.count("not reproduced 1.000") == 1 and c15.count("reproduced 0.000") == 2
    one = report.keras3_outcomes(pd.DataFrame(rows[:1]), scenario_configs())  # one setup: says where the others are
    assert "| rule |" not in one and "one Keras 3 setup only (tensorflow / Keras 3.15.1)" in one
    assert "make sweep SWEEP=frameworks" in one


# ---------------------------------------------------------------- child side without TensorFlow


NO_TF = """
import sys, numpy as np
from pathlib import Path
from bnexp.toolkit.framework import activate
from bnexp.toolkit import data
fw = activate("keras3", "{backend}")
folder = Path(sys.argv[1])
rng = np.random.default_rng(0)
for key, stem in data.IDX_FILES.items():
    shape = (64, 28, 28) if key.startswith("x") else (64,)
    data.write_idx(folder / stem, rng.integers(0, 10, shape).astype(np.uint8))
arrays = data.load("fashion_mnist", str(folder), None, None)
batches = list(data.train_batches(arrays.x_train, arrays.y_train, 16, 6, 3))
order = data.batch_order(64, 16, 6, 3)
assert all(np.array_equal(x, arrays.x_train[i]) and np.array_equal(y, arrays.y_train[i])
           for (x, y), i in zip(batches, order)) and len(batches) == 6
# fit pulls the batches in that order across its epochs (the generator is not restarted per epoch)
keras = fw.keras
seen = []
class Seen(keras.layers.Layer):
    def call(self, x):
        try:
            seen.append(np.asarray(keras.ops.convert_to_numpy(x)[0]))
        except Exception:  # a symbolic or traced call while Keras builds the model
            pass
        return x
inputs = keras.Input((28, 28, 1))
model = keras.Model(inputs, keras.layers.Dense(10)(keras.layers.Flatten()(Seen()(inputs))))
model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True), run_eagerly=True)
model.fit(data.train_batches(arrays.x_train.astype("float32"), arrays.y_train, 16, 6, 3), epochs=3,
          steps_per_epoch=2, verbose=0)
assert len(seen) == 6 and all(np.array_equal(s, arrays.x_train[i[0]]) for s, i in zip(seen, order)), "order"
assert fw.tf is None and "tensorflow" not in sys.modules, "TensorFlow was imported"
print("OK", fw.versions())
"""


@pytest.mark.parametrize("backend", ["jax", pytest.param("torch", marks=pytest.mark.slow)])  # torch: ~60 s import
def test_numpy_batches_and_no_tensorflow_on_other_backends(tmp_path, backend):
    if not backends.installed(backend):
        pytest.skip(f"{backend} is not installed")
    env = {**os.environ, "KERAS_BACKEND": backend, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-c", NO_TF.format(backend=backend), str(tmp_path)], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert f"'keras_backend': '{backend}'" in proc.stdout


# ---------------------------------------------------------------- end to end at tiny size


TINY_FLAG = ["scenario=training_flag", "training_flag.eval_samples=64", "training_flag.eval_batch_sizes=[1,8,64]"]


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_training_flag_and_momentum_on_each_backend(run_cli, backend):
    flag = run_cli(*TINY_FLAG, f"backend={backend}", "bn.training=false", "model.flag_style=subclass",
                   "training_flag.compare_nobn=false")
    assert flag["status"] == "ok", flag["error"]
    assert flag["keras_backend"] == backend and flag["tensorflow"] is None and flag["backend"] == backend
    assert flag["moving_at_init"] == 1 and flag["fit_predict_agree"] == 1  # the flag in call() holds here too
    mom = run_cli("scenario=momentum", f"backend={backend}")
    assert mom["status"] == "ok", mom["error"]
    assert mom["recorded_steps"] == 4
    # the NumPy recording replays the layers' own moving statistics
    assert mom["replay_check.mean_err"] < 1e-4 and mom["replay_check.var_rel_err"] < 1e-4
    assert math.isfinite(mom["m0.99.gap_test"])


@pytest.mark.slow
def test_frozen_base_stage2_on_jax(run_cli):
    rec = run_cli("scenario=frozen_base", "semantics=keras3", "backend=jax", "base.training=false",
                  "transfer.stage2=true", "transfer.pretrain_steps=20", "transfer.dist_batches=2",
                  "transfer.stage2_steps=3")
    assert rec["status"] == "ok", rec["error"]
    assert rec["keras_backend"] == "jax" and rec["bn_stats_changed"] == 0  # frozen stage 1
    assert rec["s2_bn_stats_changed"] in (0.0, 1.0) and math.isfinite(rec["s2_acc_test_eval"])


@pytest.mark.slow
@pytest.mark.skipif(not _registry_up(), reason="the package registry is not reachable")
def test_an_older_release_end_to_end(run_cli):
    rec = run_cli(*TINY_FLAG, "keras_version=3.12.1", "training_flag.compare_nobn=false")
    assert rec["status"] == "ok", rec["error"]
    assert rec["keras"] == "3.12.1" and rec["keras_version"] == "3.12.1"


@pytest.mark.slow
@pytest.mark.skipif(not _registry_up(), reason="the package registry is not reachable")
def test_nightly_real_install_imports_its_own_keras(tmp_path):
    folder = backends.release_dir(cfg(tmp_path, keras_version="nightly"))
    build = backends.installed_build(folder)
    assert backends.DEV.match(build), build
    proc = subprocess.run([sys.executable, "-c", "import keras; print(keras.__version__, keras.__file__)"],
                          env={**os.environ, "PYTHONPATH": folder, "KERAS_BACKEND": "jax"}, capture_output=True,
                          text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-2000:]
    version, path = proc.stdout.split()
    assert version == build and path.startswith(folder)  # the child imports the build the marker names


def test_frameworks_sweep_has_backend_and_release_grids_of_the_same_scenario_and_the_reference_none(monkeypatch):
    from bnexp import sweep

    monkeypatch.setattr(backends, "release_dir", lambda cfg: None)  # no installs here: the grids' shape only
    _, multirun, points, _ = sweep.plan("frameworks", ["training_flag"], [])
    assert list(multirun) == ["training_flag@backends", "training_flag@releases"]
    assert multirun["training_flag@backends"][0] == "scenario=training_flag"
    assert {p.scenario for p in points} == {"training_flag"}
    per_grid = {g: sum(p.grid == g for p in points) for g in multirun}
    seeds = len(yaml.safe_load((ROOT / "configs" / "sweep" / "frameworks.yaml").read_text())["seeds"])
    assert per_grid == {"training_flag@backends": 12 * seeds, "training_flag@releases": 12 * seeds}
    _, reference, points, _ = sweep.plan("reference", None, [])
    # the reference grid: the default setup, which verdicts read, but for the conformance probes: the installed
    # Keras on every backend at the sweep's seeds (C18 is judged per backend) and the matrix of every release x
    # backend (one seed; the report's conformance section, no verdict)
    other_setups = [g for g, over in reference.items() if any(o.startswith(("backend=", "keras_version="))
                                                             and o != "backend=tensorflow" for o in over)]
    assert other_setups == ["conformance", "conformance@matrix"]
    conformance = [p for p in points if p.scenario == "conformance"]
    seeds = len(yaml.safe_load((ROOT / "configs" / "sweep" / "reference.yaml").read_text())["seeds"])
    # 21 setups; seed 0 of the installed Keras on each of the 3 backends is shared by both grids
    assert len({p.worker for p in conformance}) == 21 and len(conformance) == 18 + 3 * seeds
    matrix = [p for p in conformance if p.grid == "conformance@matrix"]
    assert {dict(o.split("=", 1) for o in p.overrides)["seed"] for p in matrix} == {"0"}


def test_verdicts_use_the_default_setup_only():
    df = pd.DataFrame({"backend": [None, "tensorflow", "jax", None], "keras_version": [None, None, None, "3.9.2"]})
    assert report.default_setup(df).tolist() == [True, True, False, False]
    # the conformance probes keep every backend of the installed Keras: their rules name the backend they read
    probes = df.assign(scenario=["momentum", "momentum", "conformance", "conformance"])
    assert report.default_setup(probes).tolist() == [True, True, True, False]
    assert report.default_setup(pd.DataFrame({"x": [1]})).tolist() == [True]  # records from before backends
