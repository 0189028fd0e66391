"""Settings of a ``slurm`` target: how to reach the cluster and the jobs' defaults."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class SlurmSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: Literal["slurm"] = "slurm"
    # where sbatch/squeue run: here, or on a login node over SSH (host keys verified)
    runner: Literal["local", "ssh"] = "local"
    host: str | None = None
    port: int = Field(default=22, ge=1, le=65535)
    user: str | None = None
    key_file: str | None = None
    known_hosts: str | None = None
    # defaults for jobs that do not name their own
    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    array_batching: bool = True  # tasks arriving together become one job array
    max_array_size: int | None = Field(default=None, ge=1)
    command_timeout_s: float = Field(default=60.0, gt=0)
    use_pyslurm: bool | None = None

    @model_validator(mode="after")
    def _ssh_needs_a_host_and_known_hosts(self) -> SlurmSettings:
        if self.runner == "ssh" and not self.host:
            raise ValueError("runner 'ssh' needs host")
        if self.runner == "ssh" and not self.known_hosts:
            raise ValueError("runner 'ssh' needs known_hosts (host keys are verified)")
        return self
