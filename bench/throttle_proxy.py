"""A TCP proxy that makes a local S3 server look like S3 seen from a cloud node.

Two effects, per connection, as measured from EC2 to S3 in the same region:

* **time to first byte**: each request is held ``--latency-ms`` (20 ms) before it is
  passed on. A new request is recognised as client bytes arriving after the server has
  answered something on that connection (or the first bytes of a connection); the rest
  of a request (an upload body) follows without further delay.
* **bandwidth**: at most ``--rate-mbps`` (90 MB/s) per connection and direction, paced
  in 256 KiB steps. Parallel connections each get their own budget - which is why
  parallel ranged GETs beat a single stream on S3, and here too.

Bytes are moved with ``splice(2)`` through a pipe where available (no copies into
Python), so the proxy costs little CPU next to the server and the clients it sits
between. Usage::

    python bench/throttle_proxy.py --listen 127.0.0.1:4569 --upstream 127.0.0.1:4568
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import os
import socket
import threading
import time

#: Bytes moved per pacing step: 256 KiB is ~3 ms at 90 MB/s - fine-grained enough to
#: emulate the rate, coarse enough that the proxy's own CPU does not become the limit.
STEP = 256 * 1024


class _Pacer:
    """Token bucket: ``wait(n)`` returns when ``n`` more bytes may be sent."""

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self.next_free = time.monotonic()

    def wait(self, n: int) -> None:
        now = time.monotonic()
        start = max(now, self.next_free)
        self.next_free = start + n / self.rate
        if start > now:
            time.sleep(start - now)


class _Link:
    def __init__(
        self, client: socket.socket, upstream: tuple[str, int], latency: float, rate: float
    ) -> None:
        self.client = client
        self.server = socket.create_connection(upstream)
        for s in (self.client, self.server):
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.latency = latency
        self.rate = rate
        self.awaiting_request = True
        self.closed = threading.Event()

    def run(self) -> None:
        up = threading.Thread(target=self._pump, args=(self.client, self.server, True), daemon=True)
        down = threading.Thread(
            target=self._pump, args=(self.server, self.client, False), daemon=True
        )
        up.start()
        down.start()
        up.join()
        down.join()
        for s in (self.client, self.server):
            s.close()

    def _pump(self, src: socket.socket, dst: socket.socket, upstream: bool) -> None:
        pacer = _Pacer(self.rate)
        use_splice = hasattr(os, "splice")
        pipe_r, pipe_w = os.pipe() if use_splice else (-1, -1)
        if use_splice and hasattr(fcntl, "F_SETPIPE_SZ"):
            with contextlib.suppress(OSError):
                fcntl.fcntl(pipe_w, fcntl.F_SETPIPE_SZ, STEP)
        buf = bytearray(STEP)
        view = memoryview(buf)
        try:
            while True:
                n = os.splice(src.fileno(), pipe_w, STEP) if use_splice else src.recv_into(buf)
                if n == 0:
                    break
                if upstream and self.awaiting_request:
                    time.sleep(self.latency)  # the request travels, the server starts late
                    self.awaiting_request = False
                elif not upstream:
                    self.awaiting_request = True
                pacer.wait(n)
                if use_splice:
                    left = n
                    while left:
                        left -= os.splice(pipe_r, dst.fileno(), left)
                else:
                    dst.sendall(view[:n])
        except OSError:
            pass
        finally:
            if use_splice:
                os.close(pipe_r)
                os.close(pipe_w)
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)


def serve(listen: tuple[str, int], upstream: tuple[str, int], latency: float, rate: float) -> None:
    sock = socket.create_server(listen, reuse_port=False, backlog=256)
    print(f"throttle proxy {listen[0]}:{listen[1]} -> {upstream[0]}:{upstream[1]}", flush=True)
    while True:
        client, _ = sock.accept()
        try:
            link = _Link(client, upstream, latency, rate)
        except OSError:
            client.close()
            continue
        threading.Thread(target=link.run, daemon=True).start()


def _addr(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host or "127.0.0.1", int(port)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--listen", default="127.0.0.1:4569")
    p.add_argument("--upstream", default="127.0.0.1:4568")
    p.add_argument("--latency-ms", type=float, default=20.0)
    p.add_argument("--rate-mbps", type=float, default=90.0, help="MB/s (10^6) per connection")
    a = p.parse_args()
    serve(_addr(a.listen), _addr(a.upstream), a.latency_ms / 1000.0, a.rate_mbps * 1e6)


if __name__ == "__main__":
    main()
