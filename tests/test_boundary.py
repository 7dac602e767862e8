"""The process boundary seen from the child side (issue #30 item 3): bnexp.toolkit and experiments/ import, from
the rest of bnexp, only the small modules both sides share; never the parent side (cli, sweep, report, doctor...).
"""

from __future__ import annotations

from bnexp import fingerprint
from tests.conftest import ROOT

# Plain-Python leaves that both sides import (no TensorFlow, no parent-side module below them).
SHARED = {"bnexp", "bnexp.atomic", "bnexp.errors", "bnexp.names", "bnexp.network", "bnexp.launcher",
          "bnexp.model_safety", "bnexp.shapes"}


def _upward_imports(files) -> set[tuple[str, str]]:
    out = set()
    for path in files:
        for name in fingerprint.imported_names(path, ROOT):
            if not name.startswith("bnexp") or name.startswith("bnexp.toolkit"):
                continue
            module = next((m for m in (name, name.rsplit(".", 1)[0]) if fingerprint.module_file(m, ROOT)), name)
            if module not in SHARED:
                out.add((path.relative_to(ROOT).as_posix(), module))
    return out


def test_the_child_side_imports_only_the_shared_modules_of_bnexp():
    files = [*(ROOT / "bnexp" / "toolkit").glob("*.py"), *(ROOT / "experiments").glob("*.py")]
    assert _upward_imports(files) == set()


def test_the_shared_modules_import_only_each_other():
    # otherwise a parent-side module would reach the child through a shared one
    assert _upward_imports([fingerprint.module_file(m, ROOT) for m in SHARED]) == set()
