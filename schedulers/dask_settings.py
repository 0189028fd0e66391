"""Settings of a Dask target: which cluster to use (light: pydantic only).

A target uses exactly one of: a running scheduler (``address``), a ``LocalCluster``
started in the broker's process (``local``, also the default when nothing is given),
or a dask-jobqueue ``SLURMCluster`` whose workers are Slurm jobs (``slurm``).
Jobs ask workers for the resources ``cpus`` and ``memory_mb``; the clusters started
here declare them, and workers of a scheduler given by ``address`` must be started
with ``--resources "cpus=N,memory_mb=M"`` (otherwise jobs wait for ever).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class LocalClusterSettings(BaseModel):
    """A ``distributed.LocalCluster`` in the broker's process (a laptop, a test)."""

    model_config = ConfigDict(extra="forbid")

    n_workers: int = Field(default=2, ge=1)
    threads_per_worker: int = Field(default=1, ge=1)
    processes: bool = True
    memory_mb: int | None = Field(default=None, ge=1)  # per worker; default: share of the host


class SlurmClusterSettings(BaseModel):
    """Workers started as Slurm jobs by dask-jobqueue, scaled between two bounds."""

    model_config = ConfigDict(extra="forbid")

    min_workers: int = Field(default=0, ge=0)
    max_workers: int = Field(default=1, ge=1)
    partition: str | None = None
    account: str | None = None
    walltime: str = "01:00:00"
    cores: int = Field(default=1, ge=1)  # per worker job
    memory_mb: int = Field(default=1024, ge=1)  # per worker job
    host: str | None = None  # where the scheduler listens (workers must reach it)
    worker_host: str | None = None  # address workers bind to (``--host``)
    python: str | None = None  # the workers' interpreter; default: the broker's
    job_script_prologue: list[str] = Field(default_factory=list)
    slurm_conf: str | None = None  # exported as SLURM_CONF for sbatch/squeue/scancel
    log_directory: str | None = None  # the worker jobs' output; default: Slurm's (cwd)

    @model_validator(mode="after")
    def _bounds(self) -> SlurmClusterSettings:
        if self.min_workers > self.max_workers:
            raise ValueError("min_workers must not exceed max_workers")
        return self


class DaskSettings(BaseModel):
    """One Dask target."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["dask"] = "dask"
    address: str | None = None  # e.g. tcp://10.0.0.5:8786
    local: LocalClusterSettings | None = None
    slurm: SlurmClusterSettings | None = None
    # how long one call to the scheduler may take before it counts as not answering
    timeout_s: float = Field(default=10.0, gt=0)
    # A scheduler that has not answered for this long is taken as gone: its jobs are
    # reported LOST (its workers stop their jobs when they lose it) and retried.
    lost_after_s: float = Field(default=60.0, gt=0)
    # SIGTERM, then SIGKILL after this long, when a job is cancelled
    kill_grace_s: float = Field(default=10.0, ge=0)

    @model_validator(mode="after")
    def _one_cluster(self) -> DaskSettings:
        chosen = [n for n in ("address", "local", "slurm") if getattr(self, n) is not None]
        if len(chosen) > 1:
            raise ValueError(f"give one of address, local, slurm (got {', '.join(chosen)})")
        return self

    @property
    def mode(self) -> Literal["address", "local", "slurm"]:
        if self.address is not None:
            return "address"
        return "slurm" if self.slurm is not None else "local"
