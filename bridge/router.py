"""Placement: which target runs a task, and why -- in words.

:func:`route` is pure: it takes the task's request, what each target reported about
itself, and who submitted it, and returns a :class:`Placement`.  Hard rules filter
(a named target, allowed users, health, CPUs, memory, GPUs, CPU microarchitecture);
the remaining targets are scored by estimated start time, then cost.  The reason
names the winner, the figure that decided, and why every other target lost.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from bridge.config import TargetConfig
from bridge.requirements import Requirements
from schedulers.base import TargetInfo


@dataclass(frozen=True)
class Candidate:
    config: TargetConfig
    info: TargetInfo | None


@dataclass(frozen=True)
class Request:
    cpus: int = 1
    ram_gb: float | None = None
    gpus: int = 0
    target: str | None = None
    microarchitecture: str | None = None
    preemptible: bool = False
    owner: str = "anonymous"

    @classmethod
    def from_requirements(cls, req: Requirements, owner: str) -> Request:
        return cls(
            cpus=req.cpus,
            ram_gb=req.ram_gb,
            gpus=req.gpus,
            target=req.target,
            microarchitecture=req.arch,
            preemptible=req.preemptible,
            owner=owner,
        )


@dataclass(frozen=True)
class Placement:
    target: str | None
    reason: str
    rejected: dict[str, str] = field(default_factory=dict)


Rule = Callable[[Request, Candidate], str | None]  # returns why the target is unfit


def _named(req: Request, cand: Candidate) -> str | None:
    if req.target and req.target != cand.config.name:
        return f"the task asks for target {req.target!r}"
    return None


def _allowed(req: Request, cand: Candidate) -> str | None:
    users = cand.config.allowed_users
    if users is not None and req.owner not in users:
        return f"user {req.owner!r} may not use it"
    return None


def _healthy(_: Request, cand: Candidate) -> str | None:
    if cand.info is not None and not cand.info.healthy:
        return f"unhealthy ({cand.info.detail or 'probe failed'})"
    return None


def _cpus(req: Request, cand: Candidate) -> str | None:
    limit = cand.config.max_cpus or (cand.info.cpus if cand.info else None)
    if limit is not None and req.cpus > limit:
        return f"{req.cpus} CPUs requested, it has {limit}"
    return None


def _memory(req: Request, cand: Candidate) -> str | None:
    if req.ram_gb is None:
        return None
    limit = cand.config.max_ram_gb
    if limit is None and cand.info and cand.info.memory_mb:
        limit = cand.info.memory_mb / 1024
    if limit is not None and req.ram_gb > limit:
        return f"{req.ram_gb:g} GB RAM requested, it has {limit:.1f} GB"
    return None


def _gpus(req: Request, cand: Candidate) -> str | None:
    if req.gpus and cand.config.kind == "local":
        return f"{req.gpus} GPUs requested, the local target has none configured"
    return None


def _microarchitecture(req: Request, cand: Candidate) -> str | None:
    if not req.microarchitecture:
        return None
    host = cand.info.microarchitecture if cand.info else None
    if host is None:
        return f"its CPU microarchitecture is unknown (task needs {req.microarchitecture})"
    import archspec.cpu

    targets = archspec.cpu.TARGETS
    if req.microarchitecture not in targets:
        return f"unknown microarchitecture {req.microarchitecture!r}"
    if host not in targets or not targets[host] >= targets[req.microarchitecture]:
        return f"its CPUs are {host}, which cannot run {req.microarchitecture} code"
    return None


RULES: tuple[Rule, ...] = (_named, _allowed, _healthy, _cpus, _memory, _gpus, _microarchitecture)


def route(req: Request, candidates: Sequence[Candidate]) -> Placement:
    rejected: dict[str, str] = {}
    fit: list[Candidate] = []
    for cand in candidates:
        why = next((w for rule in RULES if (w := rule(req, cand)) is not None), None)
        if why is None:
            fit.append(cand)
        else:
            rejected[cand.config.name] = why
    if not fit:
        if not candidates:
            return Placement(None, "no targets are configured")
        detail = "; ".join(f"{name}: {why}" for name, why in rejected.items())
        return Placement(None, f"no target can run this task ({detail})", rejected)

    def score(c: Candidate) -> tuple[float, float, str]:
        wait = c.info.queue_wait_s if c.info else 0.0
        return (wait, c.config.cost_per_cpu_hour * req.cpus, c.config.name)

    fit.sort(key=score)
    best = fit[0]
    wait = best.info.queue_wait_s if best.info else 0.0
    parts = [f"{best.config.name} ({best.config.kind})"]
    if req.target:
        parts.append("named by the task")
    elif len(fit) == 1:
        parts.append("the only target that fits")
    else:
        runner_up = fit[1]
        rwait = runner_up.info.queue_wait_s if runner_up.info else 0.0
        if wait < rwait:
            parts.append(
                f"estimated start in {wait:.0f} s vs {rwait:.0f} s on {runner_up.config.name}"
            )
        else:
            parts.append(f"cheapest of {len(fit)} fitting targets")
    parts.append(f"{req.cpus} CPU" + ("s" if req.cpus != 1 else ""))
    if best.info and best.info.microarchitecture:
        parts.append(f"CPUs {best.info.microarchitecture}")
    reason = ", ".join(parts)
    if rejected:
        reason += "; not " + "; not ".join(f"{n}: {w}" for n, w in rejected.items())
    return Placement(best.config.name, reason, rejected)
