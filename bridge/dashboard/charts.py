"""Charts as inline SVG drawn on the server: no chart library, no script.

Each function returns markup (already escaped) for a ``|safe`` slot in a template
or for the self-contained report.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from html import escape

STATE_COLOURS = {
    "COMPLETE": "#2e7d32",
    "EXECUTOR_ERROR": "#c62828",
    "SYSTEM_ERROR": "#8e24aa",
    "CANCELED": "#757575",
    "CANCELING": "#9e9e9e",
    "RUNNING": "#1565c0",
    "INITIALIZING": "#4fc3f7",
    "QUEUED": "#ffb300",
    "PREEMPTED": "#ef6c00",
}


def colour(state: str) -> str:
    return STATE_COLOURS.get(state, "#607d8b")


def stacked_bars(
    labels: list[str], series: list[tuple[str, str, list[float]]], *, height: int = 160
) -> str:
    """Vertical stacked bars: one per label; ``series`` is ``(name, colour, values)``."""
    width = max(320, 34 * len(labels) + 40)
    top = max([sum(vals) for vals in zip(*(s[2] for s in series), strict=True)] or [0]) or 1
    plot_h = height - 40
    bar_w = (width - 40) / max(1, len(labels))
    parts = [
        f'<svg class="chart" role="img" viewBox="0 0 {width} {height}" '
        f'width="{width}" height="{height}" xmlns="http://www.w3.org/2000/svg">',
        f'<text x="2" y="12" font-size="10">{top:g}</text>',
        f'<line x1="30" y1="{plot_h + 10}" x2="{width}" y2="{plot_h + 10}" stroke="#999"/>',
    ]
    for i, label in enumerate(labels):
        x = 34 + i * bar_w
        y = plot_h + 10.0
        for name, fill, values in series:
            h = values[i] / top * plot_h
            if h > 0:
                y -= h
                parts.append(
                    f'<rect x="{x:.1f}" y="{y:.1f}" width="{bar_w * 0.8:.1f}" height="{h:.1f}" '
                    f'fill="{fill}"><title>{escape(label)} {escape(name)}: {values[i]:g}</title></rect>'
                )
        parts.append(f'<text x="{x:.1f}" y="{height - 14}" font-size="9">{escape(label)}</text>')
    legend_x = 34
    for name, fill, _ in series:
        parts.append(
            f'<rect x="{legend_x}" y="{height - 9}" width="8" height="8" fill="{fill}"/>'
            f'<text x="{legend_x + 11}" y="{height - 1}" font-size="9">{escape(name)}</text>'
        )
        legend_x += 12 + 7 * len(name)
    parts.append("</svg>")
    return "".join(parts)


def horizontal_bars(rows: list[tuple[str, float, str]], unit: str = "") -> str:
    """One bar per ``(label, value, colour)``, scaled to the largest."""
    if not rows:
        return "<p class=muted>nothing to show</p>"
    width, row_h, label_w = 720, 16, 220
    top = max(v for _, v, _ in rows) or 1
    height = row_h * len(rows) + 4
    parts = [
        f'<svg class="chart" role="img" viewBox="0 0 {width} {height}" width="{width}" '
        f'height="{height}" xmlns="http://www.w3.org/2000/svg">'
    ]
    for i, (label, value, fill) in enumerate(rows):
        y = i * row_h + 2
        w = value / top * (width - label_w - 80)
        parts.append(
            f'<text x="0" y="{y + 11}" font-size="10">{escape(label[:34])}</text>'
            f'<rect x="{label_w}" y="{y}" width="{w:.1f}" height="{row_h - 4}" fill="{fill}"/>'
            f'<text x="{label_w + w + 4:.1f}" y="{y + 11}" font-size="10">{value:.4g}{escape(unit)}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


@dataclass(frozen=True)
class Span:
    label: str
    start: datetime
    end: datetime
    state: str
    href: str | None = None


def gantt(spans: list[Span]) -> str:
    """A Gantt-style timeline: one row per span, on a shared time axis."""
    if not spans:
        return "<p class=muted>no attempt has started yet</p>"
    width, row_h, label_w = 900, 14, 200
    t0 = min(s.start for s in spans)
    t1 = max(max(s.end for s in spans), t0)
    total = max((t1 - t0).total_seconds(), 1e-3)
    plot_w = width - label_w - 10
    height = row_h * len(spans) + 22
    parts = [
        f'<svg class="chart gantt" role="img" viewBox="0 0 {width} {height}" width="{width}" '
        f'height="{height}" xmlns="http://www.w3.org/2000/svg">'
    ]
    for i, span in enumerate(spans):
        y = i * row_h + 2
        x = label_w + (span.start - t0).total_seconds() / total * plot_w
        w = max(1.5, (span.end - span.start).total_seconds() / total * plot_w)
        secs = (span.end - span.start).total_seconds()
        label = escape(span.label[:30])
        text = f'<a href="{escape(span.href)}">{label}</a>' if span.href else label
        parts.append(
            f'<text x="0" y="{y + 10}" font-size="10">{text}</text>'
            f'<rect x="{x:.1f}" y="{y}" width="{w:.1f}" height="{row_h - 3}" '
            f'fill="{colour(span.state)}"><title>{label}: {escape(span.state)}, '
            f"{secs:.1f} s</title></rect>"
        )
    axis_y = row_h * len(spans) + 14
    parts.append(
        f'<text x="{label_w}" y="{axis_y}" font-size="9">{escape(t0.strftime("%H:%M:%S"))}</text>'
        f'<text x="{width - 60}" y="{axis_y}" font-size="9">+{total:.0f} s</text>'
    )
    parts.append("</svg>")
    return "".join(parts)
