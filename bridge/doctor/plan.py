"""Which checks a target gets, in the order to read them."""

from __future__ import annotations

from bridge.doctor import agent, cloud, node, objectstore, remote
from bridge.doctor.context import DoctorContext
from bridge.doctor.core import Check, CheckSkipped

MODULE_MISSING = "backend module installed"


def checks_for(kind: str) -> list[Check]:
    if not cloud.backend_module_present(kind):
        return [Check(MODULE_MISSING, _module_missing(kind), "")]
    # the object store before the work directory: with an s3:// work directory a
    # credentials problem is reported once, on the step that names it
    if kind == "local":
        return [agent.CHECKS[0], *objectstore.CHECKS, agent.CHECKS[1], *node.CHECKS]
    if kind == "slurm":
        return [*remote.CHECKS, agent.CHECKS[0], *objectstore.CHECKS, agent.CHECKS[1], *node.CHECKS]
    # cloud kinds: no login node to run the agent from; the queue and the store
    return [*cloud.CHECKS.get(kind, []), *objectstore.CHECKS, agent.CHECKS[1]]


def _module_missing(kind: str):  # type: ignore[no-untyped-def]
    async def run(_: DoctorContext) -> str:
        raise CheckSkipped(
            f"the {kind} backend is not part of this installation "
            f"({cloud.MODULES[kind]} is absent): its target is not checked"
        )

    return run
