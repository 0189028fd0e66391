"""Turning a validated TES request into the document the store keeps.

``backend_parameters`` keys are case-insensitive (TES).  Supported keys are kept,
lower-cased; unsupported keys are dropped with a warning shown in the task's
``system_logs`` -- or, with ``backend_parameters_strict``, the task is refused
with a 400 naming the key.
"""

from __future__ import annotations

from typing import Any

from bridge.tes import InvalidTask, TaskRequest
from spack_envs.requests import PARAMETERS as ENV_PARAMETERS
from spack_envs.requests import BadEnvRequest, request_from_parameters
from spack_envs.targets import UnknownTarget

SUPPORTED_BACKEND_PARAMETERS: dict[str, str] = {
    "target": "name of the target to run on (skips routing)",
    "partition": "Slurm partition",
    "account": "Slurm account",
    "qos": "Slurm quality of service",
    "constraint": "Slurm constraint, e.g. a CPU feature",
    "gpus": "number of GPUs",
    "wall_time": "wall-time limit in seconds",
    "microarchitecture": "minimum CPU microarchitecture (archspec name)",
    "container_runtime": "none, docker, podman or charliecloud",
    "max_retries": "retries after a system error or preemption",
    **ENV_PARAMETERS,  # software built for the placement's CPU (spack_envs)
}


def task_document(request: TaskRequest) -> dict[str, Any]:
    doc = request.model_dump(exclude_none=True)
    resources = doc.get("resources") or {}
    params = resources.get("backend_parameters")
    if params is None:
        return doc
    strict = bool(resources.get("backend_parameters_strict"))
    kept: dict[str, str] = {}
    warnings: list[str] = []
    for key, value in params.items():
        norm = key.lower()
        if norm in SUPPORTED_BACKEND_PARAMETERS:
            kept[norm] = value
        elif strict:
            raise InvalidTask(
                [
                    {
                        "field": f"resources.backend_parameters.{key}",
                        "message": "unsupported backend parameter (backend_parameters_strict "
                        f"is true); supported: {', '.join(SUPPORTED_BACKEND_PARAMETERS)}",
                    }
                ]
            )
        else:
            warnings.append(f"backend parameter {key!r} is not supported and was ignored")
    for key, value in kept.items():
        _check_parameter(key, value)
    _check_environment(kept)
    resources["backend_parameters"] = kept
    if warnings:
        doc["_warnings"] = warnings
    return doc


def _check_parameter(key: str, value: str) -> None:
    if key in ("gpus", "wall_time", "max_retries"):
        try:
            number = int(value)
        except ValueError:
            number = -1
        if number < 0:
            raise InvalidTask(
                [
                    {
                        "field": f"resources.backend_parameters.{key}",
                        "message": f"must be a non-negative integer, got {value!r}",
                    }
                ]
            )


def _check_environment(params: dict[str, str]) -> None:
    """A malformed software request is the submitter's error (400), not a failed task."""
    try:
        request = request_from_parameters(params, placement_target="x86_64")
        if request is not None and params.get("bridge.arch"):
            from spack_envs.targets import target

            target(request.target)
    except (BadEnvRequest, UnknownTarget) as err:
        name = getattr(err, "field", "bridge.arch")
        raise InvalidTask(
            [{"field": f"resources.backend_parameters.{name}", "message": str(err)}]
        ) from err
