"""Mount Fusion in a background process and unmount it: the API the node agent calls.

The file system runs in its own process (``python -m fusion.cli mount ...``), never in the
caller's: a FUSE server that shares a process with code touching the mount deadlocks as
soon as that code blocks on the mount while holding the GIL or an event loop. The parent
waits until the child reports ready (it has mounted, answered the kernel's INIT and
tuned the mount's read-ahead) or dies, in which case the child's log tail is in the
raised :class:`~fusion.errors.MountError`.

Credentials travel to the child in its environment (the standard AWS variables), never
on its command line, where ``ps`` would show them.

:meth:`MountHandle.unmount` sends SIGTERM - the child unmounts cleanly, finishing nothing
half-way: open files that were not closed are not uploaded - and falls back to
``fusermount3 -u -z`` if the child does not exit in time.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

from fusion.errors import MountError
from fusion.io_stats import read_stats_file
from fusion.objects import StoreConfig

__all__ = ["MountHandle", "MountOptions", "fuse_available", "is_mounted", "mount"]


def fuse_available() -> tuple[bool, str]:
    """Whether this process can mount FUSE here; the reason when it cannot."""
    if not os.path.exists("/dev/fuse"):
        return False, "/dev/fuse does not exist (no FUSE kernel module or not exposed)"
    try:
        fd = os.open("/dev/fuse", os.O_RDWR)
    except OSError as err:
        return False, f"/dev/fuse cannot be opened: {err.strerror}"
    os.close(fd)
    if shutil.which("fusermount3") is None:
        return False, "fusermount3 is not installed (Debian package fuse3)"
    try:
        import pyfuse3  # noqa: F401
    except ImportError as err:
        return False, f"pyfuse3 is not importable ({err}); install the 'fuse' extra"
    return True, ""


def is_mounted(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a mount point (``False`` also when it is a dead FUSE mount)."""
    try:
        return os.path.ismount(path)
    except OSError:
        return False


@dataclass(frozen=True)
class MountOptions:
    """Tunables of a mount beyond the store and cache; defaults suit most nodes."""

    metadata_ttl: float = 1.0
    part_size: int = 8 * 1024 * 1024
    read_part_size: int = 16 * 1024 * 1024
    max_window: int = 128 * 1024 * 1024
    random_span: int = 16 * 1024 * 1024
    fetch_threads: int = 32
    upload_threads: int = 16
    allow_other: bool = False
    debug: bool = False
    extra_args: tuple[str, ...] = field(default_factory=tuple)

    def to_args(self) -> list[str]:
        args = [
            "--metadata-ttl", str(self.metadata_ttl),
            "--part-size", str(self.part_size),
            "--read-part-size", str(self.read_part_size),
            "--max-window", str(self.max_window),
            "--random-span", str(self.random_span),
            "--fetch-threads", str(self.fetch_threads),
            "--upload-threads", str(self.upload_threads),
        ]  # fmt: skip
        if self.allow_other:
            args.append("--allow-other")
        if self.debug:
            args.append("--debug")
        return args + list(self.extra_args)


class MountHandle:
    """A running mount; :meth:`unmount` ends it. Usable as a context manager."""

    def __init__(
        self,
        mountpoint: str,
        process: subprocess.Popen[bytes],
        log_path: str,
        stats_path: str | None = None,
    ) -> None:
        self.mountpoint = mountpoint
        self.process = process
        self.log_path = log_path
        self.stats_path = stats_path

    def stats(self) -> dict[str, int]:
        """What the mount did (:data:`fusion.io_stats.FIELDS`), once it has ended;
        empty before, or when it was killed."""
        if self.stats_path is None or self.process.poll() is None:
            return {}
        return read_stats_file(self.stats_path)

    @property
    def pid(self) -> int:
        return self.process.pid

    def log_tail(self, limit: int = 4000) -> str:
        try:
            return Path(self.log_path).read_text(errors="replace")[-limit:]
        except OSError:
            return ""

    def alive(self) -> bool:
        return self.process.poll() is None

    def unmount(self, timeout: float = 60.0) -> None:
        """Unmount and wait for the mount process to exit."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                _lazy_unmount(self.mountpoint)
                self.process.kill()
                self.process.wait(timeout=10)
        if is_mounted(self.mountpoint):
            _lazy_unmount(self.mountpoint)
        if self.process.returncode not in (0, None, -signal.SIGTERM):
            raise MountError(
                f"fusion mount at {self.mountpoint} exited with {self.process.returncode}:\n"
                f"{self.log_tail()}"
            )

    def __enter__(self) -> MountHandle:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.unmount()


def _lazy_unmount(mountpoint: str) -> None:
    subprocess.run(
        ["fusermount3", "-u", "-z", mountpoint],
        check=False,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def mount(
    mountpoint: str | os.PathLike[str],
    store_config: StoreConfig | None,
    cache_dir: str | os.PathLike[str],
    cache_bytes: int,
    read_only: bool = False,
    options: MountOptions | None = None,
    timeout: float = 30.0,
) -> MountHandle:
    """Mount Fusion at ``mountpoint`` in a child process and wait until it is ready.

    ``store_config=None`` uses the standard AWS variables of this process. Objects are
    then at ``<mountpoint>/s3/<bucket>/<key>``.
    """
    ok, reason = fuse_available()
    if not ok:
        raise MountError(f"FUSE is not available: {reason}")
    mnt = os.path.abspath(os.fspath(mountpoint))
    cache = os.path.abspath(os.fspath(cache_dir))
    try:
        os.makedirs(mnt, exist_ok=True)
        os.makedirs(cache, exist_ok=True)
    except OSError as err:
        raise MountError(f"cannot use {mnt} / {cache}: {err}") from err
    if is_mounted(mnt):
        raise MountError(f"{mnt} is already a mount point")
    env = dict(os.environ)
    if store_config is not None:
        for var in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL_S3"):
            env.pop(var, None)
        env.update(store_config.to_env())
    argv = [
        sys.executable, "-m", "fusion.cli", "mount", mnt,
        "--cache-dir", cache,
        "--cache-size", str(cache_bytes),
    ]  # fmt: skip
    ready = os.path.join(cache, "ready")
    if os.path.exists(ready):
        os.unlink(ready)
    argv += ["--ready-file", ready]
    stats = os.path.join(cache, "stats.json")
    with contextlib.suppress(FileNotFoundError):
        os.unlink(stats)
    argv += ["--stats-file", stats]
    if read_only:
        argv.append("--read-only")
    argv += (options or MountOptions()).to_args()
    log_path = os.path.join(cache, "mount.log")
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(argv, env=env, stdout=log, stderr=log, start_new_session=True)
    handle = MountHandle(mnt, proc, log_path, stats)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise MountError(f"fusion mount exited with {proc.returncode}:\n{handle.log_tail()}")
        if os.path.exists(ready) and is_mounted(mnt):
            return handle
        time.sleep(0.02)
    handle.unmount(timeout=5)
    raise MountError(f"fusion mount at {mnt} not ready after {timeout}s:\n{handle.log_tail()}")
