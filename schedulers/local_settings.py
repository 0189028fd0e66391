"""Settings of a ``local`` target (jobs are processes on the broker's machine)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class LocalSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: Literal["local"] = "local"
    max_parallel: int | None = Field(default=None, ge=1)  # jobs running at once
