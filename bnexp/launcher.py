"""The one way bnexp starts a child process: `python -m MODULE ARGS` with a given semantics' environment.

Used by the runs (bnexp.workers: fresh children and warm workers) and by experiments that need a second
process with other framework semantics (training_flag's graph-mode probe). Plain standard library plus
bnexp.names, so both sides of the process boundary can import it, and it imports no TensorFlow.

Every child gets SIGKILL when the process that started it dies (PR_SET_PDEATHSIG) and runs in a session of
its own, so a timeout or a `kill -9` of a sweep takes down the child and whatever the child started.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
from typing import IO

from bnexp import PACKAGE_DIR
from bnexp.names import LEGACY


def child_env(semantics: str, device: str, base: dict[str, str] | None = None, backend: str = "tensorflow",
              keras_path: str | None = None) -> dict[str, str]:
    """Environment for a child process that will run `semantics` on `device` (Keras 3: on `backend`, with a
    pinned Keras release's folder `keras_path` first on the path)."""
    env = dict(os.environ if base is None else base)
    env.pop("TF_USE_LEGACY_KERAS", None)
    env.pop("KERAS_BACKEND", None)
    if semantics in LEGACY:
        env["TF_USE_LEGACY_KERAS"] = "1"
    if semantics == "keras3":
        env["KERAS_BACKEND"] = backend  # read once, when Keras is first imported
    if device == "cpu":
        env["CUDA_VISIBLE_DEVICES"] = "-1"
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [keras_path, str(PACKAGE_DIR.parent), env.get("PYTHONPATH")]))
    return env


def die_with_parent() -> None:
    """In the child: get SIGKILL when the parent dies, so a killed sweep leaves no orphan training."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def start(module: str, args: list[str], env: dict[str, str], **popen_kwargs) -> subprocess.Popen:
    """`python -m module *args` in its own session, killed when this process dies."""
    return subprocess.Popen([sys.executable, "-m", module, *args], env=env, preexec_fn=die_with_parent,
                            start_new_session=True, **popen_kwargs)


def kill(proc: subprocess.Popen) -> None:
    """SIGKILL the child's whole process group, then reap it."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


def run(module: str, args: list[str], env: dict[str, str], timeout: float, log: IO) -> int | None:
    """`python -m module *args` to completion, stdout and stderr into the open file `log`, no stdin:
    its exit code, or None if it ran past `timeout` seconds (then it and its process group are killed)."""
    proc = start(module, args, env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill(proc)
        return None
    except BaseException:  # Ctrl-C: take the child down too, then let the interrupt through
        kill(proc)
        raise
