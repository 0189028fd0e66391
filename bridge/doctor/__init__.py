"""``bridge doctor``: is each configured target usable, and if not, what to fix.

Checks are small objects (:class:`~bridge.doctor.core.Check`) run in order per
target kind (:mod:`bridge.doctor.plan`); the same checks back the CLI and the admin
API (``GET /api/targets/{name}/health``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from bridge.config import ConfigError, Settings, TargetConfig
from bridge.doctor.context import DoctorContext
from bridge.doctor.core import (
    Check,
    CheckFailed,
    CheckResult,
    CheckSkipped,
    TargetReport,
    run_checks,
)
from bridge.doctor.plan import checks_for

__all__ = [
    "Check",
    "CheckFailed",
    "CheckResult",
    "CheckSkipped",
    "TargetReport",
    "check_target",
    "check_targets",
    "select_targets",
]


def select_targets(settings: Settings, names: Sequence[str] = ()) -> list[TargetConfig]:
    """The configured targets named (all when none are); unknown names are an error."""
    if not names:
        return list(settings.targets)
    known = {t.name: t for t in settings.targets}
    missing = [n for n in names if n not in known]
    if missing:
        raise ConfigError(
            f"no target named {', '.join(missing)} (configured: {', '.join(known) or 'none'})"
        )
    return [known[n] for n in names]


async def check_target(
    settings: Settings,
    target: TargetConfig,
    on_result: Callable[[CheckResult], None] | None = None,
) -> TargetReport:
    ctx = DoctorContext(settings, target)
    try:
        return await run_checks(ctx, checks_for(target.kind), on_result)
    finally:
        await ctx.close()


async def check_targets(
    settings: Settings,
    targets: Sequence[TargetConfig],
    on_start: Callable[[TargetConfig], None] | None = None,
    on_result: Callable[[CheckResult], None] | None = None,
) -> list[TargetReport]:
    reports = []
    for target in targets:
        if on_start is not None:
            on_start(target)
        reports.append(await check_target(settings, target, on_result))
    return reports
