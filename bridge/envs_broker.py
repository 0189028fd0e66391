"""The broker's side of software environments: build once per key, wait, reuse.

When a placed task asks for software (``bridge.spack``, ``bridge.pip``, ``bridge.apt``),
:meth:`EnvBroker.admit` turns its parameters and the placement's CPU target into an
:class:`~spack_envs.requests.EnvRequest` and looks its content key up in the
``env_builds`` table:

- **ready**: the task goes on, its ``task.json`` runtime carrying the environment
  (the image to run in, or the Spack view to activate);
- **building**: the task moves to INITIALIZING with "waiting for build …" as its
  reason and no attempt; every task wanting that key waits on the same build;
- **absent**: this broker inserts the row (the key is the primary key, so exactly one
  broker wins) and starts the build in a worker thread; the task waits as above;
- **failed**, a malformed request, or a target the placement's CPUs cannot run: the
  task fails with the reason (the build log's tail for a failed build).

Waiting tasks are looked at on every reconcile pass (:meth:`EnvBroker.check_waiting`):
when their build is ready they go back to QUEUED and are placed again (now finding the
build); when it failed they fail.  Cancelling a waiting task needs nothing special: it
has no job.  A finished build is announced to ``envs.webhook_url`` when configured.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import statistics
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx

from bridge import envs_build
from bridge.config import Settings, TargetConfig
from bridge.envs_store import BuildRow, EnvBuildStore
from bridge.states import InvalidTransition, State
from bridge.store import Changes, TaskRow, TaskStore, utcnow
from schedulers.base import TargetInfo
from spack_envs import targets
from spack_envs.containers import compatibility_problem
from spack_envs.requests import (
    BadEnvRequest,
    EnvRequest,
    request_from_parameters,
    wants_environment,
)
from spack_envs.spack import CommandRunner

log = logging.getLogger(__name__)

WAITING_PREFIX = "waiting for build"


@dataclass(frozen=True)
class Resolution:
    """What :meth:`EnvBroker.resolve` found for one task on one target."""

    status: str  # none | ready | waiting | failed
    reason: str = ""
    key: str = ""
    runtime: dict[str, Any] | None = None


class EnvBroker:
    def __init__(
        self,
        settings: Settings,
        store: TaskStore,
        *,
        builder_id: str | None = None,
        runner_for: Callable[[TargetConfig | None], CommandRunner | None] | None = None,
        max_parallel_builds: int = 2,
    ) -> None:
        self.settings = settings
        self.config = settings.envs
        self.store = store
        self.builds = EnvBuildStore(store.engine)
        self.builder_id = builder_id or settings.effective_broker_id
        self.runner_for = runner_for or default_runner
        self.builds_dir = Path(self.config.builds_dir or settings.data_dir / "envs")
        self._pool = ThreadPoolExecutor(max_parallel_builds, thread_name_prefix="bridge-env")
        self._running: set[str] = set()
        self._lock = threading.Lock()
        self._spack_version: str | None = None
        self.on_finish: Callable[[str], None] | None = None
        #: format -> (typical build seconds, when it was computed)
        self._typical: dict[str, tuple[float, float]] = {}

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    @property
    def spack_version(self) -> str:
        if self._spack_version is None:
            self._spack_version = envs_build.spack_version(self.config)
        return self._spack_version

    # -- requests -------------------------------------------------------------------

    def request_for(
        self,
        document: dict[str, Any],
        info: TargetInfo | None,
        target: TargetConfig | None = None,
    ) -> EnvRequest | None:
        """The task's request on a target; :class:`BadEnvRequest` if malformed.

        Built for the CPUs the target's probe reported, else those its configuration
        declares (``routing.arch``, as the router reads them), else this host's."""
        params = (document.get("resources") or {}).get("backend_parameters") or {}
        if not wants_environment(params):  # most tasks: nothing to look up
            return None
        declared = target.routing.arch if target is not None else None
        host = (info.microarchitecture if info else None) or declared or _host_target()
        specs = params.get("bridge.spack")
        return request_from_parameters(
            params,
            placement_target=host,
            base_image=self.config.base_image,
            spack_version=self.spack_version if specs else "",
        )

    def resolve(self, task: TaskRow, target: TargetConfig, info: TargetInfo | None) -> Resolution:
        try:
            request = self.request_for(task.document, info, target)
        except (BadEnvRequest, targets.UnknownTarget) as err:
            return Resolution("failed", f"bad environment request: {err}")
        if request is None:
            return Resolution("none")
        if info is not None and info.microarchitecture:
            problem = compatibility_problem(request.target, [info.microarchitecture])
            if problem:
                return Resolution("failed", f"cannot build for target {target.name}: {problem}")
        elif problem := compatibility_problem(request.target, []):
            return Resolution("failed", problem)
        return self._resolve_request(request, target)

    def _resolve_request(self, request: EnvRequest, target: TargetConfig) -> Resolution:
        key = request.key
        existing = self.builds.get(key)  # the common case: built already, a plain read
        if existing is not None and existing.status != "building":
            return self._from_row(existing, request)
        row, created = self.builds.claim(
            key,
            target=request.target,
            fmt=request.format,
            request=request.canonical(),
            description=request.describe(),
            builder=self.builder_id,
        )
        if created or (
            row.status == "building"
            and self._stale(row)
            and self.builds.take_over(key, self.builder_id, row.updated_time)
        ):
            self._start(request, target)
        return self._from_row(row if not created else None, request)

    def _stale(self, row: BuildRow) -> bool:
        """A build nobody is running: ours before a restart, or silent past the timeout."""
        with self._lock:
            if row.key in self._running:
                return False
        if row.builder == self.builder_id:
            return True
        limit = timedelta(seconds=self.config.build_timeout_s)
        return utcnow() - row.updated_time > limit

    def _from_row(self, row: BuildRow | None, request: EnvRequest) -> Resolution:
        key = request.key
        if row is None or row.status == "building":
            return Resolution("waiting", f"{WAITING_PREFIX} {key} ({request.describe()})", key=key)
        if row.status == "ready":
            return Resolution(
                "ready", key=key, runtime={"environment": {**row.artifact, "key": key}}
            )
        return Resolution(
            "failed", f"build {key} ({row.description}) failed:\n{row.log_tail()}", key=key
        )

    def build_waits(
        self,
        document: dict[str, Any],
        candidates: Sequence[tuple[TargetConfig, TargetInfo | None]],
        known: dict[str, float | None] | None = None,
    ) -> dict[str, float]:
        """For routing: seconds until the task's software is ready on each target whose
        build is not ready (absent, running, failed or abandoned); targets with a ready
        build, and every target of a task that needs no software, are left out.

        One table read per distinct build (targets with the same CPUs share one; pass
        the same ``known`` dict for every task of a dispatch turn to share them there). A
        build not started is expected to take as long as the median of the last ready
        builds of its format (``envs.build_estimate_s`` before there are any); a running
        one, what is left of that (at least a minute).
        """
        params = (document.get("resources") or {}).get("backend_parameters") or {}
        if not wants_environment(params):
            return {}
        waits: dict[str, float] = {}
        by_key = known if known is not None else {}
        for target, info in candidates:
            try:
                request = self.request_for(document, info, target)
            except (BadEnvRequest, targets.UnknownTarget):
                return {}  # refused with its reason at admission, wherever it goes
            if request is None:
                return {}
            if request.key not in by_key:
                by_key[request.key] = self._wait_for(request)
            wait = by_key[request.key]
            if wait is not None:
                waits[target.name] = wait
        return waits

    def _wait_for(self, request: EnvRequest) -> float | None:
        row = self.builds.get(request.key)
        if row is not None and row.status == "ready":
            return None
        if row is not None and row.status == "failed":
            return self.config.build_timeout_s  # placed there, the task fails with the log
        estimate = self._typical_build_s(request.format)
        if row is not None and row.status == "building" and not self._stale(row):
            elapsed = (utcnow() - row.created_time).total_seconds()
            return max(60.0, estimate - elapsed)
        return estimate

    def _typical_build_s(self, fmt: str) -> float:
        """Median duration of the last ready builds of a format (cached a minute)."""
        now = time.monotonic()
        cached = self._typical.get(fmt)
        if cached is not None and now - cached[1] < 60:
            return cached[0]
        took = self.builds.ready_durations(fmt)
        typical = statistics.median(took) if took else self.config.build_estimate_s
        self._typical[fmt] = (typical, now)
        return typical

    # -- the broker's calls -----------------------------------------------------------

    def admit(
        self, task: TaskRow, target: TargetConfig, info: TargetInfo | None
    ) -> dict[str, Any] | None:
        """Runtime additions for a task about to be placed, or None when it must not run
        now (it was moved to INITIALIZING to wait, or failed)."""
        res = self.resolve(task, target, info)
        if res.status == "none":
            return {}
        if res.status == "ready":
            return res.runtime or {}
        with contextlib.suppress(InvalidTransition):
            if res.status == "waiting":
                self.store.transition(
                    task.id, State.INITIALIZING, res.reason, placement_reason=res.reason
                )
            else:
                self.store.transition(task.id, State.SYSTEM_ERROR, res.reason)
        return None

    def check_waiting(self, task: TaskRow, changes: Changes) -> None:
        """A task waiting in INITIALIZING without an attempt: move it on when its build
        has finished."""
        if not task.placement_reason.startswith(WAITING_PREFIX):
            return
        key = task.placement_reason[len(WAITING_PREFIX) :].split()[0]
        row = self.builds.get(key)
        if row is None:
            changes.move(task.id, State.QUEUED, f"build {key} vanished; placing again")
        elif row.status == "ready":
            changes.move(task.id, State.QUEUED, f"build {key} is ready; placing the task")
        elif row.status == "failed":
            changes.move(
                task.id,
                State.SYSTEM_ERROR,
                f"build {key} ({row.description}) failed:\n{row.log_tail()}",
            )
        elif self._stale(row):
            # Its builder is gone: send the task back to placement, which restarts it.
            changes.move(task.id, State.QUEUED, f"build {key} was abandoned; placing again")

    # -- building ---------------------------------------------------------------------

    def _start(self, request: EnvRequest, target: TargetConfig) -> None:
        with self._lock:
            if request.key in self._running:
                return
            self._running.add(request.key)
        self._pool.submit(self._build, request, target)

    def _build(self, request: EnvRequest, target: TargetConfig) -> None:
        key = request.key
        log.info("building %s: %s", key, request.describe())
        try:
            artifact = envs_build.build(
                request, self.config, self.builds_dir / key, self.runner_for(target)
            )
            log_text = _read(self.builds_dir / key / "build.log")
            self.builds.finish(key, "ready", artifact, log_text)
            status = "ready"
        except envs_build.BuildFailed as err:
            self.builds.finish(key, "failed", {}, f"{err.log}\n{err}")
            status = "failed"
        except Exception as err:  # a bug must still end the build, not strand its tasks
            log.exception("build %s crashed", key)
            self.builds.finish(key, "failed", {}, f"internal error: {type(err).__name__}: {err}")
            status = "failed"
        finally:
            with self._lock:
                self._running.discard(key)
        log.info("build %s %s", key, status)
        self._announce(key)
        if self.on_finish is not None:
            self.on_finish(key)

    def _announce(self, key: str) -> None:
        url = self.config.webhook_url
        row = self.builds.get(key)
        if not url or row is None:
            return
        body = {
            "key": key,
            "status": row.status,
            "target": row.target,
            "format": row.format,
            "description": row.description,
            "artifact": row.artifact,
            "log_tail": row.log_tail() if row.status == "failed" else "",
        }
        try:
            httpx.post(url, json=body, timeout=5.0)
        except httpx.HTTPError as err:
            log.warning("webhook %s for build %s failed: %s", url, key, err)

    def wait_idle(self, timeout: float) -> bool:
        """For tests and the CLI: whether every build started here ended in time."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if not self._running:
                    return True
            time.sleep(0.1)
        return False


def default_runner(target: TargetConfig | None) -> CommandRunner | None:
    """Builds for a Slurm target run as a job step on its nodes; others run here."""
    if target is not None and target.kind == "slurm" and target.setting("runner") == "local":
        return envs_build.SlurmRunner(partition=target.setting("partition"), env=target.env)
    return None


@functools.cache
def _host_target() -> str:
    return targets.host_microarchitecture()


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""
