"""One attempt of one task, from ``task.json`` to the final ``status.json``.

The steps, each followed by a ``status.json`` write:

1. read and check ``task.json`` (unusable → ``SYSTEM_ERROR``);
2. ``INITIALIZING``: make the attempt's scratch root, create volumes and output
   directories, stage inputs (a failed input → ``SYSTEM_ERROR``, nothing runs), choose
   each executor's container runtime (an unusable explicit runtime → ``SYSTEM_ERROR``);
3. ``RUNNING``: run the executors in order; a non-zero exit ends the sequence with
   ``EXECUTOR_ERROR`` unless the executor has ``ignore_error``, whose exit code is
   recorded and otherwise ignored;
4. upload outputs — also after an executor error, since partial results help
   debugging; a failed or missing output turns an otherwise successful attempt into
   ``SYSTEM_ERROR`` and is only logged after an executor error;
5. ``COMPLETE`` / ``EXECUTOR_ERROR`` / ``SYSTEM_ERROR``, or ``CANCELED`` at any point on
   SIGTERM/SIGINT (outputs are then not uploaded).

An executor's entry in ``executors`` appears when it starts, with ``exit_code: null``
until it ends, so a reader can tell which executor is running.  The scratch directory
is removed at the end unless ``keep_scratch``.
"""

from __future__ import annotations

import logging
import os
import shlex
import shutil
import socket
import tempfile
from dataclasses import dataclass
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

from bridge.agent.cancel import CancelToken
from bridge.agent.claim import EXIT_REFUSED, ClaimRefused, acquire
from bridge.agent.errors import AgentError, StagingError, TaskCanceled, TaskFileError
from bridge.agent.executor import Streams, run_launch, tail
from bridge.agent.fusion_io import FusionSession
from bridge.agent.paths import PathMap, task_prefixes, uses_fusion
from bridge.agent.redact import scrub, secret_values
from bridge.agent.runtime import (
    NONE_NOTE,
    Launch,
    RuntimeKind,
    RuntimeSelector,
    container_name,
    plan_launch,
)
from bridge.agent.spack_env import environment_of, with_image, with_view
from bridge.agent.staging import CopyStager, Stager, prepare_layout, stage_inputs, upload_outputs
from bridge.agent.status import TOKEN_ENV, ApiPoster, StatusReporter, api_token, now
from bridge.agent.task import Executor, RuntimeSettings, Task, parse_runtime, parse_task
from bridge.agent.workdir import WorkDir, executor_log_name, read_task

log = logging.getLogger(__name__)

EXIT_CODES = {"COMPLETE": 0, "EXECUTOR_ERROR": 1, "SYSTEM_ERROR": 2, "CANCELED": 143}
"""The agent's own exit code per final state (143 = 128 + SIGTERM, as batch systems expect)."""


@dataclass(frozen=True)
class AttemptResult:
    state: str
    exit_code: int
    attempt: int


def _agent_version() -> str:
    try:
        return importlib_metadata.version("converged-bridge")
    except importlib_metadata.PackageNotFoundError:
        return "unknown"


def _safe_name(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "-" for c in text)[:60]


