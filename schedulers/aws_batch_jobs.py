"""Pure shaping of AWS Batch requests: job names, job definitions and their content key,
the argv a job runs, and what a probe learns from queues and compute environments."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from schedulers.aws_batch_parse import array_environment, microarchitecture
from schedulers.aws_batch_settings import AwsBatchSettings
from schedulers.base import JobSpec, Resources

# Runs the job's argv in its workdir with its output files (used when the workdir is
# on a node mount); values are positional arguments, never part of the script.
IN_WORKDIR = 'cd "$1" || exit 1; out=$2; err=$3; shift 3; exec "$@" >>"$out" 2>>"$err"'


def job_name(name: str) -> str:
    """A Batch-valid job name (letters, digits, ``-``, ``_``; 128 at most)."""
    return re.sub(r"[^A-Za-z0-9_-]", "-", name)[:128]


def container_properties(s: AwsBatchSettings, res: Resources) -> dict[str, Any]:
    """The job definition's container: the agent image, the shape, the node mounts
    (scratch, Docker socket) at the same paths inside."""
    requirements = [
        {"type": "VCPU", "value": str(max(1, res.cpus))},
        {"type": "MEMORY", "value": str(res.memory_mb or s.default_memory_mb)},
    ]
    if res.gpus:
        requirements.append({"type": "GPU", "value": str(res.gpus)})
    paths = [s.scratch_dir, *s.node_mounts, *([s.docker_socket] if s.docker_socket else [])]
    mounts = {f"mount{i}": p for i, p in enumerate(dict.fromkeys(paths))}
    env = [{"name": "BRIDGE_SCRATCH_DIR", "value": s.scratch_dir}]
    if s.docker_socket:
        env.append({"name": "DOCKER_HOST", "value": f"unix://{s.docker_socket}"})
    container: dict[str, Any] = {
        "image": s.image,
        "command": ["true"],
        "resourceRequirements": requirements,
        "volumes": [{"name": k, "host": {"sourcePath": p}} for k, p in mounts.items()],
        "mountPoints": [
            {"sourceVolume": k, "containerPath": p, "readOnly": False} for k, p in mounts.items()
        ],
        "environment": env,
    }
    if s.job_role_arn:
        container["jobRoleArn"] = s.job_role_arn
    return container


def content_key(container: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(container, sort_keys=True).encode()).hexdigest()[:24]


def node_argv(spec: JobSpec, node_mounts: Sequence[str]) -> list[str]:
    """The argv, run in its workdir when that directory is on a node mount."""
    mounts = [m.rstrip("/") + "/" for m in node_mounts]
    if not any((spec.workdir.rstrip("/") + "/").startswith(m) for m in mounts):
        return list(spec.argv)
    out = spec.stdout_path or "/dev/stdout"
    err = spec.stderr_path or "/dev/stderr"
    return ["sh", "-c", IN_WORKDIR, "bridge-job", spec.workdir, out, err, *spec.argv]


@dataclass(frozen=True)
class Capacity:
    problems: list[str]
    max_vcpus: int
    microarchitecture: str | None
    compute_environments: list[str]


def queue_capacity(
    wanted: Sequence[str],
    queues: Sequence[Mapping[str, Any]],
    environments: Sequence[Mapping[str, Any]] | None,
    s: AwsBatchSettings,
) -> Capacity:
    """What ``describe_job_queues`` (and, when given, ``describe_compute_environments``)
    say: problems, max vCPUs, the instance types' microarchitecture."""
    found = {q["jobQueueName"] for q in queues}
    problems = [f"queue {q} not found" for q in wanted if q not in found]
    problems += [
        f"queue {q['jobQueueName']} is {q.get('state')}/{q.get('status')}"
        for q in queues
        if q.get("state") != "ENABLED" or q.get("status") != "VALID"
    ]
    names = [e["computeEnvironment"] for q in queues for e in q.get("computeEnvironmentOrder", [])]
    good = [
        e for e in environments or [] if e.get("state") == "ENABLED" and e.get("status") == "VALID"
    ]
    if environments is not None and not good:
        problems.append("no enabled and valid compute environment")
    resources = [e.get("computeResources") or {} for e in good]
    types = [t for r in resources for t in r.get("instanceTypes", [])]
    arch = s.microarchitecture or microarchitecture(types, s.microarchitecture_table())
    max_vcpus = sum(int(r.get("maxvCpus", 0)) for r in resources)
    return Capacity(problems, max_vcpus, arch, list(dict.fromkeys(names)))


def plan_arrays(
    argvs: Sequence[Sequence[str]], names: Sequence[str], max_size: int, max_env_bytes: int
) -> list[list[int]]:
    """Positions of like jobs split into arrays within the size and environment budgets;
    a job whose argv cannot be one line of the element list is a chunk of its own."""
    chunks: list[list[int]] = []
    current: list[int] = []
    for i in range(len(argvs)):
        try:
            array_environment([argvs[i]], [names[i]])
        except ValueError:
            chunks.append([i])
            continue
        trial = [*current, i]
        if len(trial) > max_size or (
            len(trial) > 1
            and array_environment([argvs[k] for k in trial], [names[k] for k in trial]).size_bytes
            > max_env_bytes
        ):
            chunks.append(current)
            trial = [i]
        current = trial
    return [*chunks, current] if current else chunks
