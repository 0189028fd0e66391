"""``/fusion/s3/<bucket>/<key>`` inside every executor, on any node.

When a task names Fusion paths -- in an executor's command, environment, workdir or
streams, or as an input, output or volume path -- the agent makes them real before
the executors start.  ``/fusion`` is then one more mapped container path: it lives at
``<scratch>/root/fusion`` on the host, is rewritten there for runtime ``none`` and
bind-mounted at ``/fusion`` for container runtimes (:mod:`bridge.agent.paths`).

Two ways, chosen by ``runtime.fusion.mode`` (``auto`` by default):

``mount``
    Fusion (FUSE over the object store) is mounted on that directory, in a process of
    its own.  Reads stream with read-ahead, a file written is uploaded when it is
    closed, and a failed upload fails the ``close`` the executor sees.  ``auto``
    mounts whenever :func:`fusion.mount.fuse_available` says FUSE works here.
``stage``
    The fallback where FUSE is not allowed.  Every object (or prefix, for a path
    ending in ``/``, naming a "directory", or a shell pattern's literal directory)
    the task names is downloaded to the same path before the executors run; afterwards every file under ``/fusion/s3``
    that is new or changed is uploaded, whatever the executors' exit codes, as the
    mount would have done when they closed their files.  The task cannot tell the
    two apart except by timing.

``off`` leaves ``/fusion`` an empty local folder.

Inputs: an ``s3://`` input marked ``streamable`` (TES) is, when mounted, a relative
symbolic link into the mount instead of a copy -- valid both on the host and inside
a container, since both see the same tree -- so a tool reading a few blocks of a
large object fetches only those.  Every other input is copied as before.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from bridge.agent.errors import StagingError
from bridge.agent.paths import FUSION_ROOT, PathMap, fusion_refs, literal_dir
from bridge.agent.staging import CopyStager
from bridge.agent.task import Task

log = logging.getLogger(__name__)

MODES = ("auto", "mount", "stage", "off")
DEFAULT_CACHE_BYTES = 2 << 30


class FusionStager(CopyStager):
    """Copy-staging, except streamable ``s3://`` inputs link into a live mount."""

    def __init__(self, mount_dir: Path | None) -> None:
        self.mount_dir = mount_dir

    def fetch(self, url: str, dest: Path, *, directory: bool, streamable: bool = False) -> None:
        if streamable and self.mount_dir is not None and url.startswith("s3://"):
            target = self.mount_dir / "s3" / url.removeprefix("s3://").rstrip("/")
            if not target.exists():
                raise StagingError(f"{url} is not in the object store")
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.symlink_to(os.path.relpath(target, dest.parent))
            return
        super().fetch(url, dest, directory=directory, streamable=streamable)


