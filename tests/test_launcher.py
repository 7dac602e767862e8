"""bnexp.launcher, the one way bnexp starts a child process: output, exit code, timeout, no orphans."""

from __future__ import annotations

import os
import subprocess
import sys
import time

from bnexp import launcher
from tests.conftest import ROOT

# A child that starts a grandchild (a sleep) and waits: a timeout must take both down.
SLEEPER = "import subprocess, sys; p = subprocess.Popen(['sleep', '60']); print(p.pid, flush=True); p.wait()"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as f:  # a zombie is dead, only not yet reaped by its parent
        return f.read().split(")")[-1].split()[0] != "Z"


def test_run_returns_the_exit_code_with_output_and_errors_in_the_log(tmp_path):
    log_path = tmp_path / "log.txt"
    with open(log_path, "w") as log:
        code = launcher.run("json.tool", ["--no-such-option"], launcher.child_env("keras3", "cpu"), 60, log)
    assert code == 2 and "--no-such-option" in log_path.read_text()
    with open(log_path, "w") as log:
        assert launcher.run("platform", [], launcher.child_env("keras3", "cpu"), 60, log) == 0
    assert log_path.read_text().strip()


def test_a_timeout_kills_the_child_and_what_it_started(tmp_path):
    script = tmp_path / "sleeper.py"
    script.write_text(SLEEPER)
    env = launcher.child_env("tf_keras", "cpu")
    env["PYTHONPATH"] = os.pathsep.join([str(tmp_path), env["PYTHONPATH"]])
    log_path = tmp_path / "log.txt"
    start = time.monotonic()
    with open(log_path, "w") as log:
        assert launcher.run("sleeper", [], env, 3, log) is None
    assert time.monotonic() - start < 30
    grandchild = int(log_path.read_text().split()[0])
    deadline = time.monotonic() + 10
    while _alive(grandchild) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _alive(grandchild)


def test_child_env_sets_each_semantics_and_device():
    base = {"TF_USE_LEGACY_KERAS": "1", "KERAS_BACKEND": "torch", "PYTHONPATH": "/elsewhere"}
    keras3 = launcher.child_env("keras3", "cpu", base=base, backend="jax")
    assert "TF_USE_LEGACY_KERAS" not in keras3 and keras3["KERAS_BACKEND"] == "jax"
    assert keras3["CUDA_VISIBLE_DEVICES"] == "-1" and keras3["PYTHONPATH"].endswith("/elsewhere")
    legacy = launcher.child_env("tf_keras", "auto", base=base)
    assert legacy["TF_USE_LEGACY_KERAS"] == "1" and "KERAS_BACKEND" not in legacy
    assert "CUDA_VISIBLE_DEVICES" not in legacy


def test_the_launcher_imports_neither_a_framework_nor_the_rest_of_bnexp():
    probe = ("import sys, bnexp.launcher\n"
             "print(sorted(m for m in sys.modules if m.split('.')[0] in "
             "('bnexp', 'experiments', 'tensorflow', 'keras', 'tf_keras', 'omegaconf', 'numpy')))")
    out = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "['bnexp', 'bnexp.launcher', 'bnexp.names']"
