"""A buffer filled by one GET while readers wait for the bytes they need.

A GET of a span streams in at one connection's bandwidth. A reader that needs only the
first megabyte of it should not wait for the rest: :meth:`Progress.wait` returns as soon
as the bytes up to a point have arrived, while the same GET goes on filling the buffer
with what follows - the neighbours of a random read come over the connection that
brought the read, with no request of their own.
"""

from __future__ import annotations

import threading

__all__ = ["Progress"]


class Progress:
    """``size`` bytes arriving in order; thread-safe."""

    def __init__(self, size: int) -> None:
        self.buffer = bytearray(size)
        self.size = size
        self.received = 0
        self._error: BaseException | None = None
        self._done = False
        self._cond = threading.Condition()

    def advanced(self, received: int) -> None:
        """The bytes ``[0, received)`` are in the buffer."""
        with self._cond:
            self.received = received
            self._cond.notify_all()

    def fill(self, data: bytes) -> None:
        """All the bytes at once (from a store that cannot stream them)."""
        self.buffer[: len(data)] = data
        self.advanced(len(data))

    def finished(self, error: BaseException | None = None) -> None:
        with self._cond:
            self._done = True
            self._error = error
            self._cond.notify_all()

    def wait(self, upto: int) -> memoryview:
        """The buffer once ``[0, upto)`` has arrived; the GET's error if it failed first."""
        with self._cond:
            while self.received < upto and not self._done:
                self._cond.wait()
            if self.received < upto:
                raise self._error or EOFError(f"{self.received} of {upto} bytes arrived")
        return memoryview(self.buffer)
