"""The bridge command line: run the broker, submit and follow tasks, check targets.

Commands that print data take --json (one JSON document on stdout, stable keys).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from bridge.cli_output import Progress, emit_json, watch
from bridge.client import TERMINAL, BridgeClient, BridgeError
from bridge.config import ConfigError, Settings, find_config_file, load_settings
from bridge.logs import setup_logging
from bridge.sizes import human_size

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
    from bridge.config_check import refuse_message
    from bridge.server import serve

    path = Path(args.config) if args.config else find_config_file()
    if path is not None and (problem := refuse_message(path)):
        print(f"refusing to start: invalid configuration\n{problem}", file=sys.stderr)
        return 2
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
        if not args.wait:
            if args.json:
                emit_json({"id": future.id})
            else:
                print(future.id)
            return 0
        if not args.json:
            print(future.id, flush=True)
        progress = Progress()
        try:
            while (state := future.state) not in TERMINAL:
                progress.update(f"{future.id}  {state}")
                time.sleep(0.5 if progress.enabled else 0.2)
        finally:
            progress.close()
        if args.json:
            emit_json({"id": future.id, "state": state})
        else:
            print(state)
        return 0 if state == "COMPLETE" else 1


def status_data(client: BridgeClient, task_id: str) -> dict[str, Any]:
    """What ``bridge status`` shows, as data (the --json document)."""
    task = client.get(task_id, view="BASIC")
    attempts = []
    for entry in task.get("logs", []):
        meta = entry.get("metadata", {})
        attempts.append(
            {
                "attempt": meta.get("attempt"),
                "target": meta.get("target"),
                "backend_job_id": meta.get("backend_job_id"),
                "placement_reason": meta.get("placement_reason", ""),
                "executors": [
                    {"index": i, "exit_code": ex.get("exit_code")}
                    for i, ex in enumerate(entry.get("logs", []))
                ],
                # What Fusion did for the attempt (the agent's counters), if it used it
                "fusion": {
                    k.removeprefix("fusion_"): v for k, v in meta.items() if k.startswith("fusion_")
                },
            }
        )
    return {
        "id": task["id"],
        "state": task["state"],
        "name": task.get("name", ""),
        "attempts": attempts,
        "events": [
            {"at": e["at"], "from": e["from"], "to": e["to"], "reason": e["reason"]}
            for e in client.events(task_id)
        ],
    }


def status_text(data: dict[str, Any]) -> str:
    lines = [f"{data['id']}  {data['state']}  {data['name']}"]
    for a in data["attempts"]:
        lines.append(
            f"  attempt {a['attempt']} on {a['target']} "
            f"job {a['backend_job_id'] or '-'}: {a['placement_reason']}"
        )
        lines += [f"    executor {e['index']}: exit {e['exit_code']}" for e in a["executors"]]
        if a["fusion"]:
            lines.append("    " + fusion_text(a["fusion"]))
    lines += [
        f"  {e['at']}  {e['from']:>14} -> {e['to']:<14} {e['reason']}" for e in data["events"]
    ]
    return "\n".join(lines)


def fusion_text(figures: dict[str, str]) -> str:
    """One line of an attempt's Fusion figures (strings, as TES metadata holds them)."""

    def n(key: str) -> int:
        value = figures.get(key, "0")
        return int(value) if value.isdigit() else 0

    parts = [f"read {human_size(n('bytes_read'))}"]
    if "bytes_fetched" in figures:
        parts.append(f"fetched {human_size(n('bytes_fetched'))} in {n('gets')} GETs")
    parts.append(
        f"published {human_size(n('bytes_published'))} in {n('objects_published')} objects"
    )
    if "cache_hits" in figures:
        parts.append(f"block cache {n('cache_hits')} hits / {n('cache_misses')} misses")
    return f"fusion ({figures.get('mode', '?')}): " + ", ".join(parts)


