"""Bearer-token authentication.

With no users configured (the embedded default) every request is the
``anonymous`` user with admin rights.  Once ``[[users]]`` are configured, a request
needs ``Authorization: Bearer <token>``; the server keeps only SHA-256 digests of
tokens.  Users see only their own tasks; admins see all.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

from fastapi import Request

from bridge.api.errors import Unauthorized
from bridge.config import Settings


@dataclass(frozen=True)
class Caller:
    name: str
    admin: bool

    @property
    def owner_filter(self) -> str | None:
        """The owner to restrict reads to; ``None`` for admins (everything)."""
        return None if self.admin else self.name


ANONYMOUS = Caller("anonymous", admin=True)


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_token() -> tuple[str, str]:
    token = secrets.token_urlsafe(32)
    return token, token_digest(token)


def caller_for(request: Request, settings: Settings) -> Caller:
    if not settings.auth_enabled:
        return ANONYMOUS
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise Unauthorized("a bearer token is required")
    digest = token_digest(token.strip())
    for user in settings.users:
        if hmac.compare_digest(user.token_sha256, digest):
            return Caller(user.name, user.admin)
    raise Unauthorized("the bearer token is not valid")
