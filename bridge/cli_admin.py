"""Administration commands run on the broker's machine: users, tokens, reports.

``bridge users add|list`` and ``bridge tokens create|revoke|list`` work on the
database named by the settings (the same one the server uses), so they need no
running server; a token is printed once and only its digest is kept.  ``bridge
token`` with no name makes the local admin (and its token) when no user exists yet.
``bridge report`` asks the server for a workflow's report and writes it to a file.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx

from bridge.accounts import ROLES, AccountError, Accounts
from bridge.config import Settings

SettingsLoader = Callable[[argparse.Namespace], Settings]


def _accounts(settings: Settings) -> Accounts:
    from bridge.db import make_engine, upgrade

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    engine = make_engine(settings.effective_database_url)
    upgrade(engine)
    return Accounts(engine)


def _duration(text: str) -> timedelta:
    """``90d``, ``12h``, ``30m`` or seconds."""
    units = {"d": 86400, "h": 3600, "m": 60, "s": 1}
    scale = units.get(text[-1:], 1)
    number = text[:-1] if text[-1:] in units else text
    try:
        value = float(number)
    except ValueError:
        raise SystemExit(
            f"--expires: {text!r} is not a duration such as 90d, 12h or 3600"
        ) from None
    if value <= 0:
        raise SystemExit("--expires: must be positive")
    return timedelta(seconds=value * scale)


def register(
    sub: Any,
    with_settings: Callable[[argparse.ArgumentParser], None],
    load: SettingsLoader,
) -> None:
    def users(args: argparse.Namespace) -> int:
        accounts = _accounts(load(args))
        if args.action == "add":
            if not args.name:
                raise SystemExit("bridge users add NAME [--role admin|user]")
            accounts.add_user(args.name, args.role)
            print(f"user {args.name} ({args.role}) added")
        else:
            for name, role in accounts.users():
                print(f"{name:<24} {role}")
        return 0

    def tokens(args: argparse.Namespace) -> int:
        accounts = _accounts(load(args))
        if args.action == "create":
            if not args.arg:
                raise SystemExit("bridge tokens create USER [--expires 90d]")
            expires = _duration(args.expires) if args.expires else None
            token_id, token = accounts.create_token(args.arg, expires_in=expires, label=args.label)
            print(f"token {token_id} for {args.arg}: {token}")
            print("it is shown only now; keep it (BRIDGE_TOKEN)")
        elif args.action == "revoke":
            if not args.arg or not args.arg.isdigit():
                raise SystemExit("bridge tokens revoke TOKEN_ID")
            accounts.revoke(int(args.arg))
            print(f"token {args.arg} revoked")
        else:
            for t in accounts.tokens(args.arg):
                status = "revoked" if t.revoked else "live"
                until = t.expires_time.isoformat() if t.expires_time else "never"
                print(f"{t.id:>5} {t.user:<20} {status:<8} expires {until} {t.label}")
        return 0

    def wrapped(func: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
        def run(args: argparse.Namespace) -> int:
            try:
                return func(args)
            except AccountError as err:
                print(f"error: {err}", file=sys.stderr)
                return 2

        return run

    p = sub.add_parser("users", help="add or list users (kept in the database)")
    with_settings(p)
    p.add_argument("action", choices=["add", "list"])
    p.add_argument("name", nargs="?")
    p.add_argument("--role", choices=ROLES, default="user")
    p.set_defaults(func=wrapped(users))

    p = sub.add_parser("tokens", help="create, revoke or list API tokens")
    with_settings(p)
    p.add_argument("action", choices=["create", "revoke", "list"])
    p.add_argument("arg", nargs="?", help="USER for create and list, TOKEN_ID for revoke")
    p.add_argument("--expires", help="lifetime, e.g. 90d, 12h (default: none)")
    p.add_argument("--label", default="")
    p.set_defaults(func=wrapped(tokens))

    p = sub.add_parser("report", help="write a workflow's report as one HTML file")
    p.add_argument("--tag", required=True, help="key=value, e.g. workflow=ID")
    p.add_argument("-o", "--output", default="report.html")
    p.set_defaults(func=report)


def local_admin_token(settings: Settings) -> int:
    """``bridge token`` without a name: the local admin's token, made if no user exists."""
    token = _accounts(settings).ensure_local_admin()
    if token is None:
        print(
            "users exist already; make a token with: bridge tokens create USER",
            file=sys.stderr,
        )
        return 1
    print(f"local admin token (shown once): {token}")
    print("the API and the dashboard now need a token: export BRIDGE_TOKEN=...")
    return 0


def report(args: argparse.Namespace) -> int:
    if "=" not in args.tag:
        raise SystemExit("--tag: must be key=value, e.g. workflow=ID")
    headers = {}
    if os.environ.get("BRIDGE_TOKEN"):
        headers["Authorization"] = f"Bearer {os.environ['BRIDGE_TOKEN']}"
    response = httpx.get(
        f"{args.server.rstrip('/')}/report",
        params={"tag": args.tag},
        headers=headers,
        timeout=120,
    )
    if response.status_code != 200:
        print(f"error: {response.status_code} {response.text[:500]}", file=sys.stderr)
        return 2
    Path(args.output).write_text(response.text)
    print(f"wrote {args.output}")
    return 0
