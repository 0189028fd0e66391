"""Reads at random offsets: one round trip per miss, and the neighbourhood kept.

A read that is not part of a sequential stream (see :mod:`fusion.prefetch`) used to be
one ranged GET of exactly its bytes: a 1 MiB read paid first-byte latency plus 1 MiB at
one connection's bandwidth, and the next read nearby paid it all again. Here a miss:

* is split into one GET per block it touches (1 MiB blocks), sent in parallel, so a
  large read costs one round trip at the bandwidth of several connections;
* also fetches the blocks that follow it, up to a span of ``factor`` times the read (at
  most ``MAX_SPAN``), in larger pieces and in the background - the read waits only for
  its own blocks. Readers at random offsets often read records near each other, and a
  later read that lands in the span is a cache hit. The factor adapts: it doubles (up
  to ``MAX_FACTOR``) whenever a read is served by blocks fetched earlier, and halves
  whenever a read misses outright - so uniformly scattered reads soon stop paying for
  neighbours nobody reads (at factor 0 a miss fetches exactly its bytes, and every
  ``PROBE``-th miss tries a span again);
* keeps every fetched block in the disk block cache (bounded, LRU), even for objects
  too large to be cached while streaming;
* never starts or grows a sequential window: a random pattern stays random.

Without a block cache (capacity 0) nothing fetched could be kept: a miss then fetches
exactly its bytes, still one parallel GET per block it touches.

Blocks in flight are shared: a read that needs a block another read already asked for
waits for that GET instead of sending its own. The background part of the span is only
fetched while the mount's shared :class:`~fusion.prefetch.ReadBudget` allows.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Protocol

__all__ = ["FACTOR", "MAX_FACTOR", "MAX_SPAN", "RandomReader"]

#: A miss of n bytes fetches up to factor * n bytes from where it starts; the factor
#: starts here ...
FACTOR = 4
#: ... adapts between 0 and this ...
MAX_FACTOR = 16
#: ... and the span never exceeds this.
MAX_SPAN = 16 * 1024 * 1024
#: At factor 0, every PROBE-th miss fetches a span again, to notice locality returning.
PROBE = 16
#: Blocks per background GET (the read's own blocks are one GET each).
PIECE_BLOCKS = 4


class BlockSource(Protocol):
    size: int
    block_size: int

    @property
    def keeps_blocks(self) -> bool: ...

    def fetch(self, start: int, end: int) -> bytes: ...

    def cached_block(self, block: int) -> bytes | None: ...

    def has_block(self, block: int) -> bool: ...

    def fetch_keep(self, start: int, end: int) -> bytes: ...


class _Budget(Protocol):
    def take(self, n: int, force: bool = False) -> bool: ...

    def give(self, n: int) -> None: ...


Submit = Callable[[Callable[[], bytes]], "Future[bytes]"]


class RandomReader:
    """Random-offset reads of one object version; thread-safe."""

    def __init__(self, source: BlockSource, submit: Submit, budget: _Budget) -> None:
        self.source = source
        self.submit = submit
        self.budget = budget
        self.bs = source.block_size
        # Re-entrant: a GET that completes at once runs its callback inside _start,
        # which holds the lock already.
        self._lock = threading.RLock()
        #: block -> (first block of its GET, the GET)
        self._inflight: dict[int, tuple[int, Future[bytes]]] = {}
        self.gets = 0
        self.hits = 0
        self.factor = FACTOR
        self._misses_at_zero = 0

    def _start(self, first: int, last: int, background: bool) -> Future[bytes] | None:
        """One GET for blocks ``first..last`` (lock held); ``None`` if the budget for
        background fetches is spent.  The GET may already be done (and gone from
        ``_inflight``) when this returns: callers use the future returned."""
        start = first * self.bs
        end = min(self.source.size, (last + 1) * self.bs)
        if background and not self.budget.take(end - start):
            return None
        fut = self.submit(_bind(self.source.fetch_keep, start, end))
        self.gets += 1
        for b in range(first, last + 1):
            self._inflight[b] = (first, fut)
        fut.add_done_callback(self._settled(first, last, background, end - start))
        return fut

    def _settled(
        self, first: int, last: int, background: bool, nbytes: int
    ) -> Callable[[Future[bytes]], None]:
        def done(fut: Future[bytes]) -> None:
            if background:
                self.budget.give(nbytes)
            with self._lock:
                for b in range(first, last + 1):
                    got = self._inflight.get(b)
                    if got is not None and got[1] is fut:
                        del self._inflight[b]

        return done

    def span_end(self, offset: int, end: int) -> int:
        """Where the fetch around a miss of ``[offset, end)`` stops."""
        span = min(MAX_SPAN, self.factor * (end - offset))
        return max(end, min(self.source.size, offset + span))

    def _adapt(self, served_by_earlier: bool) -> None:
        """Grow the span while fetched neighbours get read, shrink it while they do not."""
        with self._lock:
            if served_by_earlier:
                self.factor = min(MAX_FACTOR, max(1, self.factor * 2))
            elif self.factor > 0:
                self.factor //= 2
            else:
                self._misses_at_zero += 1
                if self._misses_at_zero % PROBE == 0:
                    self.factor = 1

    def read(self, offset: int, end: int) -> bytes:
        """Bytes ``[offset, end)`` (``end`` within the object)."""
        if not self.source.keeps_blocks:
            return self._exact(offset, end)
        bs = self.bs
        first, last = offset // bs, (end - 1) // bs
        if self.factor == 0 and not all(self.source.has_block(b) for b in range(first, last + 1)):
            # Scattered reads: neighbours went unread. Exactly the bytes asked for.
            self._adapt(False)
            return self._exact(offset, end)
        span_end = self.span_end(offset, end)
        span_last = max(last, (span_end - 1) // bs)
        have: dict[int, bytes] = {}
        for b in range(first, last + 1):
            with self._lock:
                busy = b in self._inflight
            if not busy:
                data = self.source.cached_block(b)
                if data is not None:
                    have[b] = data
        waits: dict[int, tuple[int, Future[bytes]]] = {}
        missed = False
        with self._lock:
            for b in range(first, last + 1):
                if b in have:
                    continue
                if b in self._inflight:
                    waits[b] = self._inflight[b]
                    continue
                fut = self._start(b, b, background=False)
                assert fut is not None  # foreground fetches are never refused
                waits[b] = (b, fut)
                missed = True
            if not waits:
                self.hits += 1
            self._adapt(not missed)
            # Only a miss fetches around itself: hits inside an earlier span do not
            # extend it, so scattered reads never snowball into a full download.
            b = last + 1 if missed else span_last + 1
            while b <= span_last:
                if b in self._inflight or self.source.has_block(b):
                    b += 1
                    continue
                stop = b
                while (
                    stop + 1 <= span_last
                    and stop + 1 - b < PIECE_BLOCKS
                    and stop + 1 not in self._inflight
                ):
                    stop += 1
                self._start(b, stop, background=True)
                b = stop + 1
        for b, (piece_first, fut) in waits.items():
            data = fut.result()
            lo = (b - piece_first) * bs
            have[b] = data[lo : lo + bs]
        if first == last:
            block = have[first]
            lo = offset - first * bs
            return block[lo : lo + (end - offset)]
        joined = b"".join(have[b] for b in range(first, last + 1))
        lo = offset - first * bs
        return joined[lo : lo + (end - offset)]

    def _exact(self, offset: int, end: int) -> bytes:
        """Without a block cache nothing fetched could be kept: exactly the bytes asked
        for, one GET per block they touch, in parallel."""
        bs = self.bs
        cuts = [offset, *range((offset // bs + 1) * bs, end, bs), end]
        if len(cuts) == 2:
            self.gets += 1
            return self.source.fetch(offset, end)
        futs = [self.submit(_bind(self.source.fetch, a, b)) for a, b in itertools.pairwise(cuts)]
        self.gets += len(futs)
        return b"".join(f.result() for f in futs)


def _bind(fn: Callable[[int, int], bytes], start: int, end: int) -> Callable[[], bytes]:
    def call() -> bytes:
        return fn(start, end)

    return call
