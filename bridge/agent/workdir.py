"""The task work directory: where the broker and the agent meet.

A work directory is addressed by a URL: a local folder (``/data/work/t1`` or
``file:///data/work/t1``) or an S3 prefix (``s3://bucket/prefix/t1/``).  Both sides only
need four operations on small named files — read, write atomically, upload a local
file, and (locally) a real path to write into while a process runs — so that is the
whole :class:`WorkDir` interface.  Names are relative POSIX paths such as
``attempts/2/status.json``; the layout is documented in ``docs/workdir.md``.

Atomicity: a local write goes to a temporary file in the same directory and is renamed
over the target (``os.replace``), so a reader sees the old or the new ``status.json``,
never half of one.  An S3 ``PutObject`` is atomic by itself.

The broker imports this module (it has no dependency beyond the standard library and,
lazily, boto3): :func:`write_task` when it prepares an attempt, :func:`read_status` when
it reconciles.  The functions are synchronous; an async caller wraps them in
``asyncio.to_thread``.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path, PurePosixPath
from typing import Any, Protocol
from urllib.parse import unquote, urlsplit

from bridge.agent.errors import TaskFileError, WorkDirError
from bridge.agent.s3 import is_s3_error, map_s3_error, s3_client, split_s3_url

TASK_FILE = "task.json"


def status_name(attempt: int) -> str:
    return f"attempts/{attempt}/status.json"


def executor_log_name(attempt: int, index: int, stream: str) -> str:
    """``attempts/<N>/executor-<i>.stdout`` (``stream`` is ``stdout`` or ``stderr``)."""
    return f"attempts/{attempt}/executor-{index}.{stream}"


def agent_log_name(attempt: int) -> str:
    return f"attempts/{attempt}/agent.log"


def _check_name(name: str) -> str:
    pure = PurePosixPath(name)
    if pure.is_absolute() or ".." in pure.parts or not pure.parts:
        raise ValueError(f"work-directory names are relative paths without '..': {name!r}")
    return pure.as_posix()


class WorkDir(Protocol):
    """Small named files under one work-directory URL."""

    url: str

    def read_bytes(self, name: str) -> bytes:
        """The file's content; ``FileNotFoundError`` if it does not exist."""
        ...

    def write_bytes(self, name: str, data: bytes) -> None:
        """Create or atomically replace the file (parents are created)."""
        ...

    def put_file(self, name: str, source: Path) -> None:
        """Copy a local file into the work directory under ``name``."""
        ...

    def create_exclusive(self, name: str, data: bytes) -> bool:
        """Create the file only if it does not exist; ``False`` if it did."""
        ...

    def local_path(self, name: str) -> Path | None:
        """A local path for ``name`` if the work directory is local, else ``None``."""
        ...


