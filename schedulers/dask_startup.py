"""Starting the clusters a Dask target may own: a ``LocalCluster`` or a dask-jobqueue
``SLURMCluster`` (adaptive between its bounds).

Both run their scheduler in this process with ``allowed_failures=0``: a task whose
worker died is reported to the broker (which retries it as a new attempt) instead of
being rerun by Dask behind its back.  Workers declare the resources ``cpus`` and
``memory_mb`` that jobs ask for.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from schedulers.dask_settings import LocalClusterSettings, SlurmClusterSettings

SCHEDULER_OPTIONS: dict[str, Any] = {"allowed_failures": 0, "dashboard_address": ":0"}


def _resources(cpus: int, memory_mb: int) -> str:
    return f"cpus={cpus},memory_mb={memory_mb}"


async def start_local(settings: LocalClusterSettings | None) -> tuple[Any, tuple[int, int]]:
    """A LocalCluster on 127.0.0.1; returns it and the resources of each worker."""
    from distributed import LocalCluster

    s = settings or LocalClusterSettings()
    cpus = max(s.threads_per_worker, len(os.sched_getaffinity(0)) // s.n_workers)
    total_mb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // (1 << 20)
    memory_mb = s.memory_mb or max(1, total_mb // s.n_workers)
    # worker processes talk TCP on loopback; thread workers share this process
    where: dict[str, Any] = {"host": "127.0.0.1", "scheduler_port": 0} if s.processes else {}
    cluster = await LocalCluster(
        n_workers=s.n_workers,
        threads_per_worker=s.threads_per_worker,
        processes=s.processes,
        memory_limit=f"{memory_mb}MiB",
        resources={"cpus": cpus, "memory_mb": memory_mb},
        dashboard_address=":0",
        scheduler_kwargs={"allowed_failures": 0},
        asynchronous=True,
        **where,
    )
    return cluster, (cpus, memory_mb)


async def start_slurm(settings: SlurmClusterSettings) -> Any:
    """A SLURMCluster whose scheduler listens on ``settings.host``; workers come and go
    as Slurm jobs between ``min_workers`` and ``max_workers``."""
    from dask_jobqueue import SLURMCluster

    if settings.slurm_conf:  # sbatch/squeue/scancel run from this process
        os.environ["SLURM_CONF"] = settings.slurm_conf
    extra = ["--resources", _resources(settings.cores, settings.memory_mb)]
    if settings.worker_host:
        extra = ["--host", settings.worker_host, *extra]
    cluster = await SLURMCluster(
        cores=settings.cores,
        processes=1,
        memory=f"{settings.memory_mb}MiB",
        queue=settings.partition,
        account=settings.account,
        walltime=settings.walltime,
        python=settings.python or sys.executable,
        job_script_prologue=settings.job_script_prologue,
        log_directory=settings.log_directory,
        worker_extra_args=extra,
        scheduler_options={
            **SCHEDULER_OPTIONS,
            **({"host": settings.host} if settings.host else {}),
        },
        asynchronous=True,
    )
    cluster.adapt(minimum=settings.min_workers, maximum=settings.max_workers)
    return cluster
