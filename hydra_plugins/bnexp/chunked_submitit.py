"""Submitit launchers that run a chunk of Hydra jobs in one submitit job (local or Slurm).

The submitit plugin submits one job per Hydra job, so on a cluster every run would pay TensorFlow's
start-up. These subclasses group a multirun's jobs into chunks of `worker.chunk` (configs/config.yaml)
and submit one job per chunk; inside it the chunk's Hydra jobs run one after another in one process and
so share that process' warm workers (bnexp.workers). configs/hydra/launcher/submitit_local.yaml and
submitit_slurm.yaml select them under the plugin's own names. Hydra instantiates launchers only from the
hydra_plugins namespace package, hence this module's place.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence

from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, filter_overrides
from omegaconf import OmegaConf

from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf
from hydra_plugins.hydra_submitit_launcher.submitit_launcher import BaseSubmititLauncher, LocalLauncher, SlurmLauncher

log = logging.getLogger(__name__)


class _Chunked(BaseSubmititLauncher):
    def run_chunk(self, jobs: list[tuple]) -> list[JobReturn]:
        """One submitit job: each Hydra job of the chunk, in order, in this process."""
        return [self(*job) for job in jobs]

    def _executor(self):
        """The executor the plugin's launch() builds (same parameters)."""
        import submitit

        init_keys = {"max_num_timeout"}
        executor = submitit.AutoExecutor(cluster=self._EXECUTOR, folder=self.params["submitit_folder"],
                                         **{f"{self._EXECUTOR}_{k}": v for k, v in self.params.items()
                                            if k in init_keys})
        base = set(OmegaConf.structured(BaseQueueConf).keys())
        executor.update_parameters(**{k if k in base else f"{self._EXECUTOR}_{k}": v
                                      for k, v in self.params.items() if k not in init_keys | {"submitit_folder"}})
        return executor

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        assert self.config is not None and len(job_overrides) > 0
        size = int(OmegaConf.select(self.config, "worker.chunk", default=1))
        Path(str(self.config.hydra.sweep.dir)).mkdir(parents=True, exist_ok=True)
        jobs = []
        for idx, overrides in enumerate(job_overrides, start=initial_job_idx):
            log.info(f"\t#{idx} : {' '.join(filter_overrides(overrides))}")
            jobs.append((list(overrides), "hydra.sweep.dir", idx, f"job_id_for_{idx}", Singleton.get_state()))
        chunks = [jobs[i:i + size] for i in range(0, len(jobs), size)]
        log.info(f"Submitit '{self._EXECUTOR}': {len(jobs)} jobs in {len(chunks)} submitit jobs of <= {size}")
        submitted = self._executor().map_array(self.run_chunk, chunks)
        return [ret for job in submitted for ret in job.results()[0]]


class ChunkedLocalLauncher(_Chunked, LocalLauncher):
    pass


class ChunkedSlurmLauncher(_Chunked, SlurmLauncher):
    pass


# The plugin's own configs with these classes as targets, for configs/hydra/launcher/submitit_*.yaml.
from hydra.core.config_store import ConfigStore  # noqa: E402

from hydra_plugins.hydra_submitit_launcher.config import LocalQueueConf, SlurmQueueConf  # noqa: E402

ConfigStore.instance().store(group="hydra/launcher", name="chunked_submitit_local", provider="bnexp",
                             node=LocalQueueConf(_target_=f"{__name__}.ChunkedLocalLauncher"))
ConfigStore.instance().store(group="hydra/launcher", name="chunked_submitit_slurm", provider="bnexp",
                             node=SlurmQueueConf(_target_=f"{__name__}.ChunkedSlurmLauncher"))
