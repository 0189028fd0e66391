"""Moving task inputs in and outputs out.

A :class:`Stager` moves one URL to a local path and one local file to a URL.  The rest
of the agent only sees that Protocol, so copy-staging can later be replaced by the
Fusion mount (where ``s3://b/k`` is readable at ``/fusion/s3/b/k`` and the "download"
becomes a bind or a symlink) without touching the executor or path code.

:class:`CopyStager` understands

* plain absolute paths and ``file://`` URLs (files and directories are copied, never
  linked: an executor may modify its inputs),
* ``s3://bucket/key`` (boto3 managed transfers, parallel multipart for large files; a
  ``DIRECTORY`` input or output is the prefix ``key/``),
* ``http://`` and ``https://`` for inputs only (streamed GET, redirects followed).

Each file is written to a temporary name beside its target and renamed, so an
interrupted transfer never leaves a plausible-looking partial file.

Output rules (TES 1.1): a file output uploads one file to ``url``; a ``DIRECTORY``
output uploads every file under the path to ``url/<relative path>``; a wildcard output
(POSIX glob, ``*``/``?``/``[...]``; a leading ``.`` must be matched explicitly) uploads
each match to ``url/<match with path_prefix removed>`` (a matched directory uploads
recursively).  Output file logs list every uploaded file with its size.

Outputs are read on the host, but a container wrote them: a symbolic link
``/out/x -> /root/.aws/credentials`` made inside a container would name a *host* file
once followed here.  So an output file whose real path is outside the attempt's root
is refused (and logged) instead of uploaded.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Protocol
from urllib.parse import unquote, urlsplit

from bridge.agent.errors import StagingError
from bridge.agent.paths import PathMap, literal_dir
from bridge.agent.redact import redact_url
from bridge.agent.s3 import is_s3_error, map_s3_error, s3_client, split_s3_url
from bridge.agent.task import Input, Output

HTTP_TIMEOUT_S = 60.0


class Stager(Protocol):
    """Moves data between URLs and local paths."""

    def fetch(self, url: str, dest: Path, *, directory: bool, streamable: bool = False) -> None:
        """Put ``url`` (a file, or with ``directory`` a whole tree) at ``dest``.

        ``streamable`` (TES): the task may read it through a streaming mount rather
        than a local copy.
        """
        ...

    def store(self, source: Path, url: str) -> None:
        """Upload the local file ``source`` to ``url``."""
        ...


@dataclass(frozen=True)
class OutputLog:
    url: str
    path: str
    size_bytes: int

    def to_json(self) -> dict[str, str]:
        return {"url": self.url, "path": self.path, "size_bytes": str(self.size_bytes)}


def join_url(base: str, rel: str) -> str:
    rel = rel.strip("/")
    return base if not rel else base.rstrip("/") + "/" + rel


def _local_path(url: str) -> Path | None:
    """The local path a ``file://`` URL or absolute path names, else ``None``."""
    if url.startswith("/"):
        return Path(url)
    if url.startswith("file://"):
        parts = urlsplit(url)
        if parts.netloc not in ("", "localhost"):
            raise StagingError(f"file URL with a remote host is not supported: {url}")
        return Path(unquote(parts.path))
    return None


