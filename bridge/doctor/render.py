"""Text lines for people: ✔/✘ per step, its timing, and the fix under a failure."""

from __future__ import annotations

from bridge.doctor.core import CheckResult, TargetReport

MARKS = {"ok": "✔", "fail": "✘", "skip": "-"}


def result_lines(result: CheckResult) -> list[str]:
    lines = [f"  {MARKS[result.outcome]} {result.name} ({result.seconds:.2f} s): {result.detail}"]
    if result.fix:
        lines.append(f"      fix: {result.fix}")
    return lines


def target_header(name: str, kind: str) -> str:
    return f"{name} ({kind})"


def summary_line(report: TargetReport) -> str:
    if report.usable:
        return f"  => {report.target} is usable"
    failed = [r.name for r in report.results if r.outcome == "fail"]
    return f"  => {report.target} is NOT usable: {', '.join(failed)}"