def cmd_status(args: argparse.Namespace) -> int:
    with _client(args) as client:

        def render() -> tuple[dict[str, Any], str]:
            data = status_data(client, args.id)
            return data, status_text(data)

        if args.watch:
            return watch(
                render,
                as_json=args.json,
                interval=args.interval,
                done=lambda d: d["state"] in TERMINAL,
            )
        data, text = render()
    if args.json:
        emit_json(data)
    else:
        print(text)
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    tags = dict([*t.split("=", 1), ""][:2] for t in args.tag or [])
    with _client(args) as client:

        def render() -> tuple[dict[str, Any], str]:
            page = client.list_tasks(
                view="BASIC",
                state=args.state,
                name_prefix=args.name_prefix,
                tags=tags,
                page_size=args.limit,
            )
            tasks = [
                {"id": t["id"], "state": t["state"], "name": t.get("name", "")}
                for t in page["tasks"]
            ]
            data = {"tasks": tasks, "next_page_token": page.get("next_page_token") or None}
            text = "\n".join(f"{t['id']}  {t['state']:<15} {t['name']}" for t in tasks)
            return data, text

        if args.watch:
            return watch(render, as_json=args.json, interval=args.interval)
        data, text = render()
    if args.json:
        emit_json(data)
    elif text:
        print(text)
    return 0


def cmd_logs(args: argparse.Namespace) -> int:
    with _client(args) as client:
        task = client.get(args.id, view="FULL")
    if not task.get("logs"):
        print("no logs yet", file=sys.stderr)
        return 1
    entry = task["logs"][-1]
    executors = [
        (i, ex)
        for i, ex in enumerate(entry.get("logs", []))
        if args.executor is None or i == args.executor
    ]
    if args.json:
        emit_json(
            {
                "id": task["id"],
                "attempt": entry.get("metadata", {}).get("attempt"),
                "system_logs": list(entry.get("system_logs", [])),
                "executors": [
                    {
                        "index": i,
                        "exit_code": ex.get("exit_code"),
                        "stdout": ex.get("stdout", ""),
                        "stderr": ex.get("stderr", ""),
                    }
                    for i, ex in executors
                ],
            }
        )
        return 0
    for line in entry.get("system_logs", []):
        print(f"[system] {line}", file=sys.stderr)
    for _, ex in executors:
        sys.stdout.write(ex.get("stderr" if args.stderr else "stdout", ""))
    return 0


def cmd_cancel(args: argparse.Namespace) -> int:
    with _client(args) as client:
        client.cancel(args.id)
        state = client.get(args.id)["state"]
    if args.json:
        emit_json({"id": args.id, "state": state})
    else:
        print(state)
    return 0


def cmd_targets(args: argparse.Namespace) -> int:
    if args.action == "bootstrap":
        return _bootstrap(args)
    with _client(args) as client:
        targets = client.targets()
    if args.json:
        emit_json({"targets": [{k: t.get(k) for k in TARGET_KEYS} for t in targets]})
        return 0
    for t in targets:
        health = "healthy" if t.get("healthy") else f"unhealthy: {t.get('detail')}"
        print(
            f"{t['name']:<12} {t['kind']:<10} {t.get('microarchitecture') or '?':<12} "
            f"cpus={t.get('cpus')} pending={t.get('pending_jobs')} "
            f"wait={t.get('queue_wait_s', 0):.0f}s {health}"
        )
    return 0


TARGET_KEYS = (
    "name",
    "kind",
    "microarchitecture",
    "cpus",
    "pending_jobs",
    "queue_wait_s",
    "healthy",
    "detail",
)


