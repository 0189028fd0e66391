"""The ``bridge`` command line."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

import yaml

from bridge.client import BridgeClient, BridgeError
from bridge.config import ConfigError, Settings, load_settings

DEFAULT_URL = "http://127.0.0.1:8765"


def _settings(args: argparse.Namespace) -> Settings:
    return load_settings(
        Path(args.config) if getattr(args, "config", None) else None,
        data_dir=getattr(args, "data_dir", None),
        host=getattr(args, "host", None),
        port=getattr(args, "port", None),
    )


def _client(args: argparse.Namespace) -> BridgeClient:
    return BridgeClient(args.server, token=os.environ.get("BRIDGE_TOKEN"))


def cmd_serve(args: argparse.Namespace) -> int:
    from bridge.server import serve

    serve(_settings(args))
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from bridge.demo import run_demo
    from bridge.server import free_port, serve_in_thread

    settings = _settings(args)
    settings = settings.model_copy(update={"port": free_port()})
    base = settings.effective_work_url
    results = (
        base.rsplit("/", 1)[0] + "/demo-results"
        if base.startswith("s3://")
        else str(settings.data_dir / "demo-results")
    )
    print(f"data directory: {settings.data_dir}")
    print(f"work directory: {base}")
    with serve_in_thread(settings) as url, BridgeClient(url) as client:
        print(f"broker: {url}/ga4gh/tes/v1\n")
        ok = run_demo(client, results, sys.stdout)
    return 0 if ok else 1


def _load_task_file(path: str) -> dict[str, Any]:
    text = sys.stdin.read() if path == "-" else Path(path).read_text()
    doc = yaml.safe_load(text)  # YAML is a superset of JSON
    if not isinstance(doc, dict):
        raise SystemExit(f"{path}: expected a TES task object")
    return doc


def cmd_submit(args: argparse.Namespace) -> int:
    with _client(args) as client:
        if args.command:
            tags = dict(t.split("=", 1) for t in args.tag or [])
            future = client.run(
                args.command,
                image=args.image,
                name=args.name,
                cpus=args.cpus,
                ram_gb=args.ram_gb,
                tags=tags or None,
            )
        elif args.file:
            future = client.submit(_load_task_file(args.file))
        else:
            raise SystemExit("give a task file, or a command after --")
        print(future.id)
        if args.wait:
            task = future.wait()
            print(task["state"])
            return 0 if task["state"] == "COMPLETE" else 1
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    with _client(args) as client:
        task = client.get(args.id, view="BASIC")
        print(f"{task['id']}  {task['state']}  {task.get('name', '')}")
        for entry in task.get("logs", []):
            meta = entry.get("metadata", {})
            print(
                f"  attempt {meta.get('attempt')} on {meta.get('target')} "
                f"job {meta.get('backend_job_id', '-')}: {meta.get('placement_reason', '')}"
            )
            for i, ex in enumerate(entry.get("logs", [])):
                print(f"    executor {i}: exit {ex.get('exit_code')}")
        for event in client.events(args.id):
            print(f"  {event['at']}  {event['from']:>14} -> {event['to']:<14} {event['reason']}")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    tags = dict([*t.split("=", 1), ""][:2] for t in args.tag or [])
    with _client(args) as client:
        page = client.list_tasks(
            view="BASIC",
            state=args.state,
            name_prefix=args.name_prefix,
            tags=tags,
            page_size=args.limit,
        )
        for task in page["tasks"]:
            print(f"{task['id']}  {task['state']:<15} {task.get('name', '')}")
    return 0


def cmd_logs(args: argparse.Namespace) -> int:
    with _client(args) as client:
        task = client.get(args.id, view="FULL")
    if not task.get("logs"):
        print("no logs yet", file=sys.stderr)
        return 1
    entry = task["logs"][-1]
    for line in entry.get("system_logs", []):
        print(f"[system] {line}", file=sys.stderr)
    for i, ex in enumerate(entry.get("logs", [])):
        if args.executor is not None and i != args.executor:
            continue
        sys.stdout.write(ex.get("stderr" if args.stderr else "stdout", ""))
    return 0


def cmd_cancel(args: argparse.Namespace) -> int:
    with _client(args) as client:
        client.cancel(args.id)
        print(client.get(args.id)["state"])
    return 0


def cmd_targets(args: argparse.Namespace) -> int:
    if args.action == "bootstrap":
        return _bootstrap(args)
    with _client(args) as client:
        for t in client.targets():
            health = "healthy" if t.get("healthy") else f"unhealthy: {t.get('detail')}"
            print(
                f"{t['name']:<12} {t['kind']:<10} {t.get('microarchitecture') or '?':<12} "
                f"cpus={t.get('cpus')} pending={t.get('pending_jobs')} "
                f"wait={t.get('queue_wait_s', 0):.0f}s {health}"
            )
    return 0


def _bootstrap(args: argparse.Namespace) -> int:
    import asyncio
    import subprocess
    import tempfile

    from bridge.remote_agent import bootstrap_agent
    from bridge.targets import make_runner

    if not args.name:
        raise SystemExit("bridge targets bootstrap NAME")
    settings = _settings(args)
    target = next((t for t in settings.targets if t.name == args.name), None)
    if target is None:
        raise SystemExit(f"no target named {args.name!r} in the configuration")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(__file__).resolve().parent.parent
        subprocess.run(
            [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", tmp, str(root)],
            check=True,
        )
        wheel = next(Path(tmp).glob("converged_bridge-*.whl"))
        runner = make_runner(target)

        async def go() -> str:
            try:
                remote_dir = args.remote_dir
                if remote_dir.startswith("~/"):  # argv is not expanded by a shell
                    home = (await runner.run(["printenv", "HOME"])).stdout.strip()
                    remote_dir = f"{home}/{remote_dir[2:]}"
                return await bootstrap_agent(runner, wheel, remote_dir)
            finally:
                await runner.close()

        path = asyncio.run(go())
    print(f"bridge-agent installed on {target.name}: {path}")
    print(f'set agent_command = ["{path}"] for target {target.name} in bridge.toml')
    return 0


def cmd_token(args: argparse.Namespace) -> int:
    from bridge.api.auth import new_token

    token, digest = new_token()
    print(f"token for {args.name}: {token}")
    print("add to bridge.toml:")
    print(
        f'[[users]]\nname = "{args.name}"\ntoken_sha256 = "{digest}"\nadmin = {str(args.admin).lower()}'
    )
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bridge", description=__doc__)
    parser.add_argument(
        "--server",
        default=os.environ.get("BRIDGE_URL", DEFAULT_URL),
        help="broker URL (BRIDGE_URL)",
    )
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="cmd", required=True)

    def with_settings(p: argparse.ArgumentParser) -> None:
        p.add_argument("--config", help="bridge.toml (BRIDGE_CONFIG)")
        p.add_argument("--data-dir", help="where the embedded state lives (BRIDGE_DATA_DIR)")

    p = sub.add_parser("serve", help="run the API and the broker")
    with_settings(p)
    p.add_argument("--host")
    p.add_argument("--port", type=int)
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("demo", help="run a three-step demo workflow on the embedded defaults")
    with_settings(p)
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("submit", help="submit a TES task file (JSON or YAML) or -- a command")
    p.add_argument("file", nargs="?")
    p.add_argument("--image", default="debian:bookworm-slim")
    p.add_argument("--name")
    p.add_argument("--cpus", type=int)
    p.add_argument("--ram-gb", type=float)
    p.add_argument("--tag", action="append", help="key=value")
    p.add_argument("--wait", action="store_true", help="wait and exit non-zero unless COMPLETE")
    p.set_defaults(func=cmd_submit, command=[])

    for name, func, text in (
        ("status", cmd_status, "a task's state, placement and events"),
        ("cancel", cmd_cancel, "cancel a task"),
    ):
        p = sub.add_parser(name, help=text)
        p.add_argument("id")
        p.set_defaults(func=func)

    p = sub.add_parser("logs", help="a task's executor output (last attempt)")
    p.add_argument("id")
    p.add_argument("--executor", type=int)
    p.add_argument("--stderr", action="store_true")
    p.set_defaults(func=cmd_logs)

    p = sub.add_parser("list", help="list tasks")
    p.add_argument("--state")
    p.add_argument("--name-prefix")
    p.add_argument("--tag", action="append", help="key=value or key")
    p.add_argument("--limit", type=int, default=50)
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("targets", help="list targets, or bootstrap the agent on one")
    with_settings(p)
    p.add_argument("action", nargs="?", choices=["list", "bootstrap"], default="list")
    p.add_argument("name", nargs="?")
    p.add_argument("--remote-dir", default="~/.local/share/converged-bridge/agent")
    p.set_defaults(func=cmd_targets)

    p = sub.add_parser("token", help="make an API token for a user")
    p.add_argument("name")
    p.add_argument("--admin", action="store_true")
    p.set_defaults(func=cmd_token)

    from bridge import cli_envs

    cli_envs.add_parser(sub, with_settings, _settings)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command: list[str] = []
    if "--" in argv:  # everything after "--" is the command of a one-off task
        cut = argv.index("--")
        argv, command = argv[:cut], argv[cut + 1 :]
    args = build_parser().parse_args(argv)
    if command:
        args.command = command
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if not args.verbose:
        for noisy in ("httpx", "httpcore", "botocore", "boto3"):
            logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        return int(args.func(args))
    except BridgeError as err:
        print(f"error: {err}", file=sys.stderr)
        if isinstance(err.body, dict) and err.body.get("errors"):
            print(json.dumps(err.body["errors"], indent=1), file=sys.stderr)
        return 2
    except ConfigError as err:
        print(f"configuration error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
