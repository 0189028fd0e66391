"""Bearer-token authentication.

Tokens come from two places: ``[[users]]`` in the configuration (a SHA-256 digest
each) and the database (:mod:`bridge.accounts`: ``bridge users add``, ``bridge tokens
create``), looked up on every request so a revoked or expired token stops working at
once.  While neither holds a user (the embedded default) every request is the
``anonymous`` user with admin rights.  Otherwise a request needs ``Authorization:
Bearer <token>``; a missing or wrong token is a 401.  Users see only their own
tasks; admins see all.
"""

from __future__ import annotations

import hmac
import secrets
from dataclasses import dataclass

from fastapi import Request

from bridge.accounts import Accounts, token_digest
from bridge.api.errors import Unauthorized
from bridge.config import Settings

__all__ = [
    "ANONYMOUS",
    "Caller",
    "auth_enabled",
    "caller_for",
    "new_token",
    "resolve_digest",
    "resolve_token",
    "token_digest",
]


@dataclass(frozen=True)
class Caller:
    name: str
    admin: bool

    @property
    def owner_filter(self) -> str | None:
        """The owner to restrict reads to; ``None`` for admins (everything)."""
        return None if self.admin else self.name


ANONYMOUS = Caller("anonymous", admin=True)


def new_token() -> tuple[str, str]:
    token = secrets.token_urlsafe(32)
    return token, token_digest(token)


def _accounts(request: Request) -> Accounts | None:
    return getattr(request.app.state, "accounts", None)


def auth_enabled(request: Request, settings: Settings) -> bool:
    if settings.auth_enabled:
        return True
    accounts = _accounts(request)
    return accounts is not None and accounts.any_user()


def resolve_token(request: Request, settings: Settings, token: str) -> Caller | None:
    """The caller a token belongs to (config users first, then the database)."""
    return resolve_digest(request, settings, token_digest(token.strip()))


def resolve_digest(request: Request, settings: Settings, digest: str) -> Caller | None:
    """The caller whose live token has this SHA-256 digest, if any."""
    for user in settings.users:
        if hmac.compare_digest(user.token_sha256, digest):
            return Caller(user.name, user.admin)
    accounts = _accounts(request)
    account = accounts.lookup(digest) if accounts is not None else None
    return Caller(account.name, account.admin) if account else None


def caller_for(request: Request, settings: Settings) -> Caller:
    if not auth_enabled(request, settings):
        return ANONYMOUS
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("a bearer token is required")
    caller = resolve_token(request, settings, token)
    if caller is None:
        raise Unauthorized("the bearer token is not valid")
    return caller
