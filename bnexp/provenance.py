"""Where a record's numbers came from: the commit of the checkout that ran it and whether its tree was clean.

The report uses this to say, at its top, when its records come from more than one commit, from a dirty
tree, or from code (experiments, toolkit, configs) that differs from the current head. No TensorFlow here.
"""

from __future__ import annotations

import subprocess
from functools import lru_cache

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
