"""Browsing the storage the broker uses: its work bucket(s) or directories.

Only places named in the configuration are listed (the broker's work URL and each
target's), and only below them; a path that leaves them is refused.  Previews are
limited to small files that decode as text.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bridge.agent.s3 import s3_client, split_s3_url
from bridge.config import Settings

PREVIEW_BYTES = 64 * 1024
MAX_ENTRIES = 500


class StorageError(ValueError):
    """A location outside the configured roots, or one that cannot be read."""


@dataclass(frozen=True)
class Entry:
    name: str
    path: str  # the full location to browse or preview
    is_dir: bool
    size: int | None


def roots(settings: Settings) -> list[str]:
    found = [settings.effective_work_url]
    found += [t.work_url for t in settings.targets if t.work_url]
    out: list[str] = []
    for url in found:
        url = url.rstrip("/")
        if url not in out:
            out.append(url)
    return out


def _inside(location: str, settings: Settings) -> str:
    location = location.rstrip("/")
    for root in roots(settings):
        if location == root or location.startswith(root + "/"):
            if not location.startswith("s3://"):
                resolved = Path(location).resolve()
                if (
                    resolved != Path(root).resolve()
                    and Path(root).resolve() not in resolved.parents
                ):
                    break
            return location
    raise StorageError(f"{location!r} is not under a storage location the broker uses")


def listing(settings: Settings, location: str) -> tuple[list[Entry], int]:
    """Entries directly under ``location`` and the total size of the files among them."""
    location = _inside(location, settings)
    entries: list[Entry] = []
    if location.startswith("s3://"):
        bucket, key = split_s3_url(location)
        prefix = key.rstrip("/") + "/" if key else ""
        try:
            page = s3_client().list_objects_v2(
                Bucket=bucket, Prefix=prefix, Delimiter="/", MaxKeys=MAX_ENTRIES
            )
        except Exception as err:  # botocore errors: unreachable, missing bucket, denied
            raise StorageError(f"cannot list {location}: {err}") from err
        for p in page.get("CommonPrefixes", []):
            name = p["Prefix"][len(prefix) :].rstrip("/")
            entries.append(Entry(name, f"s3://{bucket}/{p['Prefix'].rstrip('/')}", True, None))
        for obj in page.get("Contents", []):
            name = obj["Key"][len(prefix) :]
            if name:
                entries.append(Entry(name, f"s3://{bucket}/{obj['Key']}", False, int(obj["Size"])))
    else:
        path = Path(location)
        if not path.is_dir():
            raise StorageError(f"{location} is not a directory")
        for child in sorted(path.iterdir())[:MAX_ENTRIES]:
            is_dir = child.is_dir()
            size = None if is_dir else child.stat().st_size
            entries.append(Entry(child.name, str(child), is_dir, size))
    return entries, sum(e.size or 0 for e in entries)


def preview(settings: Settings, location: str) -> tuple[str | None, int]:
    """The text of a small file (None if too large or binary) and its size."""
    location = _inside(location, settings)
    data: bytes
    size: int
    if location.startswith("s3://"):
        bucket, key = split_s3_url(location)
        try:
            client: Any = s3_client()
            head = client.head_object(Bucket=bucket, Key=key)
            size = int(head["ContentLength"])
            if size > PREVIEW_BYTES:
                return None, size
            data = client.get_object(Bucket=bucket, Key=key)["Body"].read()
        except Exception as err:  # botocore errors
            raise StorageError(f"cannot read {location}: {err}") from err
    else:
        path = Path(location)
        if not path.is_file():
            raise StorageError(f"{location} is not a file")
        size = path.stat().st_size
        if size > PREVIEW_BYTES:
            return None, size
        data = path.read_bytes()
    try:
        return data.decode("utf-8"), size
    except UnicodeDecodeError:
        return None, size
