"""Byte counts as people read them (``17 B``, ``5.0 GiB``), for the CLI and the dashboard."""

from __future__ import annotations


def human_size(value: int | None) -> str:
    """``value`` bytes in binary units; ``""`` for ``None``."""
    if value is None:
        return ""
    size = float(value)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return str(value)