class LocalWorkDir:
    """A work directory in a local (or shared, e.g. NFS/Lustre) folder."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.url = str(path)

    def local_path(self, name: str) -> Path:
        return self.path / _check_name(name)

    def read_bytes(self, name: str) -> bytes:
        return self.local_path(name).read_bytes()

    def _publish(self, name: str, data: bytes, place: Callable[[str, Path], None]) -> None:
        """Write ``data`` to a temporary file beside ``name``, then ``place`` it (a rename
        or a hard link): a reader never sees a half-written file."""
        target = self.local_path(name)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            os.chmod(tmp, 0o644)
            place(tmp, target)
        finally:
            with contextlib.suppress(OSError):
                os.unlink(tmp)  # gone already after a rename

    def write_bytes(self, name: str, data: bytes) -> None:
        self._publish(name, data, os.replace)

    def create_exclusive(self, name: str, data: bytes) -> bool:
        try:
            self._publish(name, data, os.link)  # the link fails if the name exists
        except FileExistsError:
            return False
        return True

    def put_file(self, name: str, source: Path) -> None:
        target = self.local_path(name)
        if target.exists() and target.samefile(source):
            return
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)


class S3WorkDir:
    """A work directory under an S3 prefix (``s3://bucket/prefix/``)."""

    def __init__(self, url: str) -> None:
        self.bucket, key = split_s3_url(url)
        self.prefix = key.strip("/")
        self.url = f"s3://{self.bucket}/{self.prefix}/" if self.prefix else f"s3://{self.bucket}/"

    def _key(self, name: str) -> str:
        name = _check_name(name)
        return f"{self.prefix}/{name}" if self.prefix else name

    def local_path(self, name: str) -> None:
        return None

    def read_bytes(self, name: str) -> bytes:
        key = self._key(name)
        try:
            body = s3_client().get_object(Bucket=self.bucket, Key=key)["Body"]
            return bytes(body.read())
        except Exception as err:
            raise self._error(err, key) from err

    def write_bytes(self, name: str, data: bytes) -> None:
        key = self._key(name)
        try:
            s3_client().put_object(Bucket=self.bucket, Key=key, Body=data)
        except Exception as err:
            raise self._error(err, key) from err

    def create_exclusive(self, name: str, data: bytes) -> bool:
        # A conditional put; servers that ignore the condition are caught by the
        # caller's read-back.
        key = self._key(name)
        try:
            s3_client().put_object(Bucket=self.bucket, Key=key, Body=data, IfNoneMatch="*")
        except Exception as err:
            code = getattr(err, "response", {}).get("Error", {}).get("Code", "")
            if code in ("PreconditionFailed", "412", "ConditionalRequestConflict"):
                return False
            raise self._error(err, key) from err
        return True

    def put_file(self, name: str, source: Path) -> None:
        key = self._key(name)
        try:
            s3_client().upload_file(str(source), self.bucket, key)
        except Exception as err:
            raise self._error(err, key) from err

    def _error(self, err: Exception, key: str) -> OSError:
        if not is_s3_error(err):
            return WorkDirError(f"s3://{self.bucket}/{key}: {err}")
        mapped = map_s3_error(err, f"s3://{self.bucket}/{key}")
        if type(mapped) is OSError:
            return WorkDirError(str(mapped))
        return mapped


def open_workdir(url: str) -> WorkDir:
    """The work directory at ``url``: a local path, ``file://`` URL or ``s3://`` prefix."""
    if url.startswith("s3://"):
        return S3WorkDir(url)
    if url.startswith("file://"):
        parts = urlsplit(url)
        if parts.netloc not in ("", "localhost"):
            raise WorkDirError(f"file URL with a remote host is not supported: {url}")
        return LocalWorkDir(Path(unquote(parts.path)))
    if "://" in url:
        raise WorkDirError(f"unsupported work-directory URL: {url}")
    return LocalWorkDir(Path(url).absolute())


def _read_json(wd: WorkDir, name: str) -> Any:
    data = wd.read_bytes(name)
    try:
        return json.loads(data)
    except ValueError as err:
        raise TaskFileError(f"{wd.url} {name}: not valid JSON ({err})") from err


def _dump(doc: Mapping[str, Any]) -> bytes:
    return json.dumps(doc, indent=1, sort_keys=False).encode()


def write_task(wd: WorkDir, task: Mapping[str, Any], runtime: Mapping[str, Any]) -> None:
    """Write ``task.json`` (``task`` is the TES task in its FULL view)."""
    wd.write_bytes(TASK_FILE, _dump({"task": dict(task), "runtime": dict(runtime)}))


def read_task(wd: WorkDir) -> dict[str, Any]:
    """``task.json`` as a dict with ``task`` and ``runtime``; :class:`TaskFileError` if unusable."""
    try:
        doc = _read_json(wd, TASK_FILE)
    except FileNotFoundError as err:
        raise TaskFileError(f"{wd.url}: no {TASK_FILE}") from err
    if not isinstance(doc, dict) or not isinstance(doc.get("task"), dict):
        raise TaskFileError(f"{wd.url} {TASK_FILE}: expected an object with a 'task' object")
    doc.setdefault("runtime", {})
    return doc


def write_status(wd: WorkDir, attempt: int, status: Mapping[str, Any]) -> None:
    """Atomically replace ``attempts/<N>/status.json``."""
    wd.write_bytes(status_name(attempt), _dump(status))


def read_status(wd: WorkDir, attempt: int) -> dict[str, Any] | None:
    """``attempts/<N>/status.json``, or ``None`` if the agent has not written it yet."""
    try:
        doc = _read_json(wd, status_name(attempt))
    except FileNotFoundError:
        return None
    return doc if isinstance(doc, dict) else None


def read_executor_log(wd: WorkDir, attempt: int, index: int, stream: str) -> bytes | None:
    """An executor's whole stdout or stderr, or ``None`` if there is none (yet)."""
    try:
        return wd.read_bytes(executor_log_name(attempt, index, stream))
    except FileNotFoundError:
        return None
