"""Turning a validated TES request into the document the store keeps.

What the task asks for is read once, here, into a typed
:class:`~bridge.requirements.Requirements` kept in the document under
``_requirements``; unsupported ``backend_parameters`` are dropped with a warning shown
in the task's ``system_logs`` (``_warnings``), or refused with a 400 under
``backend_parameters_strict``.  Keys starting with ``_`` never reach a client.
"""

from __future__ import annotations

from typing import Any

from bridge.requirements import read_requirements
from bridge.tes import InvalidTask, TaskRequest
from spack_envs.requests import BadEnvRequest, request_from_parameters
from spack_envs.targets import UnknownTarget


def task_document(request: TaskRequest) -> dict[str, Any]:
    doc = request.model_dump(exclude_none=True)
    requirements, kept, warnings = read_requirements(doc)
    _check_environment(kept)
    resources = doc.get("resources")
    if resources is not None and resources.get("backend_parameters") is not None:
        resources["backend_parameters"] = kept
    doc["_requirements"] = requirements.to_json()
    if warnings:
        doc["_warnings"] = warnings
    return doc


def _check_environment(params: dict[str, str]) -> None:
    """A malformed software request is the submitter's error (400), not a failed task."""
    try:
        request_from_parameters(params, placement_target="x86_64")
    except (BadEnvRequest, UnknownTarget) as err:
        name = getattr(err, "field", "bridge.arch")
        raise InvalidTask(
            [{"field": f"resources.backend_parameters.{name}", "message": str(err)}]
        ) from err
