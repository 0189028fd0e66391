"""How a symbolic link is stored: a small object whose body is the target.

Metadata marks it: ``fusion-type: symlink`` (Fusion's own mark) and ``mode`` with the
``S_IFLNK`` bit (the mark s3fs-fuse uses), so a link made through Fusion on one node is a
link on every other node - and on nodes that mount the bucket with s3fs. Either mark is
recognised when reading.
"""

from __future__ import annotations

import stat
from collections.abc import Mapping

__all__ = ["MAX_TARGET", "SYMLINK_METADATA", "is_symlink"]

#: PATH_MAX - 1: the longest target Linux accepts. Objects larger than this are never
#: symlinks, so listings only need to look closer at objects this small.
MAX_TARGET = 4095

SYMLINK_METADATA = {"fusion-type": "symlink", "mode": str(stat.S_IFLNK | 0o777)}


def is_symlink(metadata: Mapping[str, str]) -> bool:
    if metadata.get("fusion-type") == "symlink":
        return True
    mode = metadata.get("mode")
    if mode and mode.isdigit():
        return stat.S_ISLNK(int(mode))
    return False
