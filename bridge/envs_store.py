"""The ``env_builds`` table: one row per content key, shared by every broker.

The primary key *is* the request's content key, so "one build per key" is enforced by
the database: :meth:`EnvBuildStore.claim` inserts the row and whoever's insert wins
runs the build; everyone else reads the row and waits on it.
"""

from __future__ import annotations

import builtins
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import delete, insert, select, update
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError

from bridge.models import EnvBuild
from bridge.store import as_utc, utcnow

B = EnvBuild.__table__  # type: ignore[attr-defined]
LOG_LIMIT = 200_000  # characters of build log kept in the row (the tail)


@dataclass(frozen=True)
class BuildRow:
    key: str
    target: str
    format: str
    status: str
    request: dict[str, Any]
    description: str
    artifact: dict[str, Any]
    log: str
    builder: str
    created_time: datetime
    updated_time: datetime

    def log_tail(self, lines: int = 10) -> str:
        return "\n".join(self.log.strip().splitlines()[-lines:])


def _row(r: Any) -> BuildRow:
    return BuildRow(
        key=r.key,
        target=r.target,
        format=r.format,
        status=r.status,
        request=json.loads(r.request or "{}"),
        description=r.description,
        artifact=json.loads(r.artifact or "{}"),
        log=r.log,
        builder=r.builder,
        created_time=as_utc(r.created_time) or utcnow(),
        updated_time=as_utc(r.updated_time) or utcnow(),
    )


class EnvBuildStore:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def get(self, key: str) -> BuildRow | None:
        with self.engine.connect() as conn:
            r = conn.execute(select(B).where(B.c.key == key)).first()
        return _row(r) if r is not None else None

    def list(self, limit: int = 200) -> list[BuildRow]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(B).order_by(B.c.updated_time.desc()).limit(limit))
            return [_row(r) for r in rows]

    def ready_durations(self, fmt: str, limit: int = 50) -> builtins.list[float]:
        """Seconds from claim to finish of the last ``limit`` ready builds of a format
        (times only: no logs read)."""
        query = (
            select(B.c.created_time, B.c.updated_time)
            .where(B.c.status == "ready", B.c.format == fmt)
            .order_by(B.c.updated_time.desc())
            .limit(limit)
        )
        with self.engine.connect() as conn:
            rows = conn.execute(query).all()
        # Both times come from the same column type, so they subtract as they are.
        return [(r.updated_time - r.created_time).total_seconds() for r in rows]

    def claim(
        self,
        key: str,
        *,
        target: str,
        fmt: str,
        request: dict[str, Any],
        description: str,
        builder: str,
    ) -> tuple[BuildRow, bool]:
        """The row for ``key``, and whether this call created it (and so must build)."""
        now = utcnow()
        try:
            with self.engine.begin() as conn:
                conn.execute(
                    insert(B).values(
                        key=key,
                        target=target,
                        format=fmt,
                        status="building",
                        request=json.dumps(request, sort_keys=True),
                        description=description,
                        artifact="{}",
                        log="",
                        builder=builder,
                        created_time=now,
                        updated_time=now,
                    )
                )
        except IntegrityError:
            row = self.get(key)
            if row is None:  # deleted between the two statements: try once more
                return self.claim(
                    key,
                    target=target,
                    fmt=fmt,
                    request=request,
                    description=description,
                    builder=builder,
                )
            return row, False
        row = self.get(key)
        assert row is not None
        return row, True

    def take_over(self, key: str, builder: str, expected_updated: datetime) -> bool:
        """Become the builder of a stale or failed row (only if nobody else did first)."""
        with self.engine.begin() as conn:
            done = conn.execute(
                update(B)
                .where(B.c.key == key, B.c.updated_time == expected_updated)
                .values(status="building", builder=builder, log="", updated_time=utcnow())
            ).rowcount
        return bool(done)

    def append_log(self, key: str, text: str) -> None:
        row = self.get(key)
        if row is None:
            return
        with self.engine.begin() as conn:
            conn.execute(
                update(B)
                .where(B.c.key == key)
                .values(log=(row.log + text)[-LOG_LIMIT:], updated_time=utcnow())
            )

    def finish(self, key: str, status: str, artifact: dict[str, Any], log: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                update(B)
                .where(B.c.key == key)
                .values(
                    status=status,
                    artifact=json.dumps(artifact, sort_keys=True),
                    log=log[-LOG_LIMIT:],
                    updated_time=utcnow(),
                )
            )

    def delete(self, key: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(delete(B).where(B.c.key == key))
