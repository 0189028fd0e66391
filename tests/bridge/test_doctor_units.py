"""The doctor's pieces without services: ordering and skipping, node reports, rendering."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from bridge.config import Settings, TargetConfig
from bridge.doctor.context import DoctorContext
from bridge.doctor.core import Check, CheckFailed, run_checks
from bridge.doctor.node import parse_report
from bridge.doctor.render import result_lines


def test_a_failed_step_skips_the_steps_that_need_it(tmp_path: Path) -> None:
    ran: list[str] = []

    async def ok(_: DoctorContext) -> str:
        ran.append("ok")
        return "fine"

    async def broken(_: DoctorContext) -> str:
        ran.append("broken")
        raise CheckFailed("it is broken", "mend it")

    async def later(_: DoctorContext) -> str:
        ran.append("later")
        return "never"

    checks = [
        Check("first", ok, ""),
        Check("second", broken, "generic fix for {target}"),
        Check("third", later, "", requires=("second",)),
        Check("fourth", later, "", requires=("third",)),
        Check("fifth", ok, "", requires=("first",)),
    ]
    ctx = DoctorContext(Settings(data_dir=tmp_path), TargetConfig(name="t", kind="local"))
    report = asyncio.run(run_checks(ctx, checks))
    outcomes = [(r.name, r.outcome) for r in report.results]
    assert outcomes == [
        ("first", "ok"),
        ("second", "fail"),
        ("third", "skip"),
        ("fourth", "skip"),  # transitively: it needs a step that could not run
        ("fifth", "ok"),
    ]
    assert ran == ["ok", "broken", "ok"]
    assert report.results[1].fix == "mend it" and not report.usable
    assert report.results[2].detail == "needs second first"
    lines = result_lines(report.results[1])
    assert lines[0].startswith("  ✘ second (") and lines[1] == "      fix: mend it"


def test_an_unexpected_error_is_a_failed_step_with_the_generic_fix(tmp_path: Path) -> None:
    async def crash(_: DoctorContext) -> str:
        raise RuntimeError("boom")

    ctx = DoctorContext(Settings(data_dir=tmp_path), TargetConfig(name="hpc", kind="local"))
    report = asyncio.run(run_checks(ctx, [Check("step", crash, "look at {target}")]))
    (result,) = report.results
    assert result.outcome == "fail" and "boom" in result.detail and result.fix == "look at hpc"


def test_node_report_from_shell_probes() -> None:
    report = parse_report(
        "node=n1\nagent_version=bridge-agent 0.1.0\nfuse_device=no\nfusermount=\n"
        "runtime.docker=\nruntime.ch-run=/usr/bin/ch-run\nruntime.bwrap=/usr/bin/bwrap\n"
    )
    assert report["node"] == "n1" and report["source"] == "shell probes"
    assert report["fuse"] == {"device": False, "fusermount": None}
    assert report["runtimes"] == {"ch-run": "/usr/bin/ch-run", "bwrap": "/usr/bin/bwrap"}


def test_node_report_prefers_the_agents_own_check() -> None:
    check = {
        "fuse": {"usable": False, "reason": "/dev/fuse missing"},
        "runtimes": {"docker": {"usable": False}, "bwrap": {"usable": True, "path": "/x/bwrap"}},
    }
    report = parse_report(f"node=n2\nagent_check={json.dumps(check)}\nfuse_device=yes\n")
    assert report["source"] == "bridge-agent check"
    assert report["fuse"]["device"] is False and report["fuse"]["detail"] == "/dev/fuse missing"
    assert report["runtimes"] == {"bwrap": "/x/bwrap"}
