"""Settings of an AWS Batch target (light: pydantic only, imported by the broker's config).

A target names the Batch endpoint (``region``, ``endpoint_url`` for a private or test
endpoint), the job queue for on-demand work and optionally one for spot work (a task
that says it is preemptible goes there), the IAM role the jobs run with, and the agent
image every job starts from.  The job's container is the agent image; it runs the
task's executors through the node's Docker socket (``docker_socket``), with
``scratch_dir`` bind-mounted at the same path so that the paths the agent hands to
``docker run -v`` mean the same thing on the node (see ``docs/aws-batch.md``).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

# EC2 instance families -> archspec microarchitecture names (the CPU generation AWS
# documents for each family; "optimal" picks from C4/M4/R4 and newer, so Haswell is
# the most a task can assume there).  A target's ``instance_microarchitectures``
# adds to or overrides this table.
INSTANCE_MICROARCHITECTURES: dict[str, str] = {
    "optimal": "haswell",
    "c4": "haswell",
    "m4": "haswell",
    "r4": "broadwell",
    "c5": "skylake_avx512",
    "m5": "skylake_avx512",
    "r5": "skylake_avx512",
    "c5a": "zen2",
    "m5a": "zen",
    "c6i": "icelake",
    "m6i": "icelake",
    "r6i": "icelake",
    "c6a": "zen3",
    "m6a": "zen3",
    "c7i": "sapphirerapids",
    "m7i": "sapphirerapids",
    "c7a": "zen4",
    "m7a": "zen4",
    "c6g": "neoverse_n1",
    "m6g": "neoverse_n1",
    "c7g": "neoverse_v1",
    "m7g": "neoverse_v1",
}


class AwsBatchSettings(BaseModel):
    """One AWS Batch target's own settings (``[targets.aws_batch]`` in ``bridge.toml``)."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["aws_batch"] = "aws_batch"
    region: str = "us-east-1"
    endpoint_url: str | None = None
    job_queue: str  # on-demand work
    spot_job_queue: str | None = None  # preemptible work, when given
    job_role_arn: str | None = None
    # The image the jobs run (the agent); ``bridge targets bootstrap`` builds it and,
    # when ``registry`` is set, pushes it as ``<registry>/<agent_image>``.
    agent_image: str = "bridge-agent:latest"
    registry: str | None = None
    docker_socket: str | None = "/var/run/docker.sock"
    scratch_dir: str = "/var/tmp/bridge"
    # Node paths bind-mounted into the job at the same path; a job whose ``workdir``
    # lies under one runs there and writes its stdout/stderr files there.
    node_mounts: list[str] = Field(default_factory=list)
    default_memory_mb: int = 2048
    instance_microarchitectures: dict[str, str] = Field(default_factory=dict)
    microarchitecture: str | None = None  # states it outright (wins over the table)
    max_array_size: int = Field(default=10_000, ge=2, le=10_000)
    # Budget for one array job's element list in its environment (Batch caps the
    # size of a SubmitJob request); a larger batch becomes several array jobs.
    max_array_env_bytes: int = Field(default=20_000, ge=1_000)
    job_definition_prefix: str = "bridge"
    typical_job_s: float = 300.0  # for the wait estimate when the queue is full
    startup_s: float = 0.0  # instance start-up time added to every wait estimate

    @property
    def image(self) -> str:
        """The agent image as jobs refer to it (with the registry, when there is one)."""
        return (
            f"{self.registry.rstrip('/')}/{self.agent_image}" if self.registry else self.agent_image
        )

    def microarchitecture_table(self) -> dict[str, str]:
        return {**INSTANCE_MICROARCHITECTURES, **self.instance_microarchitectures}
