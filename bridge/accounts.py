"""Users and API tokens kept in the database (beside the ``[[users]]`` of the config).

A token is shown once, when it is made; the database keeps only its SHA-256 digest,
an optional expiry and a revoked flag.  Every request looks its token up again, so a
revocation (from any process sharing the database) holds from the next request on.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import and_, insert, or_, select, update
from sqlalchemy.engine import Engine

from bridge.models import ApiToken, User
from bridge.store import as_utc, utcnow

USERS = User.__table__  # type: ignore[attr-defined]
TOKENS = ApiToken.__table__  # type: ignore[attr-defined]
ROLES = ("admin", "user")
LOCAL_ADMIN = "admin"


class AccountError(ValueError):
    """A user or token request that cannot be honoured; the message says why."""


@dataclass(frozen=True)
class Account:
    name: str
    admin: bool


@dataclass(frozen=True)
class TokenInfo:
    id: int
    user: str
    label: str
    created_time: datetime
    expires_time: datetime | None
    revoked: bool


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class Accounts:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def add_user(self, name: str, role: str = "user") -> None:
        if role not in ROLES:
            raise AccountError(f"role must be one of {', '.join(ROLES)}; got {role!r}")
        if not name or len(name) > 128 or not name.replace("-", "").replace("_", "").isalnum():
            raise AccountError(f"user name {name!r}: letters, digits, '-' and '_' only")
        with self.engine.begin() as conn:
            if conn.execute(select(USERS.c.name).where(USERS.c.name == name)).first():
                raise AccountError(f"user {name!r} exists already")
            conn.execute(insert(USERS).values(name=name, role=role, created_time=utcnow()))

    def users(self) -> list[tuple[str, str]]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(USERS.c.name, USERS.c.role).order_by(USERS.c.name)).all()
        return [(r.name, r.role) for r in rows]

    def any_user(self) -> bool:
        with self.engine.connect() as conn:
            return conn.execute(select(USERS.c.name).limit(1)).first() is not None

    def create_token(
        self, user: str, *, expires_in: timedelta | None = None, label: str = ""
    ) -> tuple[int, str]:
        """A new token for ``user``: ``(token id, token)``; the token is not stored."""
        token = secrets.token_urlsafe(32)
        now = utcnow()
        with self.engine.begin() as conn:
            if not conn.execute(select(USERS.c.name).where(USERS.c.name == user)).first():
                raise AccountError(f"no user {user!r}; add it first (bridge users add)")
            token_id = conn.execute(
                insert(TOKENS)
                .values(
                    user_name=user,
                    token_sha256=token_digest(token),
                    label=label,
                    created_time=now,
                    expires_time=now + expires_in if expires_in else None,
                    revoked=False,
                )
                .returning(TOKENS.c.id)
            ).scalar_one()
        return int(token_id), token

    def revoke(self, token_id: int) -> None:
        with self.engine.begin() as conn:
            done = conn.execute(
                update(TOKENS).where(TOKENS.c.id == token_id).values(revoked=True)
            ).rowcount
        if not done:
            raise AccountError(f"no token with id {token_id}")

    def tokens(self, user: str | None = None) -> list[TokenInfo]:
        query = select(TOKENS).order_by(TOKENS.c.id)
        if user is not None:
            query = query.where(TOKENS.c.user_name == user)
        with self.engine.connect() as conn:
            rows = conn.execute(query).all()
        return [
            TokenInfo(
                r.id,
                r.user_name,
                r.label,
                as_utc(r.created_time) or utcnow(),
                as_utc(r.expires_time),
                bool(r.revoked),
            )
            for r in rows
        ]

    def lookup(self, digest: str) -> Account | None:
        """The account a token digest belongs to, if the token is live."""
        now = utcnow()
        query = (
            select(USERS.c.name, USERS.c.role)
            .join(TOKENS, TOKENS.c.user_name == USERS.c.name)
            .where(
                and_(
                    TOKENS.c.token_sha256 == digest,
                    TOKENS.c.revoked.is_(False),
                    or_(TOKENS.c.expires_time.is_(None), TOKENS.c.expires_time > now),
                )
            )
        )
        with self.engine.connect() as conn:
            row = conn.execute(query).first()
        return Account(row.name, row.role == "admin") if row else None

    def ensure_local_admin(self) -> str | None:
        """Make the local admin and a token for it if no user exists; the token or None."""
        if self.any_user():
            return None
        self.add_user(LOCAL_ADMIN, "admin")
        return self.create_token(LOCAL_ADMIN, label="local admin")[1]
