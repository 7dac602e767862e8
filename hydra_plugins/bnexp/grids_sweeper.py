"""A Hydra sweeper that launches a list of jobs written by `bnexp sweep`: every grid of a sweep in one
multirun (`hydra/sweeper=bnexp_grids hydra.sweeper.jobs_file=F`).

Hydra's basic sweeper takes one cartesian product; a bnexp sweep is several, one grid per scenario (and
`<scenario>@<label>` further grids). Launching them as one multirun, rather than one per grid, lets each
launcher process keep its warm workers (bnexp.workers) from one scenario to the next; bnexp.sweep orders
the jobs so that runs which share a kind of worker come together. The jobs file (JSON) is
`{"jobs": [{"overrides": [...], "scenario": ..., "run_id": ..., "results_dir": ...}, ...]}`; the sweep
has composed and validated every job before writing it.
"""

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, List, Optional

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.config_store import ConfigStore
from omegaconf import OmegaConf

log = logging.getLogger(__name__)


@dataclass
class GridsSweeperConf:
    _target_: str = f"{__name__}.GridsSweeper"
    jobs_file: Optional[str] = None


ConfigStore.instance().store(group="hydra/sweeper", name="bnexp_grids", node=GridsSweeperConf, provider="bnexp")


def read_jobs(path) -> List[dict]:
    return json.loads(Path(path).read_text())["jobs"]


class GridsSweeper(BasicSweeper):
    def __init__(self, jobs_file: Optional[str] = None) -> None:
        super().__init__(max_batch_size=None)
        self.jobs_file = jobs_file

    def sweep(self, arguments: List[str]) -> Any:
        if not self.jobs_file:
            raise ValueError("hydra/sweeper=bnexp_grids needs hydra.sweeper.jobs_file=FILE (written by bnexp sweep)")
        batch = [[*job["overrides"], *arguments] for job in read_jobs(self.jobs_file)]
        sweep_dir = Path(self.config.hydra.sweep.dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, sweep_dir / "multirun.yaml")
        log.info(f"bnexp_grids: {len(batch)} jobs from {self.jobs_file}")
        results = self.launcher.launch(batch, initial_job_idx=0)  # one batch: the launcher's processes stay
        for r in results:
            _ = r.return_value  # a job that raised re-raises here, as in the basic sweeper
        return [results]
