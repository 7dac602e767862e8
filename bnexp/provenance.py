"""Where a record's numbers came from: the commit of the checkout that ran it, whether its tree was clean, and
the processor and kernel settings that rounded its floats.

The report uses this to say, at its top, which scenarios' records are stale (computed by other code than the
checkout's, by their fingerprints: bnexp.fingerprint) or come from a dirty tree, per scenario which commits
and fingerprints its records come from, and, in its environment section, which processors ran them. No
TensorFlow here.

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

OUTPUTS = "results"  # what runs, sweeps and reports write: not code


def _git(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["git", *args], cwd=PACKAGE_DIR.parent, capture_output=True, text=True, timeout=20)


@lru_cache(maxsize=1)
def checkout() -> tuple[str, bool]:
    """(short commit of the bnexp checkout or 'unknown', whether its tracked files outside results/ are
    unchanged). results/ holds what runs and reports write (a sweep's manifest, the committed reference): a
    sweep writing there does not make its own records dirty, and an interrupted one resumes."""
    try:
        head = _git("rev-parse", "--short=12", "HEAD")
        if head.returncode != 0:
            return "unknown", False
        dirty = _git("status", "--porcelain", "--untracked-files=no", "--", ".", f":(exclude){OUTPUTS}").stdout.strip()
        return head.stdout.strip(), not dirty
    except (OSError, subprocess.TimeoutExpired):
        return "unknown", False


def git_commit() -> str:
    """The commit as records store it: 'abc123def456', with '+dirty' when the tree had uncommitted changes."""
    commit, clean = checkout()
    return commit if clean or commit == "unknown" else f"{commit}+dirty"


def by_scenario(records: list[dict]) -> list[dict]:
    """Per scenario: its number of records, the commits and fingerprints they come from, and whether every one
    is current (its fingerprint is the scenario's current one: bnexp.fingerprint)."""
    from bnexp import fingerprint

    groups: dict[str, list[dict]] = {}
    for rec in records:
        groups.setdefault(rec["scenario"], []).append(rec)
    out = []
    for scenario, recs in sorted(groups.items()):
        prints = sorted({str(r.get("fingerprint") or "none") for r in recs})
        out.append({"scenario": scenario, "runs": len(recs),
                    "commits": sorted({str(r.get("git_commit") or "unknown") for r in recs}),
                    "fingerprints": prints, "current": prints == [fingerprint.of(scenario)]})
    return out


def warnings(records: list[dict]) -> list[str]:
    """The provenance problems of a report's records, one sentence each (none: every scenario current, no
    record from uncommitted changes)."""
    out = []
    stale = [s["scenario"] for s in by_scenario(records) if not s["current"]]
    if stale:
        out.append(f"stale scenarios: {', '.join(stale)} (their records were computed by other code than this "
                   f"checkout's: `make sweep` redoes exactly those runs)")
    dirty = sorted({str(r.get("git_commit")) for r in records if str(r.get("git_commit")).endswith("+dirty")})
    if dirty:
        out.append(f"records from a tree with uncommitted changes ({', '.join(dirty)})")
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
