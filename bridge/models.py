"""Database tables (sqlmodel).  The only module that defines SQL schema.

A task's submitted TES document is kept whole as JSON (``Task.document``); the
columns beside it are what the broker and the list queries filter on.  Tags are
also denormalised into :class:`TaskTag` so ``tag_key``/``tag_value`` filters use an
index.  ``seq`` is a monotonically increasing integer used for keyset paging, so a
page costs the same at task 100,000 as at task 1.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Column, Index, Text
from sqlmodel import Field, SQLModel


class Task(SQLModel, table=True):
    __tablename__ = "tasks"
    __table_args__ = (
        Index("ix_tasks_state_seq", "state", "seq"),
        Index("ix_tasks_owner_seq", "owner", "seq"),
        Index("ix_tasks_lease", "state", "lease_expires"),
        Index("ix_tasks_state_updated", "state", "updated_time"),
        Index("ix_tasks_state_target", "state", "target"),
        Index("ix_tasks_owner_state_updated", "owner", "state", "updated_time"),
    )

    seq: int | None = Field(default=None, primary_key=True)
    id: str = Field(index=True, unique=True, max_length=64)
    owner: str = Field(default="anonymous", max_length=128)
    name: str = Field(default="", index=True, max_length=1024)
    state: str = Field(default="QUEUED", max_length=32)
    document: str = Field(sa_column=Column(Text, nullable=False))
    creation_time: datetime
    updated_time: datetime
    target: str | None = Field(default=None, max_length=128)
    placement_reason: str = Field(default="", sa_column=Column(Text, nullable=False, default=""))
    attempt: int = Field(default=0)
    work_url: str | None = Field(default=None, max_length=2048)
    lease_owner: str | None = Field(default=None, max_length=256)
    lease_expires: datetime | None = Field(default=None)


class TaskTag(SQLModel, table=True):
    __tablename__ = "task_tags"
    __table_args__ = (Index("ix_task_tags_key_value_seq", "key", "value", "task_seq"),)

    task_seq: int = Field(foreign_key="tasks.seq", primary_key=True)
    key: str = Field(primary_key=True, max_length=256)
    value: str = Field(default="", max_length=1024)


class TaskEvent(SQLModel, table=True):
    __tablename__ = "task_events"

    id: int | None = Field(default=None, primary_key=True)
    task_seq: int = Field(foreign_key="tasks.seq", index=True)
    at: datetime
    from_state: str = Field(max_length=32)
    to_state: str = Field(max_length=32)
    reason: str = Field(default="", sa_column=Column(Text, nullable=False, default=""))


class Attempt(SQLModel, table=True):
    """One try at running a task: a TES ``logs[]`` entry."""

    __tablename__ = "attempts"

    id: int | None = Field(default=None, primary_key=True)
    task_seq: int = Field(foreign_key="tasks.seq", index=True)
    number: int
    target: str = Field(max_length=128)
    backend_job_id: str | None = Field(default=None, max_length=256)
    submitted_time: datetime | None = None
    start_time: datetime | None = None
    end_time: datetime | None = None
    # The agent's status.json as last read (executor logs, outputs, system logs).
    status: str = Field(default="{}", sa_column=Column(Text, nullable=False, default="{}"))
    finished: bool = Field(default=False)
    # placed -> preparing -> submitted -> finished (bridge/attempts.py)
    phase: str = Field(default="placed", max_length=16, index=True)
    placed_time: datetime | None = None
    reason: str = Field(default="", sa_column=Column(Text, nullable=False, default=""))
    estimated_cost: float | None = None
    outcome: str = Field(default="", max_length=32)


class Target(SQLModel, table=True):
    """What each configured target last reported about itself."""

    __tablename__ = "targets"

    name: str = Field(primary_key=True, max_length=128)
    kind: str = Field(max_length=32)
    info: str = Field(default="{}", sa_column=Column(Text, nullable=False, default="{}"))
    updated_time: datetime


class User(SQLModel, table=True):
    """A person who may call the API or log in to the dashboard."""

    __tablename__ = "users"

    name: str = Field(primary_key=True, max_length=128)
    role: str = Field(default="user", max_length=16)  # "admin" or "user"
    created_time: datetime


class ApiToken(SQLModel, table=True):
    """A bearer token of a user, kept only as its SHA-256 digest."""

    __tablename__ = "api_tokens"

    id: int | None = Field(default=None, primary_key=True)
    user_name: str = Field(foreign_key="users.name", index=True, max_length=128)
    token_sha256: str = Field(index=True, unique=True, max_length=64)
    label: str = Field(default="", max_length=256)
    created_time: datetime
    expires_time: datetime | None = None
    revoked: bool = Field(default=False)


class EnvBuild(SQLModel, table=True):
    """One software environment build, shared by every task wanting its content key."""

    __tablename__ = "env_builds"

    key: str = Field(primary_key=True, max_length=64)
    target: str = Field(max_length=64)
    format: str = Field(max_length=16)
    status: str = Field(default="building", max_length=16)  # building | ready | failed
    request: str = Field(default="{}", sa_column=Column(Text, nullable=False, default="{}"))
    description: str = Field(default="", sa_column=Column(Text, nullable=False, default=""))
    # image reference@digest, or the view path and spack.lock hash, as JSON
    artifact: str = Field(default="{}", sa_column=Column(Text, nullable=False, default="{}"))
    log: str = Field(default="", sa_column=Column(Text, nullable=False, default=""))
    builder: str = Field(default="", max_length=256)  # the broker running the build
    created_time: datetime
    updated_time: datetime
