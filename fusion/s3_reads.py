"""GETs for the read path, signed by botocore and sent with urllib3 directly.

Why. A read through the mount is a ranged GET per segment, a whole GET per small file:
thousands per second when many files are read at once. botocore's ``get_object`` spends
about 4 ms of CPU per call here (parameter validation, endpoint rules, event hooks,
response parsing) against 1.5 ms for the very same signed request sent with urllib3 - on
a node where the CPU also runs the tasks, that is the difference between the mount or
the object store being the limit. So the two calls on the read path, :meth:`get` of a
range and of a whole object, are built here; everything else stays with boto3.

What is kept from botocore: the credentials (the session's provider chain, refreshed as
they expire), the signature (``S3SigV4Auth``), the endpoint and its addressing style,
and the meaning of errors - a failed GET raises :class:`HttpError`, shaped like
botocore's ``ClientError``, so :func:`fusion.errors.translate_store_error` maps it with
the one table. Retries follow botocore's "standard" mode: connection errors, 5xx,
throttling and short bodies are retried with jittered exponential backoff, up to the
store's ``max_attempts``.
"""

from __future__ import annotations

import contextlib
import email.utils
import os
import random
import re
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any, TypeVar
from urllib.parse import quote, urlsplit

import urllib3
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest

from fusion.objects import ObjectInfo
from fusion.progress import Progress

__all__ = ["HttpError", "RangeGetter"]

T = TypeVar("T")
_ReadInto = Callable[[memoryview], int]

_RETRY_STATUS = frozenset({429, 500, 502, 503, 504})
_RETRY_CODES = frozenset({"SlowDown", "Throttling", "ThrottlingException", "RequestTimeout"})
_DNS_BUCKET = re.compile(r"^[a-z0-9][a-z0-9-]{1,61}[a-z0-9]$")
_META = "x-amz-meta-"
#: Bytes read per step into a progressive buffer: readers waiting for the start of a
#: span are woken every this many bytes.
_CHUNK = 256 * 1024


