"""The ``sandbox`` runtime: an executor in its own mount namespace, built with bubblewrap.

Where no container engine can run a task's image, running the executor on the host
(runtime ``none``) only rewrites the container paths the agent can *see* (argv, env,
workdir, stdio).  A job script shipped as an input that does ``mkdir /tmp/x`` or a
config file naming ``/data/in.txt`` still reaches the host's real ``/tmp`` or
``/data``: two tasks collide, and a task writes where it should not.  ``bwrap``
(Debian ``bubblewrap``, unprivileged where user namespaces are enabled) instead gives
the executor a file system in which the container paths simply exist:

* the root is a fresh ``tmpfs``, made read-only once it is set up; the *source root*
  (the host's ``/``, or the task's image when it is a root file-system directory, as
  for charliecloud) is exposed read-only entry by entry;
* every declared container path (inputs, outputs, volumes, ``/fusion``) and ``/tmp``
  is bound read-write from the attempt's host tree (``<scratch>/root``, which mirrors
  the container's ``/`` for every runtime): so ``/tmp`` is private to the attempt and
  what the executor writes there is on disk, not in memory;
* the working directory is the executor's ``workdir`` (``/`` without one);
* ``/dev`` and ``/proc`` are new (``--unshare-pid``), the host's ``/sys`` is read-only.

A bind needs an existing mount point, and none can be made on a read-only mount
(bubblewrap 0.8 has no overlay).  So each declared path is bound at its *mount point*:
its shallowest ancestor that the source root lacks (``/data`` for ``/data/in.txt`` on a
host without ``/data``), or the path itself if the source root has it.  The
directories above a missing mount point are recreated on the tmpfs, their other
entries bound read-only one by one, so ``/opt/work`` can appear next to the image's
``/opt/conda``.

Cancellation: bwrap runs in the executor's process group (no ``--new-session``), so
the agent's group signal reaches every process; ``--die-with-parent`` and the PID
namespace make the kernel kill whatever is left inside (also processes that left the
group with ``setsid``) as soon as bwrap's outer process dies.

Everything here except :class:`RootDir`'s reads of the source root is pure.
"""

from __future__ import annotations

import os
import posixpath
import stat
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

from bridge.agent.errors import RuntimeUnavailable
from bridge.agent.paths import Bind, PathMap

BWRAP = "bwrap"
SPECIAL_TOP = frozenset({"proc", "dev", "sys", "tmp"})
"""Top-level names the sandbox makes itself, whatever the source root holds."""
FORBIDDEN_TOP = frozenset({"proc", "dev", "sys"})
"""Top-level names a declared container path may not live under."""

EntryKind = Literal["dir", "file", "symlink", "other"]


class SandboxError(RuntimeUnavailable):
    """The task's paths cannot be laid out in a sandbox (an attempt ``SYSTEM_ERROR``)."""


class RootTree(Protocol):
    """Read access to the source root, in container paths."""

    def kind(self, path: str) -> EntryKind | None: ...
    def children(self, path: str) -> list[str]: ...
    def readlink(self, path: str) -> str: ...
    def host(self, path: str) -> str: ...


class RootDir:
    """A directory on this node seen as a root file system (``/`` or an image)."""

    def __init__(self, top: str | Path) -> None:
        self.top = str(top)

    def host(self, path: str) -> str:
        if self.top == "/":
            return path
        return self.top.rstrip("/") + path if path != "/" else self.top

    def kind(self, path: str) -> EntryKind | None:
        try:
            mode = os.lstat(self.host(path)).st_mode
        except OSError:
            return None
        if stat.S_ISLNK(mode):
            return "symlink"
        if stat.S_ISDIR(mode):
            return "dir"
        return "file" if stat.S_ISREG(mode) else "other"

    def children(self, path: str) -> list[str]:
        try:
            return sorted(os.listdir(self.host(path)))
        except OSError as err:
            raise SandboxError(
                f"sandbox: cannot list {path} of the root file system: {err.strerror}"
            ) from err

    def readlink(self, path: str) -> str:
        return os.readlink(self.host(path))


