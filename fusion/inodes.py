"""The inode table: stable numbers for the paths the kernel knows about.

S3 has no inodes, so Fusion makes them up: a path (bucket + key) gets a number the first
time the kernel looks it up (or sees it in a listing) and keeps it while the kernel
holds a reference - the *lookup count* FUSE asks every file system to keep. ``forget``
brings it down; at zero, and when no handle is open, the inode is dropped, so the table
holds what the kernel caches, not everything ever listed.

Kinds: the mount root, the ``s3`` directory (one per storage scheme), a bucket, a
directory (a key prefix ending in ``/``), a file (an object), a symlink (an object
marked as one). A name whose kind changes (a file replaced by a directory on another
node) gets a new inode: the kernel treats a changed file type on the same inode as a
corrupted inode.
"""

from __future__ import annotations

import enum
import stat
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from fusion.objects import ObjectInfo

if TYPE_CHECKING:
    from fusion.writer import WriteSession

__all__ = ["ROOT_INO", "Inode", "InodeTable", "Kind"]

ROOT_INO = 1  # pyfuse3.ROOT_INODE


class Kind(enum.Enum):
    ROOT = "root"
    SCHEME = "scheme"
    BUCKET = "bucket"
    DIR = "dir"
    FILE = "file"
    SYMLINK = "symlink"

    @property
    def is_dir(self) -> bool:
        return self in (Kind.ROOT, Kind.SCHEME, Kind.BUCKET, Kind.DIR)

    @property
    def mode_bits(self) -> int:
        if self.is_dir:
            return stat.S_IFDIR | 0o755
        if self is Kind.SYMLINK:
            return stat.S_IFLNK | 0o777
        return stat.S_IFREG | 0o644


@dataclass(eq=False)
class Inode:
    """One path the kernel knows. ``key`` ends in ``/`` for directories ("" for a bucket)."""

    ino: int
    kind: Kind
    parent: int
    name: str
    bucket: str = ""
    key: str = ""
    info: ObjectInfo | None = None
    target: str | None = None
    lookups: int = 0
    opens: int = 0
    session: WriteSession | None = None
    validated: float = 0.0
    unlinked: bool = False
    extra: dict[str, object] = field(default_factory=dict)

    @property
    def size(self) -> int:
        if self.session is not None:
            return self.session.size
        if self.kind is Kind.SYMLINK and self.target is not None:
            return len(self.target.encode())
        return self.info.size if self.info is not None else 0

    def child_key(self, name: str) -> str:
        """The key a child named ``name`` of this directory would have."""
        return f"{self.key}{name}"


class InodeTable:
    """Thread-safe mapping of inode numbers and (parent, name) to inodes."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._next = ROOT_INO + 1
        self._inodes: dict[int, Inode] = {ROOT_INO: Inode(ROOT_INO, Kind.ROOT, ROOT_INO, "")}
        self._children: dict[tuple[int, str], int] = {}

    def __len__(self) -> int:
        with self._lock:
            return len(self._inodes)

    def get(self, ino: int) -> Inode | None:
        with self._lock:
            return self._inodes.get(ino)

    def child(self, parent: int, name: str) -> Inode | None:
        with self._lock:
            ino = self._children.get((parent, name))
            return self._inodes.get(ino) if ino is not None else None

    def ensure(
        self,
        parent: Inode,
        name: str,
        kind: Kind,
        bucket: str,
        key: str,
        info: ObjectInfo | None = None,
    ) -> Inode:
        """The inode for ``name`` in ``parent`` with this kind, made if needed."""
        with self._lock:
            ino = self._children.get((parent.ino, name))
            node = self._inodes.get(ino) if ino is not None else None
            if node is not None and node.kind is kind and node.key == key:
                if info is not None:
                    node.info = info
                return node
            if node is not None:
                self._detach(node)
            node = Inode(self._next, kind, parent.ino, name, bucket, key, info)
            self._next += 1
            self._inodes[node.ino] = node
            self._children[(parent.ino, name)] = node.ino
            return node

    def _detach(self, node: Inode) -> None:
        """Remove ``node``'s name; the inode lives on while referenced (lock held)."""
        if self._children.get((node.parent, node.name)) == node.ino:
            del self._children[(node.parent, node.name)]
        node.unlinked = True
        self._maybe_drop(node)

    def detach(self, node: Inode) -> None:
        with self._lock:
            self._detach(node)

    def detach_name(self, parent: int, name: str) -> None:
        with self._lock:
            ino = self._children.get((parent, name))
            if ino is not None and ino in self._inodes:
                self._detach(self._inodes[ino])

    def _maybe_drop(self, node: Inode) -> None:
        if node.ino == ROOT_INO or node.lookups > 0 or node.opens > 0:
            return
        if node.session is not None and node.session.dirty:
            return
        self._inodes.pop(node.ino, None)
        if self._children.get((node.parent, node.name)) == node.ino:
            del self._children[(node.parent, node.name)]

    def move(self, node: Inode, new_parent: Inode, new_name: str, new_key: str) -> None:
        """Rename ``node`` (a file or symlink); a node at the target loses its name."""
        with self._lock:
            other = self._children.get((new_parent.ino, new_name))
            if other is not None and other != node.ino and other in self._inodes:
                self._detach(self._inodes[other])
            if self._children.get((node.parent, node.name)) == node.ino:
                del self._children[(node.parent, node.name)]
            node.parent, node.name, node.key = new_parent.ino, new_name, new_key
            node.unlinked = False
            self._children[(new_parent.ino, new_name)] = node.ino

    def add_lookup(self, node: Inode, count: int = 1) -> None:
        with self._lock:
            node.lookups += count

    def forget(self, ino: int, count: int) -> None:
        with self._lock:
            node = self._inodes.get(ino)
            if node is None:
                return
            node.lookups = max(0, node.lookups - count)
            self._maybe_drop(node)

    def opened(self, node: Inode) -> None:
        with self._lock:
            node.opens += 1

    def released(self, node: Inode) -> None:
        with self._lock:
            node.opens = max(0, node.opens - 1)
            self._maybe_drop(node)

    def children_of(self, parent: int) -> list[Inode]:
        with self._lock:
            return [
                self._inodes[i]
                for (p, _), i in self._children.items()
                if p == parent and i in self._inodes
            ]