def _bootstrap(args: argparse.Namespace) -> int:
    import asyncio
    import subprocess
    import tempfile

    from bridge.remote_agent import bootstrap_agent

    if not args.name:
        raise SystemExit("bridge targets bootstrap NAME")
    settings = _settings(args)
    target = next((t for t in settings.targets if t.name == args.name), None)
    if target is None:
        raise SystemExit(f"no target named {args.name!r} in the configuration")
    if target.kind == "aws_batch":
        from bridge.agent_image import build_agent_image

        batch = target.backend
        built = build_agent_image(batch.image, args.base_image, push=bool(batch.registry))
        print(f"agent image for {target.name}: {built['image']} ({built['size_bytes']} bytes)")
        print("pushed" if built["pushed"] else "built locally (no registry configured)")
        return 0
    if target.kind != "slurm":
        raise SystemExit(
            f"target {target.name} is {target.kind}: bootstrap installs on Slurm login nodes"
        )
    from schedulers.slurm import make_runner

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(__file__).resolve().parent.parent
        subprocess.run(
            [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", tmp, str(root)],
            check=True,
        )
        wheel = next(Path(tmp).glob("converged_bridge-*.whl"))
        runner = make_runner(target.backend, target.env)

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
    if args.json:
        emit_json({"target": target.name, "agent": path})
        return 0
    print(f"bridge-agent installed on {target.name}: {path}")
    print(f'set agent_command = ["{path}"] for target {target.name} in bridge.toml')
    return 0


def cmd_token(args: argparse.Namespace) -> int:
    from bridge.api.auth import new_token

    if not args.name:
        from bridge.cli_admin import local_admin_token

        return local_admin_token(_settings(args))

    token, digest = new_token()
    if args.json:
        emit_json({"name": args.name, "token": token, "token_sha256": digest, "admin": args.admin})
        return 0
    print(f"token for {args.name}: {token}")
    print("add to bridge.toml:")
    print(
        f'[[users]]\nname = "{args.name}"\ntoken_sha256 = "{digest}"\nadmin = {str(args.admin).lower()}'
    )
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bridge", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
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
    json_flag(p)
    p.set_defaults(func=cmd_submit, command=[])

    p = sub.add_parser("status", help="a task's state, placement and events")
    p.add_argument("id")
    json_flag(p)
    watch_flags(p, "until the task has finished")
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("cancel", help="cancel a task")
    p.add_argument("id")
    json_flag(p)
    p.set_defaults(func=cmd_cancel)

    p = sub.add_parser("logs", help="a task's executor output (last attempt)")
    p.add_argument("id")
    p.add_argument("--executor", type=int)
    p.add_argument("--stderr", action="store_true")
    json_flag(p)
    p.set_defaults(func=cmd_logs)

    p = sub.add_parser("list", help="list tasks")
    p.add_argument("--state")
    p.add_argument("--name-prefix")
    p.add_argument("--tag", action="append", help="key=value or key")
    p.add_argument("--limit", type=int, default=50)
    json_flag(p)
    watch_flags(p, "until interrupted")
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("targets", help="list targets, or bootstrap the agent on one")
    with_settings(p)
    p.add_argument("action", nargs="?", choices=["list", "bootstrap"], default="list")
    p.add_argument("name", nargs="?")
    p.add_argument("--remote-dir", default="~/.local/share/converged-bridge/agent")
    p.add_argument(
        "--base-image",
        default=os.environ.get("BRIDGE_BASE_IMAGE", "bridge-base:bookworm"),
        help="Debian bookworm image the AWS Batch agent image is built from",
    )
    json_flag(p)
    p.set_defaults(func=cmd_targets)

    p = sub.add_parser("token", help="the local admin token, or a config token for a user")
    with_settings(p)
    p.add_argument("name", nargs="?")
    p.add_argument("--admin", action="store_true")
    json_flag(p)
    p.set_defaults(func=cmd_token)

    from bridge.cli_admin import register

    register(sub, with_settings, _settings)

    from bridge import cli_doctor

    cli_doctor.add_commands(sub, with_settings)

    from bridge import cli_envs

    cli_envs.add_parser(sub, with_settings, _settings)
    return parser


def json_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print one JSON document (stable keys)")


def watch_flags(p: argparse.ArgumentParser, until: str) -> None:
    p.add_argument("--watch", action="store_true", help=f"refresh the view {until}")
    p.add_argument("--interval", type=float, default=2.0, help="seconds between refreshes")


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command: list[str] = []
    if "--" in argv:  # everything after "--" is the command of a one-off task
        cut = argv.index("--")
        argv, command = argv[:cut], argv[cut + 1 :]
    args = build_parser().parse_args(argv)
    if command:
        args.command = command
    setup_logging(args.verbose)
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
