"""The boto3 implementation of :class:`~fusion.store.ObjectStore` for any S3 endpoint.

Sizing: one client is shared by every thread (botocore clients are thread-safe); its
urllib3 pool holds ``max_connections`` sockets so that the prefetcher's parallel ranged
GETs and the writer's parallel part uploads each keep a warm connection instead of
opening one per request (a TCP + TLS handshake is a round trip or three).

Checksums: botocore >= 1.36 adds CRC trailers to uploads by default ("when_supported").
Several S3-compatible servers (s3rver, older Ceph/MinIO) store the aws-chunked framing
as object bytes, so Fusion asks for checksums only when an operation requires them.

Addressing: with a custom endpoint (MinIO, Ceph, a server on 127.0.0.1) path-style
requests are used, since bucket host names rarely resolve there;
``FUSION_S3_ADDRESSING=virtual`` overrides that.

Reads: the GETs of the read path go through :mod:`fusion.s3_reads` (signed by botocore,
sent with urllib3: a third of botocore's CPU per call); ``FUSION_S3_BOTOCORE_READS=1``
sends them through boto3 like every other call.

Every botocore error is translated once, by :func:`fusion.errors.translate_store_error`.
"""

from __future__ import annotations

import builtins
import os
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from fusion.errors import StoreError, UploadFailed, translate_store_error
from fusion.io_stats import IoStats
from fusion.objects import CommonPrefix, ObjectInfo, StoreConfig, UploadedPart
from fusion.progress import Progress
from fusion.s3_reads import RangeGetter, object_info

__all__ = ["S3ObjectStore"]

#: Above this, CopyObject is refused by S3 and a multipart copy is needed.
_MAX_SINGLE_COPY = 5 * 1024**3
#: Part size and parallelism of upload_file/download_file (boto3's defaults).
_TRANSFER_CHUNK = 8 * 1024 * 1024
_TRANSFER_THREADS = 10


def _strip_etag(etag: str | None) -> str:
    return (etag or "").strip('"')


def _info(key: str, resp: Mapping[str, Any], size: int) -> ObjectInfo:
    modified = resp.get("LastModified")
    return ObjectInfo(
        key=key,
        size=size,
        etag=_strip_etag(resp.get("ETag")),
        mtime=modified.timestamp() if modified else 0.0,
        metadata=dict(resp.get("Metadata") or {}),
    )


