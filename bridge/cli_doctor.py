"""``bridge doctor`` and ``bridge config check``: is the installation usable?"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from bridge.cli_output import emit_json
from bridge.config import ConfigError

if TYPE_CHECKING:
    from bridge.doctor import CheckResult


def cmd_doctor(args: argparse.Namespace) -> int:
    from bridge.cli import _settings
    from bridge.doctor import check_target, select_targets
    from bridge.doctor.render import result_lines, summary_line, target_header

    settings = _settings(args)
    targets = select_targets(settings, [args.target] if args.target else [])
    if not args.verbose:  # the steps say what happened; connection chatter does not help
        for noisy in ("paramiko", "schedulers", "bridge"):
            logging.getLogger(noisy).setLevel(logging.WARNING)
    as_json = bool(args.json)

    def finished(result: CheckResult) -> None:
        if not as_json:
            print("\n".join(result_lines(result)), flush=True)

    reports = []
    for target in targets:
        if not as_json:
            print(target_header(target.name, target.kind), flush=True)
        report = asyncio.run(check_target(settings, target, finished))
        if not as_json:
            print(summary_line(report), flush=True)
        reports.append(report)
    usable = all(r.usable for r in reports)
    if as_json:
        emit_json({"usable": usable, "targets": [r.as_dict() for r in reports]})
    return 0 if usable else 1


def cmd_config_check(args: argparse.Namespace) -> int:
    from bridge.config import find_config_file
    from bridge.config_check import check_file

    path = Path(args.file) if args.file else find_config_file()
    if path is None:
        raise ConfigError("no bridge.toml found (give FILE, or set BRIDGE_CONFIG)")
    problems = check_file(path, reach=not args.offline)
    errors = [p for p in problems if p.severity == "error"]
    if args.json:
        emit_json(
            {"file": str(path), "ok": not errors, "problems": [p.as_dict() for p in problems]}
        )
    else:
        for problem in problems:
            print(problem.message, file=sys.stderr if problem.severity == "error" else sys.stdout)
        if not errors:
            print(f"{path}: ok")
    return 1 if errors else 0


def add_commands(
    sub: argparse._SubParsersAction[argparse.ArgumentParser],
    with_settings: Callable[[argparse.ArgumentParser], None],
) -> None:
    """Register ``doctor`` and ``config`` on the main parser."""
    p = sub.add_parser(
        "doctor",
        help="check that each configured target works, with a fix for each failure",
        description=(
            "Check each configured target step by step: SSH and its host key, Slurm, the "
            "agent, the work directory from the broker and from a node (a probe job), "
            "FUSE, the container runtime and the object store. Exit status 1 when a "
            "target is unusable."
        ),
    )
    with_settings(p)
    p.add_argument("target", nargs="?", help="check only this target")
    p.add_argument("--json", action="store_true", help="print one JSON document")
    p.set_defaults(func=cmd_doctor)

    p = sub.add_parser("config", help="check a bridge.toml")
    config_sub = p.add_subparsers(dest="config_action", required=True)
    c = config_sub.add_parser(
        "check",
        help="validate bridge.toml: unknown keys, missing files, cloud work directories",
        description=(
            "Validate a configuration file and name the line and key of each problem. "
            "Partitions are checked on targets that answer (skip that with --offline)."
        ),
    )
    c.add_argument("file", nargs="?", help="the file (default: BRIDGE_CONFIG or ./bridge.toml)")
    c.add_argument("--offline", action="store_true", help="do not contact the targets")
    c.add_argument("--json", action="store_true", help="print one JSON document")
    c.set_defaults(func=cmd_config_check)