class Attempt:
    """Runs one parsed task; see the module docstring."""

    def __init__(
        self,
        wd: WorkDir,
        task: Task,
        runtime: RuntimeSettings,
        attempt: int,
        reporter: StatusReporter,
        token: CancelToken,
        *,
        stager: Stager,
        keep_scratch: bool = False,
    ) -> None:
        self.wd = wd
        self.task = task
        self.runtime = runtime
        self.attempt = attempt
        self.reporter = reporter
        self.token = token
        self.stager = stager
        self.keep_scratch = keep_scratch
        self.scratch: Path | None = None
        self.fusion: FusionSession | None = None
        for ex in task.executors:
            reporter.secrets += secret_values(ex.env)

    def run(self) -> str:
        try:
            self._publish("INITIALIZING")
            return self._run()
        finally:
            if self.fusion is not None:  # never leave a mount behind, whatever happened
                for message in self.fusion.close():
                    log.warning("%s", message)
            if self.scratch is not None and not self.keep_scratch:
                shutil.rmtree(self.scratch, ignore_errors=True)

    def _publish(self, state: str | None = None) -> None:
        with self.token.critical():
            self.reporter.publish(state)

    def _fail(self, message: str) -> str:
        self.reporter.log(message)
        self._publish("SYSTEM_ERROR")
        return "SYSTEM_ERROR"

    def _make_scratch(self) -> PathMap:
        base = Path(
            self.runtime.scratch_dir
            or os.environ.get("BRIDGE_SCRATCH_DIR")
            or tempfile.gettempdir()
        )
        base.mkdir(parents=True, exist_ok=True)
        prefix = f"bridge-{_safe_name(self.task.id)}-a{self.attempt}-"
        self.scratch = Path(tempfile.mkdtemp(prefix=prefix, dir=base))
        paths = PathMap(self.scratch / "root", task_prefixes(self.task))
        paths.root.mkdir()
        self.reporter.set_metadata(scratch_dir=str(self.scratch))
        return paths

    def _run(self) -> str:
        try:
            paths = self._make_scratch()
            prepare_layout(paths, self.task.outputs, self.task.volumes)
            stager = self.stager
            if uses_fusion(self.task) and isinstance(stager, CopyStager):
                assert self.scratch is not None
                settings = self.runtime.extra.get("fusion") or {}
                self.fusion = FusionSession(
                    self.task, paths, self.scratch, settings, self.reporter.log
                )
                self.fusion.open()
                stager = self.fusion.stager()
            stage_inputs(self.task.inputs, paths, stager)
            launches = self._plan(paths)
        except (AgentError, OSError) as err:
            return self._fail(str(err))
        self.token.check()
        self._publish("RUNNING")

        state = "COMPLETE"
        for index, (ex, launch) in enumerate(zip(self.task.executors, launches, strict=True)):
            code = self._run_executor(index, ex, launch, paths)
            self.token.check()
            if code == 0:
                continue
            if ex.ignore_error:
                self.reporter.log(
                    f"executor {index} exited {code}; ignore_error is set, continuing"
                )
                continue
            self.reporter.log(f"executor {index} exited {code}; later executors were not run")
            state = "EXECUTOR_ERROR"
            break

        if self.fusion is not None:  # what executors wrote under /fusion reaches the store
            for message in self.fusion.close():
                self.reporter.log(message)
                if state == "COMPLETE":
                    state = "SYSTEM_ERROR"
            if self.fusion.figures:
                self.reporter.doc["fusion"] = self.fusion.figures
        logs, errors = upload_outputs(self.task.outputs, paths, self.stager)
        self.reporter.doc["outputs"] = [entry.to_json() for entry in logs]
        for message in errors:
            self.reporter.log(message)
        if errors and state == "COMPLETE":
            state = "SYSTEM_ERROR"
        self.token.check()
        self._publish(state)
        return state

    def _plan(self, paths: PathMap) -> list[Launch]:
        """Choose a runtime and build the launch of every executor up front."""
        selector = RuntimeSelector(
            self.runtime.container_runtime, podman_runtime=self.runtime.podman_runtime
        )
        binds = paths.binds(self.task)
        base_env = {k: v for k, v in os.environ.items() if k != TOKEN_ENV}
        launches: list[Launch] = []
        environment = environment_of(self.runtime.extra)  # the software built for the task
        for index, ex in enumerate(self.task.executors):
            ex = with_image(ex, environment)
            kind, notes = selector.choose(ex.image)
            ex = with_view(ex, environment, base_env, kind is not RuntimeKind.NONE)
            for note in notes:
                self.reporter.log(f"executor {index}: {note}")
            if kind is RuntimeKind.NONE:
                if ex.workdir:
                    paths.host(ex.workdir).mkdir(parents=True, exist_ok=True)
                if ex.image:
                    self.reporter.log(
                        f"executor {index}: image {ex.image!r} was not used (runtime none); "
                        f"container paths are mapped under {paths.root}"
                    )
                self.reporter.log(f"executor {index}: {NONE_NOTE}")
            launch = plan_launch(
                kind,
                ex,
                paths=paths,
                binds=binds,
                base_env=base_env,
                name=container_name(self.task.id, self.attempt, index),
                podman_runtime=self.runtime.podman_runtime,
            )
            for note in launch.notes:
                self.reporter.log(f"executor {index}: {note}")
            for directory in launch.make_dirs:
                Path(directory).mkdir(parents=True, exist_ok=True)
            launches.append(launch)
        self.reporter.set_metadata(
            container_runtime=",".join(sorted({launch.runtime.value for launch in launches})),
            image_used="true" if all(launch.image_used for launch in launches) else "false",
        )
        return launches

    def _log_target(self, index: int, stream: str) -> tuple[Path, bool]:
        """Where an executor stream is kept, and whether it must be uploaded after."""
        name = executor_log_name(self.attempt, index, stream)
        local = self.wd.local_path(name)
        if local is not None:
            return local, False
        assert self.scratch is not None
        return self.scratch / "logs" / Path(name).name, True

    def _run_executor(self, index: int, ex: Executor, launch: Launch, paths: PathMap) -> int:
        entry: dict[str, Any] = {"exit_code": None, "start_time": now(), "end_time": None}
        self.reporter.doc["executors"].append(entry)
        self._publish()
        log.info("executor %d: %s", index, scrub(shlex.join(launch.argv), self.reporter.secrets))
        targets = {s: self._log_target(index, s) for s in ("stdout", "stderr")}
        out = paths.host(ex.stdout) if ex.stdout else targets["stdout"][0]
        err = paths.host(ex.stderr) if ex.stderr else targets["stderr"][0]
        streams = Streams(stdin=paths.host(ex.stdin) if ex.stdin else None, stdout=out, stderr=err)
        problem = ""
        usage: dict[str, Any] = {}
        try:
            code = run_launch(launch, streams, self.token, usage=usage)
        except StagingError as failure:  # stdin missing: the executor's input is wrong
            code, problem = 1, str(failure)
            self.reporter.log(f"executor {index}: {problem}")
        entry.update(exit_code=code, end_time=now(), stdout=tail(out), stderr=problem or tail(err))
        entry.update(usage)  # peak_rss_bytes, cpu_time_s
        with self.token.critical():
            for stream, host in (("stdout", out), ("stderr", err)):
                target, upload = targets[stream]
                if host.is_file() and (upload or host != target):
                    try:
                        self.wd.put_file(executor_log_name(self.attempt, index, stream), host)
                    except OSError as failure:
                        self.reporter.log(
                            f"executor {index}: could not keep its {stream}: {failure}"
                        )
            self.reporter.publish()
        return code