class HttpError(Exception):
    """A GET answered with an error status; ``response`` is shaped like botocore's."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.response = {
            "Error": {"Code": code, "Message": message},
            "ResponseMetadata": {"HTTPStatusCode": status},
        }
        self.status = status
        self.code = code


class _Stopped(Exception):
    """The reader of a body wants no more of it."""


class _ShortBody(Exception):
    """Fewer bytes than Content-Length said (a connection cut mid-body): retried."""


def _error_of(status: int, body: bytes) -> HttpError:
    text = body.decode("utf-8", "replace")
    code = re.search(r"<Code>([^<]*)</Code>", text)
    message = re.search(r"<Message>([^<]*)</Message>", text)
    return HttpError(
        status,
        code.group(1) if code else str(status),
        message.group(1) if message else f"HTTP {status}",
    )


def _ca_bundle() -> str | None:
    bundle = os.environ.get("AWS_CA_BUNDLE")
    if bundle:
        return bundle
    try:
        from botocore.httpsession import get_cert_path

        return str(get_cert_path(True))
    except Exception:
        return None


class RangeGetter:
    """Signed GETs over one urllib3 pool; thread-safe."""

    def __init__(
        self,
        credentials: Any,
        region: str,
        endpoint_url: str,
        addressing: str,
        max_connections: int = 64,
        max_attempts: int = 3,
        connect_timeout: float = 10.0,
        read_timeout: float = 60.0,
        sleep: Any = time.sleep,
    ) -> None:
        self.credentials = credentials
        self.region = region
        self.endpoint = urlsplit(endpoint_url)
        self.addressing = addressing
        self.max_attempts = max(1, max_attempts)
        self.sleep = sleep
        self.pool = urllib3.PoolManager(
            num_pools=16,
            maxsize=max_connections,
            block=False,
            retries=False,
            timeout=urllib3.Timeout(connect=connect_timeout, read=read_timeout),
            cert_reqs="CERT_REQUIRED",
            ca_certs=_ca_bundle(),
        )
        self.requests = 0

    @classmethod
    def for_client(cls, client: Any, session: Any, **kwargs: Any) -> RangeGetter:
        """A getter with the endpoint, region and credentials of a boto3 S3 client."""
        addressing = (client.meta.config.s3 or {}).get("addressing_style") or "auto"
        return cls(
            session.get_credentials(),
            client.meta.region_name,
            client.meta.endpoint_url,
            addressing,
            **kwargs,
        )

    def url(self, bucket: str, key: str) -> str:
        ep = self.endpoint
        path = quote(key, safe="/~")
        virtual = self.addressing == "virtual" or (
            self.addressing == "auto"
            and _DNS_BUCKET.match(bucket) is not None
            and (ep.hostname or "").endswith("amazonaws.com")
        )
        if virtual:
            return f"{ep.scheme}://{bucket}.{ep.netloc}/{path}"
        base = ep.path.rstrip("/")
        return f"{ep.scheme}://{ep.netloc}{base}/{bucket}/{path}"

    def _signed(self, url: str, headers: dict[str, str]) -> dict[str, str]:
        if self.credentials is None:
            return headers
        request = AWSRequest(method="GET", url=url, headers=headers)
        S3SigV4Auth(self.credentials.get_frozen_credentials(), "s3", self.region).add_auth(request)
        return dict(request.headers.items())

    def get(
        self,
        bucket: str,
        key: str,
        start: int | None = None,
        end: int | None = None,
        etag: str | None = None,
    ) -> tuple[Mapping[str, str], bytes]:
        """The object's bytes ``[start, end)`` (all of it without a range) and headers."""
        url = self.url(bucket, key)
        headers = _headers(start, end, etag)
        return self._retrying(lambda: self._once(url, headers))

    def get_into(
        self,
        bucket: str,
        key: str,
        start: int,
        end: int,
        etag: str | None,
        progress: Progress,
    ) -> None:
        """Bytes ``[start, end)`` into ``progress``, reporting each chunk as it arrives.

        A connection cut mid-body is retried from the first byte not yet received."""
        url = self.url(bucket, key)

        def attempt() -> None:
            # From the first byte not yet received: a retry resumes, never restarts.
            self._once_into(url, _headers(start + progress.received, end, etag), progress)

        self._retrying(attempt)

    def get_blocks(
        self,
        bucket: str,
        key: str,
        start: int,
        end: int,
        etag: str | None,
        block_size: int,
        deliver: Callable[[int, memoryview], bool],
    ) -> None:
        """Bytes ``[start, end)`` handed to ``deliver(offset, view)`` a block at a time.

        One buffer of ``block_size`` bytes is reused for every block (the view is only
        valid during the call), so a long GET holds one block of memory, not its length.
        The last block may be short. ``deliver`` returning ``False`` ends the GET there
        (its connection is closed, not reused). A connection cut mid-body is retried
        from the first byte not yet delivered."""
        url = self.url(bucket, key)
        buffer = bytearray(block_size)
        delivered = [start]

        def attempt() -> None:
            headers = _headers(delivered[0], end, etag)
            self._once_blocks(url, headers, buffer, end - delivered[0], delivered, deliver)

        self._retrying(attempt)

    def _retrying(self, call: Callable[[], T]) -> T:
        """``call()``, retried as botocore's standard mode retries: connection errors,
        5xx, throttling and short bodies, with jittered exponential backoff."""
        attempt = 0
        while True:
            attempt += 1
            try:
                return call()
            except HttpError as err:
                if attempt >= self.max_attempts or not (
                    err.status in _RETRY_STATUS or err.code in _RETRY_CODES
                ):
                    raise
            except (urllib3.exceptions.HTTPError, _ShortBody, OSError):
                if attempt >= self.max_attempts:
                    raise
            self.sleep(random.random() * min(20.0, 2.0 ** (attempt - 1)))  # noqa: S311 - jitter

    def _send(self, url: str, headers: dict[str, str]) -> Any:
        """The signed GET's response, its body not read yet."""
        self.requests += 1
        return self.pool.request(
            "GET", url, headers=self._signed(url, headers), preload_content=False, redirect=False
        )

    @contextlib.contextmanager
    def _body(self, url: str, headers: dict[str, str]) -> Iterator[_ReadInto]:
        """The body of a successful GET, as a ``readinto`` that fills buffers in place
        (http.client's; urllib3's copies). An error status raises :class:`HttpError`, a
        cut connection :class:`_ShortBody`; the connection goes back to the pool after."""
        resp = self._send(url, headers)
        try:
            if resp.status >= 300:
                raise _error_of(resp.status, resp.read())
            raw = getattr(resp, "_fp", None)
            yield raw.readinto if raw is not None else resp.readinto
        except _Stopped:
            resp.close()  # a body not read to its end: never reuse the connection
        except urllib3.exceptions.ProtocolError as err:
            raise _ShortBody(str(err)) from err
        finally:
            resp.release_conn()

    def _once_into(self, url: str, headers: dict[str, str], progress: Progress) -> None:
        with self._body(url, headers) as readinto:
            view = memoryview(progress.buffer)
            got = progress.received
            while got < progress.size:
                n = readinto(view[got : min(progress.size, got + _CHUNK)])
                if not n:
                    break
                got += n
                progress.advanced(got)
            if got < progress.size:
                raise _ShortBody(f"{got} of {progress.size} bytes")

    def _once_blocks(
        self,
        url: str,
        headers: dict[str, str],
        buffer: bytearray,
        length: int,
        delivered: list[int],
        deliver: Callable[[int, memoryview], bool],
    ) -> None:
        with self._body(url, headers) as readinto:
            view = memoryview(buffer)
            left = length
            while left > 0:
                want = min(len(buffer), left)
                got = 0
                while got < want:
                    n = readinto(view[got:want])
                    if not n:
                        raise _ShortBody(f"{length - left + got} of {length} bytes")
                    got += n
                wanted = deliver(delivered[0], view[:got])
                delivered[0] += got
                left -= got
                if not wanted and left > 0:
                    raise _Stopped  # the rest of the body is not read

    def _once(self, url: str, headers: dict[str, str]) -> tuple[Mapping[str, str], bytes]:
        resp = self._send(url, headers)
        try:
            body = resp.read()
            if resp.status >= 300:
                raise _error_of(resp.status, body)
            length = resp.headers.get("Content-Length")
            if length is not None and len(body) != int(length):
                raise _ShortBody(f"{len(body)} of {length} bytes")
            return resp.headers, body
        except urllib3.exceptions.ProtocolError as err:
            raise _ShortBody(str(err)) from err
        finally:
            resp.release_conn()


def _headers(start: int | None, end: int | None, etag: str | None) -> dict[str, str]:
    """Range (``[start, end)``, when given) and If-Match headers of a GET."""
    headers: dict[str, str] = {}
    if start is not None and end is not None:
        headers["Range"] = f"bytes={start}-{end - 1}"
    if etag:
        headers["If-Match"] = f'"{etag}"'
    return headers


def object_info(key: str, headers: Mapping[str, str], size: int) -> ObjectInfo:
    """What a GET's headers say of the object."""
    modified = headers.get("Last-Modified")
    mtime = 0.0
    if modified:
        try:
            mtime = email.utils.parsedate_to_datetime(modified).timestamp()
        except (TypeError, ValueError):
            mtime = 0.0
    metadata = {
        name[len(_META) :].lower(): value
        for name, value in headers.items()
        if name.lower().startswith(_META)
    }
    return ObjectInfo(
        key=key,
        size=size,
        etag=(headers.get("ETag") or "").strip('"'),
        mtime=mtime,
        metadata=metadata,
    )
