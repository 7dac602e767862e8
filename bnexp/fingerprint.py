"""A scenario's code fingerprint: a hash of the code that computes its runs' numbers, beside the config.

A run's id (bnexp.store.run_id) hashes its config; its record also carries the fingerprint of the code that
produced it: the scenario's experiment module, every project module it and the child process that runs it
import (transitively, read from their import statements), and the installed versions of the pinned
frameworks. A record whose fingerprint differs from the current one is stale: `bnexp sweep` and `bnexp run`
redo it, and the report says so. What only judges or draws a scenario (rules, claim texts, figures: the
scenario YAML outside the run's config) is in neither, so changing it re-runs nothing. No TensorFlow here.
"""

from __future__ import annotations

import ast
import hashlib
from functools import lru_cache
from importlib import metadata
from pathlib import Path

from bnexp import PACKAGE_DIR

ROOT = PACKAGE_DIR.parent
PACKAGES = ("bnexp", "experiments")  # project code; everything else is a pinned dependency
ENTRY_POINTS = ("bnexp/toolkit/child.py", "bnexp/toolkit/worker.py")  # run every experiment (fresh or warm)
# The frameworks whose versions decide the numbers (pinned in constraints.txt); absent ones count as absent.
FRAMEWORKS = ("tensorflow", "keras", "tf_keras", "numpy", "jax", "jaxlib", "torch")


def module_file(name: str, root: Path = ROOT) -> Path | None:
    """The file of project module `name` ('bnexp.toolkit.data' -> bnexp/toolkit/data.py), or None."""
    parts = name.split(".")
    if parts[0] not in PACKAGES:
        return None
    base = root.joinpath(*parts)
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def imported_names(path: Path, root: Path = ROOT) -> set[str]:
    """Every module name `path` imports anywhere in it (function-level imports included): `import a.b` gives
    a.b; `from a import b` gives a and a.b (b may be a submodule); relative imports are resolved."""
    package = ".".join(path.relative_to(root).with_suffix("").parts[:-1])
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*up, base] if base else up)
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return names


def closure(starts: list[Path], root: Path = ROOT) -> list[Path]:
    """The project files `starts` import, transitively, with the package __init__ files Python runs on the way."""
    seen: set[Path] = set()
    todo = list(starts)
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        names = imported_names(path, root)
        package = path.relative_to(root).with_suffix("").parts[:-1]
        if package:  # its own package's __init__ files run before it, too
            names.add(".".join(package))
        for name in names:
            parts = name.split(".")
            for i in range(1, len(parts) + 1):  # importing a.b.c runs a/__init__.py and a/b/__init__.py too
                found = module_file(".".join(parts[:i]), root)
                if found and found not in seen:
                    todo.append(found)
    return sorted(seen)


def code_files(scenario: str, root: Path = ROOT) -> list[Path]:
    return closure([root / "experiments" / f"{scenario}.py", *(root / e for e in ENTRY_POINTS)], root)


def framework_versions() -> dict[str, str]:
    out = {}
    for name in FRAMEWORKS:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "absent"
    return out


def compute(scenario: str, root: Path = ROOT, versions: dict[str, str] | None = None) -> str:
    """12 hex digits over the scenario's code files (path and bytes) and the framework versions."""
    digest = hashlib.sha256()
    for path in code_files(scenario, root):
        digest.update(path.relative_to(root).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    for name, version in sorted((framework_versions() if versions is None else versions).items()):
        digest.update(f"{name}=={version}\0".encode())
    return digest.hexdigest()[:12]


@lru_cache(maxsize=None)
def of(scenario: str) -> str:
    """The current fingerprint of `scenario` in this checkout (computed once per process)."""
    return compute(scenario)


def is_current(record: dict | None) -> bool:
    """An ok record whose fingerprint is the current one of its scenario."""
    return bool(record) and record.get("status") == "ok" and record.get("fingerprint") == of(record["scenario"])