def _new_reporter(
    wd: WorkDir, attempt: int, task_id: str, runtime: RuntimeSettings | None
) -> StatusReporter:
    poster = None
    if runtime is not None and runtime.api_url:
        poster = ApiPoster(runtime.api_url, task_id, api_token())
    return StatusReporter(
        wd,
        attempt,
        task_id,
        metadata={
            "host": socket.gethostname(),
            "container_runtime": runtime.container_runtime if runtime else "none",
            "image_used": "false",
            "agent_version": _agent_version(),
        },
        poster=poster,
        secrets=secret_values(os.environ),
    )


def run_attempt(
    wd: WorkDir,
    *,
    attempt: int | None,
    token: CancelToken,
    keep_scratch: bool = False,
    stager: Stager | None = None,
) -> AttemptResult:
    """Run the task in ``wd``; leave a final ``status.json`` whenever ``wd`` is writable."""
    try:
        doc = read_task(wd)
    except FileNotFoundError as err:
        log.error("%s", err)
        return AttemptResult("SYSTEM_ERROR", EXIT_CODES["SYSTEM_ERROR"], attempt or 1)
    except (TaskFileError, OSError) as err:
        log.error("%s", err)
        if isinstance(err, TaskFileError):
            reporter = _new_reporter(wd, attempt or 1, "unknown", None)
            reporter.log(str(err))
            reporter.publish("SYSTEM_ERROR")
        return AttemptResult("SYSTEM_ERROR", EXIT_CODES["SYSTEM_ERROR"], attempt or 1)

    raw_task: dict[str, Any] = doc["task"]
    runtime: RuntimeSettings | None = None
    try:
        runtime = parse_runtime(doc.get("runtime"))
        task = parse_task(raw_task)
    except TaskFileError as err:
        number = attempt or (runtime.attempt if runtime else 1)
        reporter = _new_reporter(wd, number, str(raw_task.get("id") or "unknown"), runtime)
        reporter.log(str(err))
        reporter.publish("SYSTEM_ERROR")
        return AttemptResult("SYSTEM_ERROR", EXIT_CODES["SYSTEM_ERROR"], number)

    number = attempt or runtime.attempt
    try:
        claim = acquire(wd, number)
    except ClaimRefused as err:
        log.error("not running: %s", err)
        return AttemptResult("REFUSED", EXIT_REFUSED, number)
    except OSError as err:
        log.error("cannot claim attempt %d in %s: %s", number, wd.url, err)
        return AttemptResult("SYSTEM_ERROR", EXIT_CODES["SYSTEM_ERROR"], number)
    try:
        return _run_claimed(wd, task, runtime, number, token, keep_scratch, stager)
    finally:
        claim.release()


def _run_claimed(
    wd: WorkDir,
    task: Task,
    runtime: RuntimeSettings,
    number: int,
    token: CancelToken,
    keep_scratch: bool,
    stager: Stager | None,
) -> AttemptResult:
    reporter = _new_reporter(wd, number, task.id, runtime)
    runner = Attempt(
        wd,
        task,
        runtime,
        number,
        reporter,
        token,
        stager=stager or CopyStager(),
        keep_scratch=keep_scratch,
    )
    try:
        state = runner.run()
    except TaskCanceled:
        with token.shielded():
            reporter.log(f"canceled: the agent received {token.signal_name or 'a stop signal'}")
            reporter.publish("CANCELED")
        state = "CANCELED"
    except Exception as err:  # the last line of defence: a bug must still be reported
        log.exception("internal error")
        with token.shielded():
            reporter.log(f"internal agent error: {type(err).__name__}: {err}")
            reporter.publish("SYSTEM_ERROR")
        state = "SYSTEM_ERROR"
    finally:
        if reporter.poster is not None:
            reporter.poster.close()
    if not reporter.last_write_ok:
        log.error("the final status (%s) could not be written to %s", state, wd.url)
        return AttemptResult(state, EXIT_CODES["SYSTEM_ERROR"], number)
    return AttemptResult(state, EXIT_CODES[state], number)