@dataclass(frozen=True)
class SandboxPlan:
    """The bwrap argv and the host paths it binds (directories to create first)."""

    argv: list[str]
    binds: list[Bind]


def _ancestors(path: str) -> list[str]:
    """``/a/b/c`` → ``["/a", "/a/b"]`` (strict ancestors, without ``/``)."""
    parts = path.strip("/").split("/")
    return ["/" + "/".join(parts[:i]) for i in range(1, len(parts))]


def _collapse(paths: Iterable[str]) -> list[str]:
    kept: list[str] = []
    for path in sorted(set(paths)):
        if not any(path == k or path.startswith(k + "/") for k in kept):
            kept.append(path)
    return kept


def mount_point(path: str, root: RootTree) -> str:
    """Where ``path`` is bound: its shallowest ancestor the root lacks, else itself."""
    for prefix in [*_ancestors(path), path]:
        kind = root.kind(prefix)
        if kind is None:
            return prefix
        if kind == "symlink":
            raise SandboxError(
                f"sandbox: container path {path}: {prefix} is a symbolic link in the root"
            )
        if kind != "dir" and prefix != path:
            raise SandboxError(
                f"sandbox: container path {path}: {prefix} is not a directory in the root"
            )
    return path


def _expose(directory: str, root: RootTree, mounts: set[str], recreate: set[str]) -> list[str]:
    """Arguments that show ``directory``'s entries read-only, minus the mount points."""
    argv: list[str] = []
    for name in root.children(directory):
        path = posixpath.join(directory, name)
        if (directory == "/" and name in SPECIAL_TOP) or path in mounts:
            continue
        if path in recreate:
            argv += ["--dir", path, *_expose(path, root, mounts, recreate)]
            continue
        if root.kind(path) == "symlink":
            argv += ["--symlink", root.readlink(path), path]
        else:
            argv += ["--ro-bind-try", root.host(path), path]
    return argv


def bwrap_argv(
    command: Sequence[str],
    *,
    root: RootTree,
    paths: PathMap,
    wanted: Iterable[str],
    workdir: str | None,
) -> SandboxPlan:
    """The ``bwrap`` command line running ``command`` (see the module docstring).

    ``wanted`` are the container paths to bind from ``paths`` (normally
    :meth:`PathMap.binds`); ``/tmp`` is always one, and so is ``workdir`` unless the
    root has it.  Raises :class:`SandboxError` for a path the sandbox cannot lay out
    (under ``/proc``, ``/dev`` or ``/sys``, or through a symbolic link of the root).
    """
    want = {posixpath.normpath(p) for p in wanted} | {"/tmp"}
    if workdir and root.kind(workdir) != "dir":
        want.add(workdir)
    want.discard("/")
    for path in want:
        top = path.strip("/").split("/")[0]
        if top in FORBIDDEN_TOP:
            raise SandboxError(f"sandbox: container path {path} is under /{top}")
    mounts = _collapse(mount_point(p, root) for p in _collapse(want))
    recreate = {a for m in mounts if root.kind(m) is None for a in _ancestors(m)}
    argv = [BWRAP, "--unshare-pid", "--die-with-parent", "--tmpfs", "/"]
    argv += _expose("/", root, set(mounts), recreate)
    argv += ["--dev", "/dev", "--proc", "/proc", "--ro-bind-try", "/sys", "/sys"]
    binds = [Bind(str(paths.host(m)), m) for m in mounts]
    for bind in binds:
        argv += ["--bind", bind.host, bind.container]
    argv += ["--remount-ro", "/", "--chdir", workdir or "/", "--", *command]
    return SandboxPlan(argv, binds)


def probe_argv() -> list[str]:
    """A tiny sandbox that succeeds where user (or root) namespaces, a PID namespace,
    ``/proc`` and a read-only remount can be made: what :func:`bwrap_argv` needs."""
    return [
        *(BWRAP, "--unshare-pid", "--die-with-parent", "--ro-bind", "/", "/"),
        *("--dev", "/dev", "--proc", "/proc", "--tmpfs", "/tmp", "--remount-ro", "/"),
        *("--", "true"),
    ]