class FusionSession:
    """Fusion for one attempt: :meth:`open` before the executors, :meth:`close` after."""

    def __init__(
        self,
        task: Task,
        paths: PathMap,
        scratch: Path,
        settings: Mapping[str, Any],
        note: Callable[[str], None],
    ) -> None:
        self.task = task
        self.paths = paths
        self.scratch = scratch
        self.mode = str(settings.get("mode") or "auto")
        if self.mode not in MODES:
            raise StagingError(f"runtime.fusion.mode must be one of {MODES}, got {self.mode!r}")
        self.cache_bytes = int(settings.get("cache_bytes") or DEFAULT_CACHE_BYTES)
        self.note = note
        self.host_root = paths.host(FUSION_ROOT)
        self._handle: Any = None
        self._staged: dict[str, tuple[int, int]] = {}
        self._closed = False
        #: What Fusion did for the task, for its ``status.json`` (``fusion``): the
        #: mount's counters (:data:`fusion.io_stats.FIELDS`), or what staging moved.
        self.figures: dict[str, Any] = {}

    @property
    def mounted(self) -> bool:
        return self._handle is not None

    def stager(self) -> FusionStager:
        return FusionStager(self.host_root if self.mounted else None)

    def open(self) -> None:
        self.host_root.mkdir(parents=True, exist_ok=True)
        if self.mode == "off":
            self.note("fusion: off; /fusion is an empty local folder")
            return
        if self.mode in ("auto", "mount"):
            from fusion.errors import MountError
            from fusion.mount import fuse_available, mount

            ok, why = fuse_available()
            if ok:
                try:
                    self._handle = mount(
                        self.host_root, None, self.scratch / "fusion-cache", self.cache_bytes
                    )
                    self.note(f"fusion: mounted at /fusion (cache {self.cache_bytes >> 20} MiB)")
                    return
                except MountError as err:
                    why = str(err).splitlines()[0]
            if self.mode == "mount":
                raise StagingError(f"fusion: cannot mount: {why}")
            self.note(f"fusion: FUSE not usable here ({why}); staging /fusion paths by copy")
        self._stage_in()

    def close(self) -> list[str]:
        """Flush what the task wrote under ``/fusion``; the problems, if any."""
        if self._handle is not None:
            from fusion.errors import MountError

            handle, self._handle = self._handle, None
            try:
                handle.unmount()
            except MountError as err:
                return [f"fusion: {err}"]
            finally:
                self.figures = {"mode": "mount", **handle.stats()}
            return []
        if self._closed or self.mode == "off":
            return []
        self._closed = True
        return self._stage_out()

    # -- the copy-staging fallback ---------------------------------------------------

    def _store(self) -> Any:
        from fusion.s3_store import S3ObjectStore

        return S3ObjectStore.from_env()

    def _stage_in(self) -> None:
        from fusion.objects import ObjectInfo
        from fusion.stage import parse_url, stage_in, url_for

        store = self._store()
        wanted: list[tuple[str, str]] = []
        for named in fusion_refs(self.task):
            # a shell pattern (/fusion/s3/b/refs/*.txt) stages its literal directory
            ref = literal_dir(named) + "/" if any(c in named for c in "*?[") else named
            url = url_for(ref, FUSION_ROOT)
            bucket, key = parse_url(url)
            host = str(self.paths.host(ref)) + ("/" if ref.endswith("/") else "")
            if key and not key.endswith("/") and store.head(bucket, key) is not None:
                wanted.append((url, host))
                continue
            prefix = key if not key or key.endswith("/") else key + "/"
            if any(isinstance(e, ObjectInfo) for e in _first(store.list(bucket, prefix=prefix))):
                wanted.append((f"s3://{bucket}/{prefix}", host.rstrip("/")))
            else:  # not there yet: an output; let the executor create it
                Path(host).parent.mkdir(parents=True, exist_ok=True)
        try:
            staged = stage_in(store, wanted)
        except Exception as err:
            raise StagingError(f"fusion: staging in failed: {err}") from err
        for item in staged:
            stat = os.stat(item.path)
            self._staged[item.path] = (stat.st_size, stat.st_mtime_ns)
        self.figures = {"mode": "stage", "bytes_read": sum(item.size for item in staged)}
        self.note(f"fusion: staged {len(staged)} object(s) in")

    def _stage_out(self) -> list[str]:
        from fusion.stage import stage_out, url_for

        base = self.host_root / "s3"
        changed: list[tuple[str, str]] = []
        for dirpath, _dirs, files in os.walk(base):
            for name in files:
                path = os.path.join(dirpath, name)
                stat = os.lstat(path)
                if os.path.islink(path) or self._staged.get(path) == (
                    stat.st_size,
                    stat.st_mtime_ns,
                ):
                    continue
                container = self.paths.container(path)
                changed.append((path, url_for(container, FUSION_ROOT)))
        if not changed:
            return []
        try:
            done = stage_out(self._store(), changed)
        except Exception as err:
            return [f"fusion: staging out failed: {err}"]
        self.figures["objects_published"] = len(done)
        self.figures["bytes_published"] = sum(item.size for item in done)
        self.note(f"fusion: staged {len(changed)} file(s) out")
        return []


def _first(entries: Any) -> list[Any]:
    for entry in entries:
        return [entry]
    return []
