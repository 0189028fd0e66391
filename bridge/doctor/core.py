"""The doctor's building blocks: a check, its result, and running checks in order.

A check is a small object with a name, an async ``run`` that returns a one-line
detail on success, and a fix text for when it fails.  Checks run in the order a human
would debug a target (network before scheduler, scheduler before a probe job), and a
check whose prerequisite failed is skipped rather than failing again with a
misleading second error: the first ✘ is the one to fix.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from bridge.doctor.context import DoctorContext

Outcome = Literal["ok", "fail", "skip"]


class CheckFailed(Exception):
    """A check found a problem; ``fix`` overrides the check's generic fix text."""

    def __init__(self, detail: str, fix: str | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.fix = fix


class CheckSkipped(Exception):
    """The check does not apply to this target; the message says why."""


@dataclass(frozen=True)
class Check:
    """One step: ``run`` returns a detail line or raises CheckFailed/CheckSkipped."""

    name: str
    run: Callable[[DoctorContext], Awaitable[str]]
    fix: str  # may use {target}, {host}, {port}, {known_hosts}, {work_url}, {agent}
    requires: tuple[str, ...] = ()
    timeout_s: float = 45.0


@dataclass(frozen=True)
class CheckResult:
    name: str
    outcome: Outcome
    seconds: float
    detail: str
    fix: str | None = None

    @property
    def ok(self) -> bool:
        return self.outcome != "fail"

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "outcome": self.outcome,
            "ok": self.ok,
            "seconds": round(self.seconds, 3),
            "detail": self.detail,
            "fix": self.fix,
        }


@dataclass
class TargetReport:
    target: str
    kind: str
    results: list[CheckResult] = field(default_factory=list)

    @property
    def usable(self) -> bool:
        return all(r.ok for r in self.results)

    def as_dict(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "kind": self.kind,
            "usable": self.usable,
            "checks": [r.as_dict() for r in self.results],
        }


async def run_checks(
    ctx: DoctorContext,
    checks: Sequence[Check],
    on_result: Callable[[CheckResult], None] | None = None,
) -> TargetReport:
    """Run ``checks`` in order; report each as it ends through ``on_result``."""
    report = TargetReport(ctx.target.name, ctx.target.kind)
    failed: set[str] = set()
    for check in checks:
        result = await _run_one(ctx, check, failed)
        if result.outcome == "fail" or (
            result.outcome == "skip" and result.detail.startswith("needs ")
        ):
            failed.add(check.name)
        report.results.append(result)
        if on_result is not None:
            on_result(result)
    return report


async def _run_one(ctx: DoctorContext, check: Check, failed: set[str]) -> CheckResult:
    blocked = [name for name in check.requires if name in failed]
    if blocked:
        return CheckResult(check.name, "skip", 0.0, f"needs {', '.join(blocked)} first")
    started = time.monotonic()
    try:
        detail = await asyncio.wait_for(check.run(ctx), check.timeout_s)
    except CheckSkipped as skip:
        return CheckResult(check.name, "skip", time.monotonic() - started, str(skip))
    except CheckFailed as err:
        fix = err.fix or ctx.format_fix(check.fix)
        return CheckResult(check.name, "fail", time.monotonic() - started, err.detail, fix)
    except TimeoutError:
        return CheckResult(
            check.name,
            "fail",
            time.monotonic() - started,
            f"no answer within {check.timeout_s:.0f} s",
            ctx.format_fix(check.fix),
        )
    except Exception as err:  # an unexpected error is a failed check, not a crash
        return CheckResult(
            check.name,
            "fail",
            time.monotonic() - started,
            f"{type(err).__name__}: {err}",
            ctx.format_fix(check.fix),
        )
    return CheckResult(check.name, "ok", time.monotonic() - started, detail)
