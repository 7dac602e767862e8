"""README "Adding a scenario", followed to the letter in a temporary copy of the project: the two templates copied
under a new name, listed, run end to end and reported, with nothing else edited."""

from __future__ import annotations

import shutil
import subprocess
import sys

from tests.conftest import ROOT, TINY, bnexp_env

NAME = "throwaway"


def _copy_project(dest):
    for folder in ("bnexp", "experiments", "configs", "hydra_plugins"):
        shutil.copytree(ROOT / folder, dest / folder, ignore=shutil.ignore_patterns("__pycache__"))
    # the README's steps 1 and 2: copy the templates, rename the scenario in the copy
    yaml_text = (ROOT / "configs" / "scenario" / "_template.yaml").read_text()
    assert "name: _template" in yaml_text
    (dest / "configs" / "scenario" / f"{NAME}.yaml").write_text(yaml_text.replace("name: _template", f"name: {NAME}"))
    shutil.copy(ROOT / "experiments" / "_template.py", dest / "experiments" / f"{NAME}.py")


def _bnexp(copy, cache_dir, *args, timeout=600):
    env = {**bnexp_env(cache_dir), "PYTHONPATH": str(copy)}  # the copy's bnexp and experiments, not ROOT's
    proc = subprocess.run([sys.executable, "-m", "bnexp", *args], cwd=copy, capture_output=True, text=True,
                          timeout=timeout, env=env)
    assert proc.returncode == 0, f"bnexp {' '.join(args)} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def test_a_scenario_from_the_templates_lists_runs_and_reports(tmp_path, cache_dir):
    copy = tmp_path / "project"
    _copy_project(copy)
    listing = _bnexp(copy, cache_dir, "list")
    assert f"  {NAME} " in listing and "_template" not in listing and "X01" in listing
    results = copy / "results" / "local"
    _bnexp(copy, cache_dir, "run", "-m", *TINY, "train.batches=4,8", f"scenario={NAME}",
           f"paths.results_dir={results}")
    runs = sorted((results / "runs" / NAME).glob("*/metrics.json"))
    assert len(runs) == 2
    _bnexp(copy, cache_dir, "report", f"paths.results_dir={results}", "sweep=all")
    report = (results / "report.md").read_text()
    assert f'<a id="scenario-{NAME}"></a>' in report and "### X01: Moving statistics cost" in report
    assert "X01/gap" in report and "train.batches=4" in report
    assert (results / "figures" / "template_gap.png").stat().st_size > 1000
    summary = (results / "tables" / f"{NAME}_summary.csv").read_text().splitlines()
    assert summary[0].startswith("train.batches,seeds,moving_gap") and len(summary) == 3
