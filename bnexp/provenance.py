"""Where a record's numbers came from: the commit of the checkout that ran it, whether its tree was clean, and
the processor and kernel settings that rounded its floats.

The report uses this to say, at its top, when its records come from more than one commit, from a dirty
tree, or from code (experiments, toolkit, configs) that differs from the current head, and, in its
environment section, which processors ran them. No TensorFlow here.

Float32 kernels (oneDNN, Eigen) pick their instructions by processor, so the same code and seed give
bit-identical numbers on one machine and library set, and numbers that differ in the last digits on a
processor with other vector extensions (tests/test_numbers_unchanged.py measures how much).
"""

from __future__ import annotations

import os
import platform
import subprocess
from functools import lru_cache
from pathlib import Path

from bnexp import PACKAGE_DIR

# The files that decide a run's numbers (and, for configs/scenario, the rules that judge them).
CODE_PATHS = ("experiments", "bnexp/toolkit", "configs")


def _git(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["git", *args], cwd=PACKAGE_DIR.parent, capture_output=True, text=True, timeout=20)


@lru_cache(maxsize=1)
def checkout() -> tuple[str, bool]:
    """(short commit of the bnexp checkout or 'unknown', whether its tracked files are unchanged)."""
    try:
        head = _git("rev-parse", "--short=12", "HEAD")
        if head.returncode != 0:
            return "unknown", False
        dirty = _git("status", "--porcelain", "--untracked-files=no").stdout.strip()
        return head.stdout.strip(), not dirty
    except (OSError, subprocess.TimeoutExpired):
        return "unknown", False


def git_commit() -> str:
    """The commit as records store it: 'abc123def456', with '+dirty' when the tree had uncommitted changes."""
    commit, clean = checkout()
    return commit if clean or commit == "unknown" else f"{commit}+dirty"


def code_differs(commit: str) -> bool | None:
    """Whether the experiments, toolkit or configs at `commit` differ from the current head's; None when git
    cannot tell (no repository, or a commit it does not know)."""
    base = commit.split("+", 1)[0]
    if base == "unknown":
        return None
    try:
        out = _git("diff", "--quiet", base, "HEAD", "--", *CODE_PATHS)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return {0: False, 1: True}.get(out.returncode)


def warnings(commits: list[str]) -> list[str]:
    """The provenance problems of a set of records' `git_commit` values, one sentence each (none: clean)."""
    unique = sorted(set(commits))
    out = []
    if len(unique) > 1:
        out.append(f"the records come from {len(unique)} commits ({', '.join(unique)})")
    dirty = [c for c in unique if c.endswith("+dirty")]
    if dirty:
        out.append(f"records from a tree with uncommitted changes ({', '.join(dirty)})")
    changed = [c for c in unique if code_differs(c)]
    if changed:
        out.append(f"experiments, toolkit or configs changed since {', '.join(changed)}: re-run the affected "
                   "scenarios")
    unknown = [c for c in unique if code_differs(c) is None]
    if unknown:
        out.append(f"cannot compare commit(s) {', '.join(unknown)} with the current code")
    return out


# The vector extensions that change which float32 kernels oneDNN and Eigen run (x86 and Arm names as
# /proc/cpuinfo spells them); the rest of the flags do not change a result.
VECTOR_FLAGS = ("sse4_2", "avx", "fma", "avx2", "avx_vnni", "avx512f", "avx512_vnni", "avx512_bf16",
                "avx512_fp16", "amx_tile", "amx_bf16", "amx_int8", "asimd", "sve", "sve2", "bf16", "i8mm")
# The environment variables that choose oneDNN's kernels in TensorFlow.
ONEDNN_VARS = ("TF_ENABLE_ONEDNN_OPTS", "ONEDNN_MAX_CPU_ISA")


@lru_cache(maxsize=1)
def processor(cpuinfo: str = "/proc/cpuinfo") -> str:
    """The processor and its vector extensions, e.g. 'AMD EPYC [avx2 avx512f avx512_bf16 ...]' (Linux reads
    /proc/cpuinfo; elsewhere the platform's own name, without extensions)."""
    try:
        text = Path(cpuinfo).read_text()
    except OSError:
        return platform.processor() or platform.machine() or "unknown"
    fields = {}
    for line in text.splitlines():
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())  # the first processor's fields
    name = fields.get("model name") or fields.get("CPU part") or platform.machine() or "unknown"
    flags = set((fields.get("flags") or fields.get("Features") or "").split())
    return f"{name} [{' '.join(f for f in VECTOR_FLAGS if f in flags)}]"


def onednn_setting(env: dict | None = None) -> str:
    """TensorFlow's oneDNN settings as the run's environment gives them: 'default' or e.g.
    'TF_ENABLE_ONEDNN_OPTS=0'."""
    env = os.environ if env is None else env
    set_vars = [f"{k}={env[k]}" for k in ONEDNN_VARS if env.get(k)]
    return " ".join(set_vars) or "default"
