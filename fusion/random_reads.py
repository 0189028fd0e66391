"""Reads at random offsets: one round trip per miss, and the neighbourhood kept.

A read that is not part of a sequential stream (see :mod:`fusion.prefetch`) is served
here. What the kernel sends for one ``pread`` at a random offset: the bytes rounded out
to whole pages, cut into requests of at most 1 MiB, all sent at once - an unaligned
1 MiB ``pread`` arrives as a 1 MiB request and, a few microseconds later, a 4 KiB one.
Each request answered by a GET of its own costs the object store a request and the
reader a round trip each; fetching whole 1 MiB blocks for them doubles the transfer.
So a miss:

* is one *fetch* of exactly its bytes plus ``tail`` bytes (64 KiB) past its end, so
  the kernel's trailing page - and any request that falls inside what is in flight -
  waits for that fetch instead of sending its own;
* is cut into up to ``max_parts`` ranged GETs of at least ``min_part`` bytes, sent in
  parallel: one round trip, at the bandwidth of several connections (a single S3
  connection carries tens of MB/s; 1 MiB at 90 MB/s is 11 ms on top of ~20 ms to first
  byte);
* also fetches what follows it, up to a span of ``factor`` times the read (at most
  ``MAX_SPAN``, rounded to whole blocks), as the continuation of its last GET: the read
  waits only for its own bytes (:class:`~fusion.progress.Progress`), the rest streams in
  over the same connection, with no request of its own. Readers at random offsets often
  read records near each other, and a later read that lands in the span is served from
  memory or the block cache (the mount's ``random_span`` setting bounds the span; 0
  turns it and the fill below off). The factor adapts: it doubles (up to
  ``MAX_FACTOR``) whenever a read is served by what an earlier read fetched around
  itself, and halves whenever a read misses outright - so uniformly scattered reads
  soon stop paying for neighbours nobody reads (at factor 0 a miss fetches its bytes
  and the tail only, and every ``PROBE``-th miss tries a span again);
* keeps every whole block it fetched in the disk block cache (bounded, LRU), even for
  objects too large to be cached while streaming, and the last fetches in memory
  (``recent_bytes``), written to the cache after the waiting read has its bytes;
* never starts or grows a sequential window: a random pattern stays random;
* once ``FILL_AFTER`` reads of an open file have missed, and the object fits in half
  the block cache, the whole object is *filled* into the block cache in the background
  (``FILL_PARALLEL`` GETs at a time, each block handed to the cache's writer threads as
  it arrives - through the page cache, see :meth:`~fusion.chunk_cache.ChunkCache.put_soon`
  - so a fill GET holds one block of memory, taken from the shared read budget, plus
  the writers' few queued blocks): a file read
  at random offsets again and again - an index, a database, a reference - is soon
  served from local disk, for this reader and every later one on the node. Reads never
  wait for the fill; they use the blocks it has cached. Objects larger than that are
  never filled: they would evict everything else. The fill cuts the object into
  ``FILL_PARALLEL`` equal pieces, one GET each (:func:`fill_piece_blocks`: at least
  ``FILL_PIECE_MIN_BLOCKS``, at most ``FILL_PIECE_BLOCKS`` blocks per GET): as many
  connections as shorter pieces would use, and the fewest requests, each of which costs
  the object store work of its own besides its bytes (~5 ms of CPU on the local S3
  server of the benchmarks; a 1 GiB fill takes 8 GETs, not 32 of 32 MiB).

Fetches in flight are shared: a read that needs bytes another read already asked for
waits for that GET (for its bytes of it) instead of sending its own. The span beyond a
read, and the fill, are only fetched while the mount's shared
:class:`~fusion.prefetch.ReadBudget` allows.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Protocol

from fusion.progress import Progress

__all__ = ["FACTOR", "MAX_FACTOR", "MAX_SPAN", "TAIL", "RandomReader", "fill_piece_blocks"]

#: A miss of n bytes fetches up to factor * n bytes from where it starts; the factor
#: starts here ...
FACTOR = 4
#: ... adapts between 0 and this ...
MAX_FACTOR = 16
#: ... and the span never exceeds this.
MAX_SPAN = 16 * 1024 * 1024
#: At factor 0, every PROBE-th miss fetches a span again, to notice locality returning.
PROBE = 16
#: Bytes fetched past the end of a miss (the kernel's trailing page of an unaligned read).
TAIL = 64 * 1024
#: A miss is cut into GETs of at least this many bytes ...
MIN_PART = 512 * 1024
#: ... and at most this many of them.
MAX_PARTS = 4
#: Bytes of finished fetches kept in memory per open file.
RECENT_BYTES = 4 * 1024 * 1024
#: After this many misses on one open file, an object that fits in half the block cache
#: is filled into the cache in the background ...
FILL_AFTER = 4
#: ... this many GETs at a time, each of one piece: the object cut in FILL_PARALLEL,
#: pieces of at least ...
FILL_PARALLEL = 8
FILL_PIECE_MIN_BLOCKS = 8
#: ... and at most this many blocks.
FILL_PIECE_BLOCKS = 128
_PAGE = 4096


def fill_piece_blocks(blocks: int) -> int:
    """Blocks per fill GET for an object of ``blocks`` blocks."""
    return max(FILL_PIECE_MIN_BLOCKS, min(FILL_PIECE_BLOCKS, -(-blocks // FILL_PARALLEL)))


class BlockSource(Protocol):
    size: int
    block_size: int

    @property
    def keeps_blocks(self) -> bool: ...

    @property
    def cache_capacity(self) -> int: ...

    def fetch_exact(self, start: int, end: int) -> bytes: ...

    def fetch_into(self, start: int, progress: Progress) -> bytearray: ...

    def fill_range(self, start: int, end: int, stop: Callable[[], bool] = ...) -> None: ...

    def keep(self, start: int, data: bytes) -> None: ...

    def cached_block(self, block: int, start: int = 0, end: int | None = None) -> bytes | None: ...

    def has_block(self, block: int) -> bool: ...


class _Budget(Protocol):
    def take(self, n: int, force: bool = False) -> bool: ...

    def give(self, n: int) -> None: ...


Submit = Callable[[Callable[[], bytes]], "Future[bytes]"]


@dataclass(eq=False)
class _Fetch:
    """One ranged GET: in flight, or finished and kept for a while."""

    start: int
    end: int
    future: Future[bytes]
    #: For a fetch that also brings a span: where the miss that launched it stopped
    #: fetching for itself. Bytes past it read later are neighbours worth fetching.
    reach: int = 0
    #: Bytes taken from the read budget, given back when the GET ends.
    borrowed: int = 0
    #: Set for a GET whose bytes can be read as they arrive.
    progress: Progress | None = None
    #: The GET ended and its blocks went to the cache: it may leave memory now.
    settled: bool = False


#: A piece of a read: bytes [lo, hi) from a fetch, or from the cached block.
_Piece = tuple[int, int, "_Fetch | int"]


class RandomReader:
    """Random-offset reads of one object version; thread-safe."""

    def __init__(
        self,
        source: BlockSource,
        submit: Submit,
        budget: _Budget,
        tail: int = TAIL,
        min_part: int = MIN_PART,
        max_parts: int = MAX_PARTS,
        recent_bytes: int = RECENT_BYTES,
        max_span: int = MAX_SPAN,
    ) -> None:
        self.source = source
        self.submit = submit
        self.budget = budget
        self.bs = source.block_size
        self.tail = tail
        self.min_part = max(_PAGE, min_part)
        self.max_parts = max(1, max_parts)
        self.recent_bytes = recent_bytes
        self.max_span = max_span
        # Re-entrant: a GET that completes at once runs its callback inside _launch,
        # which holds the lock already.
        self._lock = threading.RLock()
        #: Fetches in flight, then finished ones (oldest first) while within recent_bytes.
        self._fetches: list[_Fetch] = []
        self.gets = 0
        self.hits = 0
        self.factor = FACTOR
        self._misses_at_zero = 0
        self._closed = False
        self.misses = 0
        #: Next block the fill looks at (-1: no fill), and its GETs in flight.
        self._fill_next = -1
        self._fill_inflight: list[Future[bytes]] = []
        self.fill_gets = 0

    # -- fetches (lock held) ------------------------------------------------------------
    def _covering(self, pos: int) -> _Fetch | None:
        """The fetch to serve ``pos`` from (the one reaching furthest)."""
        best: _Fetch | None = None
        for f in self._fetches:
            usable = f.start <= pos < f.end and not f.future.cancelled()
            if usable and (best is None or f.end > best.end):
                best = f
        return best

    def _launch(
        self,
        start: int,
        end: int,
        reach: int = 0,
        borrowed: int = 0,
        progressive: bool = False,
    ) -> _Fetch:
        """One GET of ``[start, end)``; ``borrowed`` bytes of it were taken from the
        read budget and are given back when it ends."""
        progress = Progress(end - start) if progressive else None
        if progress is not None:
            fut = self.submit(_bind_into(self.source.fetch_into, start, progress))
        else:
            fut = self.submit(_bind(self.source.fetch_exact, start, end))
        self.gets += 1
        fetch = _Fetch(start, end, fut, reach, borrowed, progress)
        self._fetches.append(fetch)
        fut.add_done_callback(self._settled(fetch))
        return fetch

    def _launch_miss(self, start: int, end: int, span_end: int) -> None:
        """The GETs of a miss: ``[start, end)`` cut into parallel parts, the last one
        going on to ``span_end`` (read as it arrives: the read waits for its own bytes
        only)."""
        length = end - start
        parts = max(1, min(self.max_parts, length // self.min_part))
        step = -(-length // parts)
        step += -step % _PAGE
        extra = 0
        if span_end > end and self.budget.take(span_end - end):
            extra = span_end - end
        lo = start
        while lo < end:
            hi = min(end, lo + step)
            if hi == end and extra:
                self._launch(lo, end + extra, reach=end, borrowed=extra, progressive=True)
            else:
                self._launch(lo, hi)
            lo = hi

    def _settled(self, fetch: _Fetch) -> Callable[[Future[bytes]], None]:
        def done(fut: Future[bytes]) -> None:
            if fetch.borrowed:
                self.budget.give(fetch.borrowed)
            ok = not fut.cancelled() and fut.exception() is None
            if ok and self.source.keeps_blocks:
                # Runs after the waiting reads were woken: the cache write is off their path.
                with contextlib.suppress(OSError):
                    self.source.keep(fetch.start, fut.result())
            with self._lock:
                fetch.settled = True
                if not ok or self._closed:
                    if fetch in self._fetches:
                        self._fetches.remove(fetch)
                    return
                self._trim()

        return done

    def _trim(self) -> None:
        """Drop the oldest finished fetches beyond ``recent_bytes`` (lock held)."""
        held = sum(f.end - f.start for f in self._fetches if f.settled)
        for f in list(self._fetches):
            if held <= self.recent_bytes:
                break
            if f.settled:
                self._fetches.remove(f)
                held -= f.end - f.start

    # -- planning ---------------------------------------------------------------------------
    def span_end(self, offset: int, end: int) -> int:
        """Where what a miss of ``[offset, end)`` fetches stops (its tail and its span)."""
        size = self.source.size
        fetched = min(size, end + self.tail)
        if not self.source.keeps_blocks:
            return fetched
        span = min(self.max_span, self.factor * (end - offset))
        return max(fetched, min(size, offset + span))

    def _span_end(self, offset: int, end: int) -> int:
        """Where a miss's GET stops: its span rounded up to whole blocks (so they can be
        cached), or just its tail."""
        fetched = min(self.source.size, end + self.tail)
        span_end = self.span_end(offset, end)
        if span_end <= fetched or not self.source.keeps_blocks:
            return fetched
        return min(self.source.size, span_end + -span_end % self.bs)

    def _gap_end(self, pos: int, end: int) -> int:
        """End of the run of bytes from ``pos`` that nothing in flight or cached covers."""
        stop = end
        for f in self._fetches:
            if pos < f.start < stop and not f.future.cancelled():
                stop = f.start
        if self.source.keeps_blocks:
            block = pos // self.bs + 1
            while block * self.bs < stop:
                if self.source.has_block(block):
                    stop = block * self.bs
                    break
                block += 1
        return stop

    def _plan(self, offset: int, end: int, span_end: int) -> tuple[list[_Piece], bool]:
        """Pieces for ``[offset, end)``, starting the GETs of what is missing (lock held).

        A miss that reaches ``end`` also fetches on to ``span_end`` (up to what is held
        already). Returns the pieces and whether anything was missing."""
        pieces: list[_Piece] = []
        missed = False
        pos = offset
        while pos < end:
            fetch = self._covering(pos)
            if fetch is not None:
                hi = min(end, fetch.end)
                pieces.append((pos, hi, fetch))
                pos = hi
                continue
            block = pos // self.bs
            if self.source.keeps_blocks and self.source.has_block(block):
                hi = min(end, (block + 1) * self.bs)
                pieces.append((pos, hi, block))
                pos = hi
                continue
            gap = self._gap_end(pos, end)
            fetch_end = min(self.source.size, gap + self.tail) if gap == end else gap
            span = fetch_end
            if gap == end and span_end > fetch_end:
                span = self._gap_end(fetch_end, span_end)
            self._launch_miss(pos, fetch_end, span)
            missed = True
        return pieces, missed

    def _block_held(self, block: int) -> bool:
        """Whether the block is cached, or wholly inside one fetch (lock held)."""
        if self.source.has_block(block):
            return True
        lo = block * self.bs
        hi = min(self.source.size, lo + self.bs)
        return any(
            f.start <= lo and hi <= f.end and not f.future.cancelled() for f in self._fetches
        )

    def _adapt(self, pieces: list[_Piece], missed: bool) -> None:
        """Grow the span while fetched neighbours get read, shrink it while they do not."""
        if missed:
            if self.factor > 0:
                self.factor //= 2
            else:
                self._misses_at_zero += 1
                if self._misses_at_zero % PROBE == 0:
                    self.factor = 1
            return
        self.hits += 1
        filling = self._fill_next >= 0
        neighbours = any(
            (src.reach > 0 and hi > src.reach) if isinstance(src, _Fetch) else not filling
            for _, hi, src in pieces
        )
        if neighbours:
            self.factor = min(MAX_FACTOR, max(1, self.factor * 2))

    def _prepare(self, offset: int, end: int) -> list[_Piece]:
        with self._lock:
            pieces, missed = self._plan(offset, end, self._span_end(offset, end))
            if missed:
                self.misses += 1
                if self.misses == FILL_AFTER and self._fill_allowed():
                    self._fill_next = 0
            self._adapt(pieces, missed)
            self._fill_more()
            return pieces

    # -- filling the cache with a whole object read at random ---------------------------
    def _fill_allowed(self) -> bool:
        capacity = self.source.cache_capacity
        return (
            self.source.keeps_blocks
            and self.max_span > 0
            and self.source.size > MAX_SPAN
            and self.source.size <= capacity // 2
        )

    def _fill_more(self) -> None:
        """Start fill GETs up to FILL_PARALLEL (lock held)."""
        if self._fill_next < 0 or self._closed:
            return
        blocks = -(-self.source.size // self.bs)
        piece = fill_piece_blocks(blocks)
        while len(self._fill_inflight) < FILL_PARALLEL and self._fill_next < blocks:
            first = self._fill_next
            while first < blocks and self._block_held(first):
                first += 1
            if first >= blocks:
                self._fill_next = first
                break
            last = first
            while last + 1 < blocks and last + 1 - first < piece and not self._block_held(last + 1):
                last += 1
            start = first * self.bs
            end = min(self.source.size, (last + 1) * self.bs)
            # A fill GET holds one block of memory (its bytes go to the cache as they
            # arrive). One is always allowed in flight, so the fill never stalls; more
            # only within the shared budget.
            if not self.budget.take(self.bs, force=not self._fill_inflight):
                return  # resumed when a fill GET in flight ends
            fut = self.submit(_bind_fill(self.source.fill_range, start, end, self._is_closed))
            self.fill_gets += 1
            self._fill_inflight.append(fut)  # before the callback, which may run at once
            fut.add_done_callback(self._filled())
            self._fill_next = last + 1

    def _filled(self) -> Callable[[Future[bytes]], None]:
        def done(fut: Future[bytes]) -> None:
            self.budget.give(self.bs)
            with self._lock:
                if not fut.cancelled() and fut.exception() is not None:
                    self._fill_next = -1  # a failed GET stops the fill; reads go on
                if fut in self._fill_inflight:
                    self._fill_inflight.remove(fut)  # ended: its blocks are cached
                self._fill_more()

        return done

    def _is_closed(self) -> bool:
        return self._closed

    @property
    def filling(self) -> bool:
        with self._lock:
            blocks = -(-self.source.size // self.bs)
            return 0 <= self._fill_next < blocks or bool(self._fill_inflight)

    # -- reading ----------------------------------------------------------------------------
    def start(self, offset: int, end: int) -> None:
        """Start the GETs that a read of ``[offset, end)`` needs, without waiting."""
        self._prepare(offset, end)

    def read(self, offset: int, end: int) -> bytes | memoryview:
        """Bytes ``[offset, end)`` (``end`` within the object)."""
        pieces = self._prepare(offset, end)
        parts: list[bytes | memoryview] = []
        for lo, hi, src in pieces:
            if isinstance(src, _Fetch):
                if src.progress is not None:
                    view = src.progress.wait(hi - src.start)
                else:
                    view = memoryview(src.future.result())
                parts.append(view[lo - src.start : hi - src.start])
                continue
            base = src * self.bs
            cached = self.source.cached_block(src, lo - base, hi - base)  # only these bytes
            if cached is None:  # evicted since it was planned
                parts.append(self.source.fetch_exact(lo, hi))
                continue
            parts.append(cached)
        if len(parts) == 1:
            return parts[0]
        return b"".join(parts)

    def close(self) -> None:
        """Stop the fill (its GETs not yet started are cancelled, those running end
        after their current block) and drop what is kept in memory; GETs of reads in
        progress finish for their readers."""
        with self._lock:
            self._closed = True
            self._fill_next = -1
            for fut in self._fill_inflight:
                fut.cancel()
            self._fetches = [f for f in self._fetches if not f.settled]

    @property
    def inflight(self) -> int:
        """GETs not yet ended and cached."""
        with self._lock:
            return sum(1 for f in self._fetches if not f.settled)


def _bind_into(
    fn: Callable[[int, Progress], bytearray], start: int, progress: Progress
) -> Callable[[], bytes]:
    def call() -> bytes:
        return fn(start, progress)  # type: ignore[return-value]

    return call


def _bind_fill(
    fn: Callable[[int, int, Callable[[], bool]], None],
    start: int,
    end: int,
    stop: Callable[[], bool],
) -> Callable[[], bytes]:
    def call() -> bytes:
        fn(start, end, stop)
        return b""

    return call


def _bind(fn: Callable[[int, int], bytes], start: int, end: int) -> Callable[[], bytes]:
    def call() -> bytes:
        return fn(start, end)

    return call
