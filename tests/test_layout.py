"""The process boundary: the parent side (CLI, sweep, runner, store, config checks, report, verdicts,
figures) never imports TensorFlow, Keras or tf-keras, directly or through another module."""

from __future__ import annotations

import subprocess
import sys

from conftest import ROOT

FRAMEWORKS = ("tensorflow", "keras", "tf_keras")
PARENT_SIDE = ("bnexp.cli", "bnexp.sweep", "bnexp.runner", "bnexp.store", "bnexp.config_check", "bnexp.report",
               "bnexp.verdicts", "bnexp.figures", "bnexp.names", "bnexp.workers", "bnexp.manifest",
               "bnexp.provenance", "bnexp.atomic", "bnexp.network", "bnexp.backends", "bnexp.doctor",
               "bnexp.compare")


def _imported_frameworks(code: str) -> str:
    probe = f"{code}\nimport sys\nprint('FRAMEWORKS=' + ','.join(m for m in {FRAMEWORKS!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return out.stdout.rsplit("FRAMEWORKS=", 1)[1].strip()


def test_parent_side_modules_import_no_framework():
    assert _imported_frameworks("\n".join(f"import {m}" for m in PARENT_SIDE)) == ""


def test_list_and_report_run_without_a_framework(tmp_path, cache_dir):
    code = ("import sys, runpy\n"
            "sys.argv = ['bnexp', 'list']\n"
            "runpy.run_module('bnexp', run_name='__main__')\n")
    assert _imported_frameworks(code) == ""
    results = tmp_path / "results"
    (results / "runs").mkdir(parents=True)
    code = ("import sys\nfrom bnexp import cli\n"
            f"cli.main(['report', 'paths.results_dir={results}'])\n")
    assert _imported_frameworks(code) == ""
