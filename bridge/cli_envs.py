"""``bridge envs build|list|show|logs``: software environments from the command line.

These commands work on the broker's state database (like ``bridge targets``), so a
build started here is the same row, and is reused by, the tasks that want it.
``build`` runs the build in this process and, on a terminal, shows a progress line
(elapsed time and the build log's last line) until it ends.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

from bridge.config import Settings, TargetConfig
from bridge.db import make_engine, upgrade
from bridge.envs_broker import EnvBroker
from bridge.envs_store import BuildRow
from bridge.store import TaskStore
from schedulers.base import TargetInfo
from spack_envs import targets
from spack_envs.containers import compatibility_problem
from spack_envs.requests import BadEnvRequest, request_from_parameters

SettingsLoader = Callable[[argparse.Namespace], Settings]


def add_parser(
    sub: Any, with_settings: Callable[[argparse.ArgumentParser], None], load: SettingsLoader
) -> None:
    """Register ``envs`` and its verbs on the ``bridge`` parser."""
    envs = sub.add_parser("envs", help="software environments built per CPU target")
    verbs = envs.add_subparsers(dest="envs_cmd", required=True)

    p = verbs.add_parser("build", help="build (or find) an environment for a target")
    with_settings(p)
    p.add_argument("--spack", action="append", default=[], help="a Spack spec (repeatable)")
    p.add_argument("--pip", action="append", default=[], help="a pip package (repeatable)")
    p.add_argument("--apt", action="append", default=[], help="a Debian package (repeatable)")
    p.add_argument("--format", choices=["spack", "container"])
    p.add_argument("--target", help="a configured target name (its CPU is built for)")
    p.add_argument("--arch", help="an archspec CPU target, instead of the target's")
    p.add_argument("--rebuild", action="store_true", help="build again even if it exists")
    p.set_defaults(func=lambda a: cmd_build(a, load(a)))

    p = verbs.add_parser("list", help="every build: key, status, target, what")
    with_settings(p)
    p.set_defaults(func=lambda a: cmd_list(a, load(a)))

    for name, text in (("show", "one build as JSON"), ("logs", "one build's log")):
        p = verbs.add_parser(name, help=text)
        with_settings(p)
        p.add_argument("key")
        p.set_defaults(func=lambda a, n=name: cmd_show(a, load(a), logs=n == "logs"))


def _broker(settings: Settings) -> EnvBroker:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    engine = make_engine(settings.effective_database_url)
    upgrade(engine)
    return EnvBroker(settings, TaskStore(engine), builder_id=f"cli:{settings.data_dir}")


def _target(settings: Settings, name: str | None) -> tuple[TargetConfig, TargetInfo | None]:
    configs = {t.name: t for t in settings.targets}
    config = configs.get(name or "") or (settings.targets[0] if not name else None)
    if config is None:
        raise SystemExit(f"error: no target {name!r} (configured: {', '.join(configs)})")
    return config, None


def _microarchitecture(envs: EnvBroker, target: str) -> str | None:
    for row in envs.store.targets():
        if row.get("name") == target:
            info = row.get("info") or {}
            return info.get("microarchitecture") or None
    return None


def cmd_build(args: argparse.Namespace, settings: Settings, out: TextIO | None = None) -> int:
    out = out or sys.stdout  # read at call time: a default bound at import may be closed
    envs = _broker(settings)
    config, _ = _target(settings, args.target)
    params: dict[str, Any] = {
        "bridge.spack": ",".join(args.spack),
        "bridge.pip": args.pip,
        "bridge.apt": args.apt,
        "bridge.env_format": args.format or "",
        "bridge.arch": args.arch or "",
    }
    host = _microarchitecture(envs, config.name) or targets.host_microarchitecture()
    try:
        request = request_from_parameters(
            params,
            placement_target=host,
            base_image=settings.envs.base_image,
            spack_version=envs.spack_version if args.spack else "",
        )
    except BadEnvRequest as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if request is None:
        print("error: give at least one --spack, --pip or --apt", file=sys.stderr)
        return 2
    problem = compatibility_problem(request.target, [host])
    if problem:
        print(f"error: cannot build for {config.name}: {problem}", file=sys.stderr)
        return 2
    if args.rebuild:
        envs.builds.delete(request.key)
    print(f"{request.key}  {request.describe()}", file=out)
    envs._resolve_request(request, config)
    row = _follow(envs, request.key, out)
    envs.close()
    if row is None or row.status != "ready":
        print(f"build {request.key} failed:\n{row.log_tail(20) if row else ''}", file=out)
        return 1
    print(json.dumps(row.artifact, indent=1, sort_keys=True), file=out)
    return 0


def _follow(envs: EnvBroker, key: str, out: TextIO) -> BuildRow | None:
    """Wait for the build; a progress line on a terminal, nothing otherwise."""
    tty = out.isatty()
    started = time.monotonic()
    log_path = envs.builds_dir / key / "build.log"
    spinner = "|/-\\"
    turn = 0
    while True:
        row = envs.builds.get(key)
        if row is None or row.status != "building":
            if tty:
                out.write("\r\033[K")
            return row
        if tty:
            last = _last_line(log_path)
            elapsed = time.monotonic() - started
            width = 100
            out.write(f"\r\033[K{spinner[turn % 4]} {elapsed:6.0f} s  {last}"[:width])
            out.flush()
            turn += 1
        time.sleep(0.5)


def _last_line(path: Path) -> str:
    try:
        with path.open("rb") as f:
            f.seek(0, 2)
            f.seek(max(0, f.tell() - 4096))
            lines = f.read().decode(errors="replace").strip().splitlines()
    except OSError:
        return "starting"
    return lines[-1].strip() if lines else "starting"


def cmd_list(args: argparse.Namespace, settings: Settings, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    envs = _broker(settings)
    rows = envs.builds.list()
    envs.close()
    print(f"{'KEY':24}  {'STATUS':8}  {'TARGET':14}  {'FORMAT':9}  WHAT", file=out)
    for row in rows:
        print(
            f"{row.key:24}  {row.status:8}  {row.target:14}  {row.format:9}  {row.description}",
            file=out,
        )
    return 0


def cmd_show(
    args: argparse.Namespace, settings: Settings, *, logs: bool, out: TextIO | None = None
) -> int:
    out = out or sys.stdout
    envs = _broker(settings)
    row = envs.builds.get(args.key)
    envs.close()
    if row is None:
        print(f"error: no build {args.key!r}", file=sys.stderr)
        return 1
    if logs:
        out.write(row.log if row.log.endswith("\n") or not row.log else row.log + "\n")
        return 0
    doc = {
        "key": row.key,
        "status": row.status,
        "target": row.target,
        "format": row.format,
        "description": row.description,
        "request": row.request,
        "artifact": row.artifact,
        "created_time": row.created_time.isoformat(),
        "updated_time": row.updated_time.isoformat(),
    }
    print(json.dumps(doc, indent=1), file=out)
    return 0