@contextlib.contextmanager
def _atomic_target(dest: Path) -> Iterator[Path]:
    """A temporary path beside ``dest`` that is renamed to ``dest`` on success."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, dest)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def _safe_join(root: Path, rel: str) -> Path:
    pure = PurePosixPath(rel)
    if pure.is_absolute() or ".." in pure.parts:
        raise StagingError(f"refusing to write outside {root}: {rel!r}")
    return root / pure


@contextlib.contextmanager
def _as_staging_error(url: str) -> Iterator[None]:
    """Any failure of a transfer becomes a :class:`StagingError` (S3 codes mapped first)."""
    try:
        yield
    except StagingError:
        raise
    except Exception as err:
        if is_s3_error(err):
            err = map_s3_error(err, redact_url(url))
        raise StagingError(f"{type(err).__name__}: {err}") from err


class CopyStager:
    """Copy-staging over local files, S3 and HTTP (see the module docstring)."""

    def fetch(self, url: str, dest: Path, *, directory: bool, streamable: bool = False) -> None:
        with _as_staging_error(url):
            local = _local_path(url)
            if local is not None:
                self._fetch_local(local, dest)
            elif url.startswith("s3://"):
                self._fetch_s3(url, dest, directory=directory)
            elif url.startswith(("http://", "https://")):
                if directory:
                    raise StagingError("a DIRECTORY input cannot come from http(s)")
                self._fetch_http(url, dest)
            else:
                raise StagingError("unsupported URL scheme")

    def store(self, source: Path, url: str) -> None:
        with _as_staging_error(url):
            local = _local_path(url)
            if local is not None:
                with _atomic_target(local) as tmp:
                    shutil.copyfile(source, tmp)
            elif url.startswith("s3://"):
                bucket, key = split_s3_url(url)
                if not key or key.endswith("/"):
                    raise StagingError("an S3 output URL needs a key")
                s3_client().upload_file(str(source), bucket, key)
            else:
                raise StagingError("unsupported URL scheme for outputs")

    @staticmethod
    def _fetch_local(source: Path, dest: Path) -> None:
        if source.is_dir():
            shutil.copytree(source, dest, dirs_exist_ok=True)
        else:
            with _atomic_target(dest) as tmp:
                shutil.copyfile(source, tmp)

    @staticmethod
    def _fetch_s3(url: str, dest: Path, *, directory: bool) -> None:
        bucket, key = split_s3_url(url)
        client = s3_client()
        if not directory:
            with _atomic_target(dest) as tmp:
                client.download_file(bucket, key, str(tmp))
            return
        prefix = key.rstrip("/") + "/" if key.strip("/") else ""
        dest.mkdir(parents=True, exist_ok=True)
        pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        for page in pages:
            for obj in page.get("Contents", []):
                rel = obj["Key"][len(prefix) :]
                if not rel or rel.endswith("/"):
                    continue  # "folder" marker objects
                with _atomic_target(_safe_join(dest, rel)) as tmp:
                    client.download_file(bucket, obj["Key"], str(tmp))

    @staticmethod
    def _fetch_http(url: str, dest: Path) -> None:
        import httpx

        with (
            _atomic_target(dest) as tmp,
            httpx.stream("GET", url, follow_redirects=True, timeout=HTTP_TIMEOUT_S) as resp,
        ):
            if resp.status_code >= 400:
                raise StagingError(f"HTTP {resp.status_code} {resp.reason_phrase}")
            with tmp.open("wb") as fh:
                for chunk in resp.iter_bytes(1 << 20):
                    fh.write(chunk)


def stage_inputs(inputs: Sequence[Input], paths: PathMap, stager: Stager) -> None:
    """Put every input at its host path; :class:`StagingError` names the failing one."""
    for item in inputs:
        dest = paths.host(item.path)
        if item.content is not None:
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_text(item.content, encoding="utf-8")
            continue
        assert item.url is not None
        try:
            stager.fetch(item.url, dest, directory=item.directory, streamable=item.streamable)
        except StagingError as err:
            raise StagingError(
                f"input {item.path} from {redact_url(item.url)} could not be fetched: {err}"
            ) from err


def prepare_layout(paths: PathMap, outputs: Sequence[Output], volumes: Sequence[str]) -> None:
    """Create volumes (empty) and the directories outputs will be written into."""
    for volume in volumes:
        paths.host(volume).mkdir(parents=True, exist_ok=True)
    for out in outputs:
        host = paths.host(out.path)
        if out.wildcard:
            paths.host(literal_dir(out.path)).mkdir(parents=True, exist_ok=True)
        elif out.directory:
            host.mkdir(parents=True, exist_ok=True)
        else:
            host.parent.mkdir(parents=True, exist_ok=True)


def _walk_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


def _check_inside(host: Path, paths: PathMap) -> None:
    """Refuse an output that resolves outside the attempt's root (a symlink escape)."""
    real = host.resolve()
    if not real.is_relative_to(paths.root.resolve()):
        raise StagingError(f"{paths.container(host)} links outside the task's files; not uploaded")


def _planned_uploads(out: Output, paths: PathMap) -> list[tuple[Path, str, str]]:
    """(host file, container path, url) for every file one output uploads."""
    plan: list[tuple[Path, str, str]] = []
    if out.wildcard:
        assert out.path_prefix is not None
        pattern = glob.escape(str(paths.root)) + out.path
        prefix = out.path_prefix.rstrip("/")
        for match in sorted(glob.glob(pattern)):
            cpath = paths.container(match)
            if cpath != prefix and not cpath.startswith(prefix + "/"):
                raise StagingError(f"{cpath} does not start with path_prefix {out.path_prefix}")
            base = join_url(out.url, cpath[len(prefix) :])
            host = Path(match)
            if host.is_dir():
                for f in _walk_files(host):
                    rel = f.relative_to(host).as_posix()
                    plan.append((f, paths.container(f), join_url(base, rel)))
            elif host.is_file():
                plan.append((host, cpath, base))
        return plan
    host = paths.host(out.path)
    if host.is_dir():
        for f in _walk_files(host):
            plan.append((f, paths.container(f), join_url(out.url, f.relative_to(host).as_posix())))
    elif host.is_file():
        plan.append((host, out.path, out.url))
    else:
        raise StagingError("not created by the executors")
    return plan


def upload_outputs(
    outputs: Sequence[Output], paths: PathMap, stager: Stager
) -> tuple[list[OutputLog], list[str]]:
    """Upload every output; return the file logs and one message per failed output.

    A failed output does not stop the others: the caller decides what the failures
    mean for the task's state.
    """
    logs: list[OutputLog] = []
    errors: list[str] = []
    for out in outputs:
        try:
            plan = _planned_uploads(out, paths)
        except (StagingError, OSError) as err:
            errors.append(f"output {out.path}: {err}")
            continue
        for host, cpath, url in plan:
            try:
                _check_inside(host, paths)
                size = host.stat().st_size
                stager.store(host, url)
            except (StagingError, OSError) as err:
                errors.append(f"output {cpath} → {redact_url(url)}: {err}")
                continue
            logs.append(OutputLog(url=url, path=cpath, size_bytes=size))
    return logs, errors
