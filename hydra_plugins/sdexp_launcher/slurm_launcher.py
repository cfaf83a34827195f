"""``hydra/launcher=slurm`` (and ``slurm_cpu``, ``slurm_ddp``, ``slurm_shared``): a sweep's jobs
on SLURM, every one waited for.

The class Hydra discovers: Hydra instantiates launchers only from the ``hydra_plugins``
package, and imports every module of it at every start, so it is thin and hands its work to
``sdexp.sweep.launchers.SlurmJobs`` (hydra-submitit-launcher's launcher, extended), imported when a
sweep starts. Its options are hydra-submitit-launcher's (``submitit_slurm``).
"""

from collections.abc import Sequence
from typing import Any

from hydra.core.utils import JobReturn
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig


class SlurmLauncher(Launcher):
    def __init__(self, **options: Any) -> None:
        """``options``: those of hydra-submitit-launcher's ``submitit_slurm``."""
        from sdexp.sweep.launchers import SlurmJobs

        self.jobs = SlurmJobs(**options)

    def setup(
        self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig
    ) -> None:
        self.jobs.setup(hydra_context=hydra_context, task_function=task_function, config=config)

    def check_request(self) -> None:
        """ConfigError if no node of the partition can run a job as configured."""
        self.jobs.check_request()

    def launch(
        self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int
    ) -> Sequence[JobReturn]:
        return self.jobs.launch(job_overrides, initial_job_idx)
