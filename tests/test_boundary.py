"""The process boundary seen from the child side (issue #30 item 3): bnexp.toolkit and experiments/ import, from
the rest of bnexp, only the small modules both sides share; never the parent side (cli, sweep, report, doctor...).
"""

from __future__ import annotations

from bnexp import fingerprint
from tests.conftest import ROOT

# Plain-Python leaves that both sides import (no TensorFlow, no parent-side module below them).
SHARED = {"bnexp", "bnexp.atomic", "bnexp.errors", "bnexp.names", "bnexp.network", "bnexp.launcher",
          "bnexp.model_safety"}
# Known upward imports still to remove (issue #30): diagnose takes shape_fits from the doctor's parent side.
KNOWN = {("bnexp/toolkit/diagnose.py", "bnexp.doctor")}


def _upward_imports() -> set[tuple[str, str]]:
    out = set()
    files = [*(ROOT / "bnexp" / "toolkit").glob("*.py"), *(ROOT / "experiments").glob("*.py")]
    for path in files:
        for name in fingerprint.imported_names(path, ROOT):
            if not name.startswith("bnexp") or name.startswith("bnexp.toolkit"):
                continue
            module = next((m for m in (name, name.rsplit(".", 1)[0]) if fingerprint.module_file(m, ROOT)), name)
            if module not in SHARED:
                out.add((path.relative_to(ROOT).as_posix(), module))
    return out


def test_the_child_side_imports_only_the_shared_modules_of_bnexp():
    # a new upward import fails here; removing a known one fails too, so that KNOWN shrinks with it
    assert _upward_imports() == KNOWN
