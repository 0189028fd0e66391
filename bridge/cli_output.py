"""How CLI commands print: plain lines for people, one JSON document for scripts.

``--json`` prints exactly one JSON document (stable keys, sorted) on stdout and
nothing else; ``--watch`` repeats a view until its subject stops changing (a task that
finished) or the user interrupts; a progress line appears on stderr only when stderr
is a terminal, so piped output is byte-for-byte what a script expects.
"""

from __future__ import annotations

import json
import signal
import sys
import threading
import time
from collections.abc import Callable
from typing import Any, TextIO

CLEAR = "\x1b[H\x1b[2J"


def emit_json(doc: Any, stream: TextIO | None = None, *, compact: bool = False) -> None:
    out = stream or sys.stdout
    if compact:
        out.write(json.dumps(doc, sort_keys=True, separators=(",", ":")) + "\n")
    else:
        out.write(json.dumps(doc, sort_keys=True, indent=2) + "\n")
    out.flush()


def watch(
    render: Callable[[], tuple[Any, str]],
    *,
    as_json: bool,
    interval: float,
    done: Callable[[Any], bool] = lambda _: False,
) -> int:
    """Call ``render`` (-> data, text) every ``interval`` seconds until ``done(data)``
    or Ctrl-C.

    On a terminal the text view is redrawn in place; piped, each refresh is appended
    (a JSON line per refresh with ``--json``). Ctrl-C (SIGINT) ends the watch after the
    refresh in progress: raised as ``KeyboardInterrupt`` in the middle of an HTTP
    request it could leave the client's connection pool locked, and closing the client
    at exit then hung."""
    tty = sys.stdout.isatty()
    interrupted = threading.Event()
    in_main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGINT, lambda *_: interrupted.set()) if in_main else None
    try:
        while not interrupted.is_set():
            data, text = render()
            if as_json:
                emit_json(data, compact=True)
            else:
                sys.stdout.write((CLEAR if tty else "") + text + ("" if tty else "\n"))
                sys.stdout.flush()
            if done(data):
                return 0
            interrupted.wait(interval)
        return 0
    except KeyboardInterrupt:
        return 0
    finally:
        if in_main and previous is not None:
            signal.signal(signal.SIGINT, previous)


class Progress:
    """A one-line, self-overwriting status on stderr -- only when stderr is a terminal."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stderr
        self.enabled = self.stream.isatty()
        self.started = time.monotonic()
        self._width = 0

    def update(self, text: str) -> None:
        if not self.enabled:
            return
        line = f"{text}  {time.monotonic() - self.started:6.1f} s"
        self.stream.write("\r" + line.ljust(self._width))
        self.stream.flush()
        self._width = len(line)

    def close(self) -> None:
        if self.enabled and self._width:
            self.stream.write("\r" + " " * self._width + "\r")
            self.stream.flush()