class S3ObjectStore:
    """An :class:`~fusion.store.ObjectStore` over boto3."""

    def __init__(self, config: StoreConfig | None = None, client: Any = None) -> None:
        self.config = config or StoreConfig.from_env()
        #: GETs of object bytes and the bytes they brought (see fusion.io_stats).
        self.fetched = IoStats()
        #: The read path's GETs (see fusion.s3_reads); ``None`` with a client passed in,
        #: whose own settings then apply to every call.
        self.getter: RangeGetter | None = None
        if client is not None:
            self.client = client
        else:
            self.client, session = self._make_client(self.config)
            if not os.environ.get("FUSION_S3_BOTOCORE_READS"):
                cfg = self.config
                self.getter = RangeGetter.for_client(
                    self.client,
                    session,
                    max_connections=cfg.max_connections,
                    max_attempts=cfg.max_attempts,
                    connect_timeout=cfg.connect_timeout,
                    read_timeout=cfg.read_timeout,
                )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> S3ObjectStore:
        """A store configured from the standard AWS variables (and ``FUSION_S3_*``)."""
        env = os.environ if environ is None else environ
        base = StoreConfig.from_env(env)
        attempts = int(env.get("FUSION_S3_MAX_ATTEMPTS") or base.max_attempts)
        conns = int(env.get("FUSION_S3_MAX_CONNECTIONS") or base.max_connections)
        return cls(
            StoreConfig(
                endpoint_url=base.endpoint_url,
                region=base.region,
                access_key_id=base.access_key_id,
                secret_access_key=base.secret_access_key,
                session_token=base.session_token,
                profile=base.profile,
                max_attempts=attempts,
                max_connections=conns,
            )
        )

    @staticmethod
    def _make_client(cfg: StoreConfig) -> tuple[Any, Any]:
        import boto3
        from botocore.config import Config

        addressing = os.environ.get("FUSION_S3_ADDRESSING") or (
            "path" if cfg.endpoint_url else "auto"
        )
        bc = Config(
            max_pool_connections=cfg.max_connections,
            retries={"max_attempts": cfg.max_attempts, "mode": "standard"},
            connect_timeout=cfg.connect_timeout,
            read_timeout=cfg.read_timeout,
            s3={"addressing_style": addressing},  # type: ignore[arg-type]
            signature_version="s3v4",
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
            tcp_keepalive=True,
        )
        session = boto3.session.Session(
            aws_access_key_id=cfg.access_key_id,
            aws_secret_access_key=cfg.secret_access_key,
            aws_session_token=cfg.session_token,
            profile_name=cfg.profile,
            region_name=cfg.region or None,
        )
        region = session.region_name or "us-east-1"
        client = session.client("s3", endpoint_url=cfg.endpoint_url, region_name=region, config=bc)
        return client, session

    # -- reads ------------------------------------------------------------------------------
    def get(self, bucket: str, key: str) -> bytes:
        return self.get_object(bucket, key)[1]

    def get_object(self, bucket: str, key: str) -> tuple[ObjectInfo, bytes]:
        try:
            if self.getter is not None:
                headers, body = self.getter.get(bucket, key)
                self.fetched.add(gets=1, bytes_fetched=len(body))
                return object_info(key, headers, len(body)), body
            resp = self.client.get_object(Bucket=bucket, Key=key)
            data = bytes(resp["Body"].read())
        except Exception as err:
            raise translate_store_error(err, f"GET s3://{bucket}/{key}") from err
        self.fetched.add(gets=1, bytes_fetched=len(data))
        return _info(key, resp, len(data)), data

    def get_range(
        self, bucket: str, key: str, start: int, end_exclusive: int, etag: str | None = None
    ) -> bytes:
        if end_exclusive <= start:
            return b""
        if self.getter is not None:
            try:
                body = self.getter.get(bucket, key, start, end_exclusive, etag)[1]
                self.fetched.add(gets=1, bytes_fetched=len(body))
                return body
            except Exception as err:
                raise translate_store_error(
                    err, f"GET s3://{bucket}/{key} [{start}:{end_exclusive})"
                ) from err
        kwargs: dict[str, Any] = {
            "Bucket": bucket,
            "Key": key,
            "Range": f"bytes={start}-{end_exclusive - 1}",
        }
        if etag:
            kwargs["IfMatch"] = f'"{etag}"'
        try:
            resp = self.client.get_object(**kwargs)
            data = bytes(resp["Body"].read())
            self.fetched.add(gets=1, bytes_fetched=len(data))
            return data
        except Exception as err:
            raise translate_store_error(
                err, f"GET s3://{bucket}/{key} [{start}:{end_exclusive})"
            ) from err

    def get_range_into(
        self,
        bucket: str,
        key: str,
        start: int,
        end_exclusive: int,
        etag: str | None,
        progress: Progress,
    ) -> None:
        """Bytes ``[start, end_exclusive)`` into ``progress`` as they arrive."""
        try:
            if self.getter is not None:
                self.getter.get_into(bucket, key, start, end_exclusive, etag, progress)
                self.fetched.add(gets=1, bytes_fetched=end_exclusive - start)
                return
            progress.fill(self.get_range(bucket, key, start, end_exclusive, etag))
        except Exception as err:
            raise translate_store_error(
                err, f"GET s3://{bucket}/{key} [{start}:{end_exclusive})"
            ) from err

    def get_range_blocks(
        self,
        bucket: str,
        key: str,
        start: int,
        end_exclusive: int,
        etag: str | None,
        block_size: int,
        deliver: Callable[[int, memoryview], bool],
    ) -> None:
        """Bytes ``[start, end_exclusive)`` to ``deliver(offset, view)`` block by block,
        through one reused buffer, until it returns ``False`` (see
        :meth:`RangeGetter.get_blocks`)."""

        def counted(offset: int, view: memoryview) -> bool:
            self.fetched.add(bytes_fetched=len(view))
            return deliver(offset, view)

        try:
            if self.getter is not None:
                self.fetched.add(gets=1)
                self.getter.get_blocks(bucket, key, start, end_exclusive, etag, block_size, counted)
                return
            # get_range counts its GET and bytes
            data = memoryview(self.get_range(bucket, key, start, end_exclusive, etag))
            for lo in range(0, len(data), block_size):
                if not deliver(start + lo, data[lo : lo + block_size]):
                    return
        except StoreError:
            raise
        except Exception as err:
            raise translate_store_error(
                err, f"GET s3://{bucket}/{key} [{start}:{end_exclusive})"
            ) from err

    def head(self, bucket: str, key: str) -> ObjectInfo | None:
        try:
            resp = self.client.head_object(Bucket=bucket, Key=key)
        except Exception as err:
            typed = translate_store_error(err, f"HEAD s3://{bucket}/{key}")
            if isinstance(typed, FileNotFoundError):
                return None
            raise typed from err
        return _info(key, resp, int(resp.get("ContentLength", 0)))

    def list(
        self,
        bucket: str,
        prefix: str = "",
        delimiter: str | None = None,
        start_after: str | None = None,
        max_keys: int | None = None,
    ) -> Iterator[ObjectInfo | CommonPrefix]:
        kwargs: dict[str, Any] = {"Bucket": bucket, "Prefix": prefix}
        if delimiter:
            kwargs["Delimiter"] = delimiter
        if start_after:
            kwargs["StartAfter"] = start_after
        if max_keys is not None and max_keys < 1000:
            kwargs["MaxKeys"] = max(1, max_keys)
        emitted = 0
        token: str | None = None
        while True:
            if token:
                kwargs["ContinuationToken"] = token
            try:
                page = self.client.list_objects_v2(**kwargs)
            except Exception as err:
                raise translate_store_error(err, f"LIST s3://{bucket}/{prefix}") from err
            entries: list[tuple[str, ObjectInfo | CommonPrefix]] = [
                (
                    c["Key"],
                    ObjectInfo(
                        key=c["Key"],
                        size=int(c.get("Size", 0)),
                        etag=_strip_etag(c.get("ETag")),
                        mtime=c["LastModified"].timestamp() if c.get("LastModified") else 0.0,
                    ),
                )
                for c in page.get("Contents") or []
            ]
            entries += [
                (p["Prefix"], CommonPrefix(p["Prefix"])) for p in page.get("CommonPrefixes") or []
            ]
            entries.sort(key=lambda kv: kv[0])
            for _, entry in entries:
                if max_keys is not None and emitted >= max_keys:
                    return
                emitted += 1
                yield entry
            token = page.get("NextContinuationToken")
            if not page.get("IsTruncated") or not token:
                return

    def bucket_exists(self, bucket: str) -> bool:
        try:
            self.client.head_bucket(Bucket=bucket)
            return True
        except Exception as err:
            typed = translate_store_error(err, f"HEAD s3://{bucket}")
            if isinstance(typed, FileNotFoundError):
                return False
            raise typed from err

    def list_buckets(self) -> builtins.list[str]:
        try:
            resp = self.client.list_buckets()
        except Exception as err:
            raise translate_store_error(err, "LIST buckets") from err
        return sorted(b["Name"] for b in resp.get("Buckets") or [])

    def download_file(self, bucket: str, key: str, path: str | os.PathLike[str]) -> None:
        from boto3.s3.transfer import TransferConfig

        tc = TransferConfig(multipart_chunksize=_TRANSFER_CHUNK, max_concurrency=_TRANSFER_THREADS)
        try:
            self.client.download_file(bucket, key, os.fspath(path), Config=tc)
        except Exception as err:
            raise translate_store_error(err, f"DOWNLOAD s3://{bucket}/{key}") from err

    # -- writes -----------------------------------------------------------------------------
    def put(
        self, bucket: str, key: str, data: bytes, metadata: Mapping[str, str] | None = None
    ) -> str:
        try:
            resp = self.client.put_object(
                Bucket=bucket, Key=key, Body=data, Metadata=dict(metadata or {})
            )
            return _strip_etag(resp.get("ETag"))
        except Exception as err:
            typed = translate_store_error(err, f"PUT s3://{bucket}/{key}")
            raise UploadFailed(str(typed), code=typed.code, err=typed.errno) from err

    def delete(self, bucket: str, key: str) -> None:
        try:
            self.client.delete_object(Bucket=bucket, Key=key)
        except Exception as err:
            typed = translate_store_error(err, f"DELETE s3://{bucket}/{key}")
            if isinstance(typed, FileNotFoundError):
                return
            raise typed from err

    def copy(self, bucket: str, src_key: str, dst_key: str) -> None:
        what = f"COPY s3://{bucket}/{src_key} -> {dst_key}"
        try:
            info = self.head(bucket, src_key)
            if info is not None and info.size > _MAX_SINGLE_COPY:
                self.client.copy({"Bucket": bucket, "Key": src_key}, bucket, dst_key)
            else:
                self.client.copy_object(
                    Bucket=bucket,
                    Key=dst_key,
                    CopySource={"Bucket": bucket, "Key": src_key},
                    MetadataDirective="COPY",
                )
        except Exception as err:
            raise translate_store_error(err, what) from err

    def upload_file(self, path: str | os.PathLike[str], bucket: str, key: str) -> None:
        from boto3.s3.transfer import TransferConfig

        tc = TransferConfig(multipart_chunksize=_TRANSFER_CHUNK, max_concurrency=_TRANSFER_THREADS)
        try:
            self.client.upload_file(os.fspath(path), bucket, key, Config=tc)
        except Exception as err:
            typed = translate_store_error(err, f"UPLOAD s3://{bucket}/{key}")
            raise UploadFailed(str(typed), code=typed.code, err=typed.errno) from err

    def ensure_bucket(self, bucket: str) -> None:
        if self.bucket_exists(bucket):
            return
        kwargs: dict[str, Any] = {"Bucket": bucket}
        region = self.client.meta.region_name
        if region and region != "us-east-1":
            kwargs["CreateBucketConfiguration"] = {"LocationConstraint": region}
        try:
            self.client.create_bucket(**kwargs)
        except Exception as err:
            typed = translate_store_error(err, f"CREATE s3://{bucket}")
            if typed.code in {"BucketAlreadyOwnedByYou"}:
                return
            raise typed from err

    def create_multipart(
        self, bucket: str, key: str, metadata: Mapping[str, str] | None = None
    ) -> str:
        try:
            resp = self.client.create_multipart_upload(
                Bucket=bucket, Key=key, Metadata=dict(metadata or {})
            )
            return str(resp["UploadId"])
        except Exception as err:
            typed = translate_store_error(err, f"CREATE-MULTIPART s3://{bucket}/{key}")
            raise UploadFailed(str(typed), code=typed.code, err=typed.errno) from err

    def upload_part(
        self, bucket: str, key: str, upload_id: str, number: int, data: bytes | memoryview
    ) -> UploadedPart:
        try:
            resp = self.client.upload_part(
                Bucket=bucket, Key=key, UploadId=upload_id, PartNumber=number, Body=bytes(data)
            )
            return UploadedPart(number, _strip_etag(resp.get("ETag")))
        except Exception as err:
            typed = translate_store_error(err, f"UPLOAD-PART s3://{bucket}/{key}#{number}")
            raise UploadFailed(str(typed), code=typed.code, err=typed.errno) from err

    def complete_multipart(
        self, bucket: str, key: str, upload_id: str, parts: builtins.list[UploadedPart]
    ) -> str:
        body = {"Parts": [{"PartNumber": p.number, "ETag": f'"{p.etag}"'} for p in parts]}
        try:
            resp = self.client.complete_multipart_upload(
                Bucket=bucket, Key=key, UploadId=upload_id, MultipartUpload=body
            )
            return _strip_etag(resp.get("ETag"))
        except Exception as err:
            typed = translate_store_error(err, f"COMPLETE-MULTIPART s3://{bucket}/{key}")
            raise UploadFailed(str(typed), code=typed.code, err=typed.errno) from err

    def abort_multipart(self, bucket: str, key: str, upload_id: str) -> None:
        try:
            self.client.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id)
        except Exception as err:
            typed = translate_store_error(err, f"ABORT-MULTIPART s3://{bucket}/{key}")
            if isinstance(typed, FileNotFoundError):
                return
            raise typed from err
