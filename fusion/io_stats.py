"""What a mount did, counted: the figures a node agent reports for its task.

One :class:`IoStats` per mount, bumped on the read and write paths (from the event
loop and from worker threads alike, so under a lock), and written as one JSON object
when the mount ends (``fusion mount --stats-file``), where whoever started the mount
reads it back (:meth:`fusion.mount.MountHandle.stats`).
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

__all__ = ["FIELDS", "IoStats", "read_stats_file", "write_stats_file"]

#: The counters, in the order they are reported.
FIELDS = (
    "reads",  # read requests answered
    "bytes_read",  # bytes those reads returned
    "writes",  # write requests taken
    "bytes_written",  # bytes those writes carried
    "objects_published",  # files closed (or fsynced) and uploaded
    "bytes_published",  # the size of those objects
    "cache_hits",  # block-cache lookups that found their block (the cache counts them)
    "cache_misses",  # and those that did not
    "gets",  # GETs of object bytes sent to the store (the store counts them)
    "bytes_fetched",  # the bytes they brought: over bytes_read, what read-ahead cost
)


class IoStats:
    """Thread-safe counters of one mount."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts = dict.fromkeys(FIELDS, 0)

    def add(self, **amounts: int) -> None:
        with self._lock:
            for name, amount in amounts.items():
                self._counts[name] += amount

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(self._counts)


def write_stats_file(path: str | os.PathLike[str], counts: dict[str, int]) -> None:
    """Replace ``path`` with the counters in one rename."""
    tmp = Path(f"{os.fspath(path)}.tmp")
    tmp.write_text(json.dumps(counts, sort_keys=True))
    os.replace(tmp, path)


def read_stats_file(path: str | os.PathLike[str]) -> dict[str, int]:
    """The counters a mount wrote; empty when it wrote none (it was killed) or the file
    is not what a mount writes."""
    try:
        doc = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(doc, dict):
        return {}
    return {k: v for k, v in doc.items() if k in FIELDS and isinstance(v, int) and v >= 0}
