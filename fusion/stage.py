"""Copy-staging: the fallback for nodes where FUSE is not allowed, with the same paths.

A task is written against ``/fusion/s3/<bucket>/<key>``. Where Fusion is mounted that
path *is* the object; where it is not (no ``/dev/fuse``, a container without
``CAP_SYS_ADMIN``, a site policy), the agent calls :func:`stage_in` before the task to
copy inputs to exactly those paths on local disk and :func:`stage_out` after it to upload
outputs, so the task cannot tell the difference except in timing.

The mapping is one pair of pure functions: :func:`fusion_path` (``s3://b/k`` to
``<root>/s3/b/k``) and :func:`url_for` (back). ``root`` defaults to ``$FUSION_ROOT`` or
``/fusion``. A URL ending in ``/`` names a prefix and stages every object under it.
Transfers run in parallel, each one itself parallel and ranged for large objects.
"""

from __future__ import annotations

import os
import posixpath
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from fusion.errors import StageError
from fusion.objects import ObjectInfo
from fusion.store import ObjectStore

__all__ = [
    "DEFAULT_ROOT",
    "StagedFile",
    "default_root",
    "fusion_path",
    "parse_url",
    "stage_in",
    "stage_out",
    "url_for",
]

DEFAULT_ROOT = "/fusion"
_SCHEME = "s3"
_PARALLEL_FILES = 8


@dataclass(frozen=True)
class StagedFile:
    """One file copied by :func:`stage_in` or :func:`stage_out`."""

    url: str
    path: str
    size: int


def default_root() -> str:
    return os.environ.get("FUSION_ROOT") or DEFAULT_ROOT


def parse_url(url: str) -> tuple[str, str]:
    """``s3://bucket/key`` to ``(bucket, key)``; the key may be empty or end in ``/``."""
    scheme, sep, rest = url.partition("://")
    if not sep or scheme != _SCHEME:
        raise StageError(f"not an s3:// URL: {url!r}")
    bucket, _, key = rest.partition("/")
    if not bucket or "/" in bucket:
        raise StageError(f"no bucket in {url!r}")
    if any(part in {".", ".."} for part in key.split("/")):
        raise StageError(f"'.' or '..' in key of {url!r}")
    return bucket, key


def fusion_path(url: str, root: str | None = None) -> str:
    """The path a task sees for ``url``: ``s3://b/k`` -> ``/fusion/s3/b/k``."""
    bucket, key = parse_url(url)
    base = posixpath.join(root or default_root(), _SCHEME, bucket)
    return posixpath.join(base, key) if key else base


def url_for(path: str | os.PathLike[str], root: str | None = None) -> str:
    """The URL behind a Fusion path: ``/fusion/s3/b/k`` -> ``s3://b/k``."""
    base = posixpath.normpath(root or default_root())
    text = os.fspath(path)
    norm = posixpath.normpath(text)
    prefix = posixpath.join(base, _SCHEME) + "/"
    if not norm.startswith(prefix):
        raise StageError(f"{text!r} is not under {prefix}")
    rest = norm[len(prefix) :]
    bucket, _, key = rest.partition("/")
    if not bucket:
        raise StageError(f"no bucket in {text!r}")
    if text.endswith("/") and key:
        key += "/"
    return f"{_SCHEME}://{bucket}/{key}"


def _pairs(
    items: Iterable[str | tuple[str, str | os.PathLike[str] | None]], root: str | None
) -> list[tuple[str, str]]:
    out = []
    for item in items:
        if isinstance(item, str):
            url, path = item, None
        else:
            url, path = item[0], item[1]
        out.append((url, os.fspath(path) if path is not None else fusion_path(url, root)))
    return out


def _download(store: ObjectStore, bucket: str, key: str, path: str, size: int) -> StagedFile:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    store.download_file(bucket, key, path)
    return StagedFile(f"s3://{bucket}/{key}", path, size)


def stage_in(
    store: ObjectStore,
    urls_and_paths: Iterable[str | tuple[str, str | os.PathLike[str] | None]],
    root: str | None = None,
) -> list[StagedFile]:
    """Download objects (or every object under a prefix URL ending in ``/``).

    Each item is a URL (staged to its Fusion path) or ``(url, local_path)``.
    Raises ``ObjectNotFound`` when a URL names nothing.
    """
    jobs: list[tuple[str, str, str, int]] = []
    for url, path in _pairs(urls_and_paths, root):
        bucket, key = parse_url(url)
        if key == "" or key.endswith("/"):
            for entry in store.list(bucket, prefix=key):
                if isinstance(entry, ObjectInfo) and not entry.key.endswith("/"):
                    rel = entry.key[len(key) :]
                    jobs.append((bucket, entry.key, os.path.join(path, rel), entry.size))
            Path(path).mkdir(parents=True, exist_ok=True)
        else:
            info = store.head(bucket, key)
            if info is None:
                from fusion.errors import ObjectNotFound

                raise ObjectNotFound(f"{url}: no such object", code="NoSuchKey")
            jobs.append((bucket, key, path, info.size))
    with ThreadPoolExecutor(max_workers=_PARALLEL_FILES) as pool:
        futures = [pool.submit(_download, store, *job) for job in jobs]
        return [f.result() for f in futures]


def _upload(store: ObjectStore, path: str, bucket: str, key: str) -> StagedFile:
    store.upload_file(path, bucket, key)
    return StagedFile(f"s3://{bucket}/{key}", path, os.path.getsize(path))


def stage_out(
    store: ObjectStore,
    paths_and_urls: Iterable[str | tuple[str | os.PathLike[str], str | None]],
    root: str | None = None,
) -> list[StagedFile]:
    """Upload local files (or directory trees) to object storage.

    Each item is a Fusion path (uploaded to the URL it maps to) or
    ``(local_path, url)``; a directory uploads every file under it, keyed by relative path.
    """
    jobs: list[tuple[str, str, str]] = []
    for item in paths_and_urls:
        if isinstance(item, str | os.PathLike):
            path, url = os.fspath(item), url_for(item, root)
        else:
            path = os.fspath(item[0])
            url = item[1] if item[1] is not None else url_for(path, root)
        bucket, key = parse_url(url)
        if os.path.isdir(path):
            base = key if key.endswith("/") or not key else key + "/"
            for dirpath, _dirs, files in os.walk(path):
                for name in sorted(files):
                    full = os.path.join(dirpath, name)
                    rel = os.path.relpath(full, path).replace(os.sep, "/")
                    jobs.append((full, bucket, base + rel))
        elif os.path.exists(path):
            jobs.append((path, bucket, key))
        else:
            raise StageError(f"{path}: no such file to stage out")
    with ThreadPoolExecutor(max_workers=_PARALLEL_FILES) as pool:
        futures = [pool.submit(_upload, store, *job) for job in jobs]
        return [f.result() for f in futures]


def stage_paths(urls: Sequence[str], root: str | None = None) -> list[str]:
    """The Fusion paths of several URLs (what a task is given either way)."""
    return [fusion_path(u, root) for u in urls]
