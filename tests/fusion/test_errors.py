from __future__ import annotations

import errno

from botocore.exceptions import ClientError, EndpointConnectionError

from fusion.errors import (
    S3_CODE_TO_ERRNO,
    AccessDenied,
    ObjectNotFound,
    PreconditionFailed,
    StoreError,
    errno_for_code,
    translate_store_error,
)


def _client_error(code: str, status: int) -> ClientError:
    return ClientError(
        {"Error": {"Code": code, "Message": "m"}, "ResponseMetadata": {"HTTPStatusCode": status}},
        "GetObject",
    )


def test_table_maps_codes_and_statuses() -> None:
    assert errno_for_code("NoSuchKey") == errno.ENOENT
    assert errno_for_code("AccessDenied") == errno.EACCES
    assert errno_for_code("SlowDown") == errno.EAGAIN
    assert errno_for_code("404") == errno.ENOENT
    assert errno_for_code("SomethingNew") == errno.EIO
    assert all(isinstance(v, int) for v in S3_CODE_TO_ERRNO.values())


def test_translation_picks_typed_classes() -> None:
    nf = translate_store_error(_client_error("NoSuchKey", 404), "GET s3://b/k")
    assert isinstance(nf, ObjectNotFound) and isinstance(nf, FileNotFoundError)
    assert nf.errno == errno.ENOENT and nf.code == "NoSuchKey" and "s3://b/k" in str(nf)
    denied = translate_store_error(_client_error("AccessDenied", 403), "x")
    assert isinstance(denied, AccessDenied) and isinstance(denied, PermissionError)
    # A HEAD has no body: the code is the status.
    head = translate_store_error(_client_error("404", 404), "HEAD")
    assert isinstance(head, ObjectNotFound)
    stale = translate_store_error(_client_error("PreconditionFailed", 412), "x")
    assert isinstance(stale, PreconditionFailed) and stale.errno == errno.ESTALE
    unknown = translate_store_error(_client_error("WeirdCode", 500), "x")
    assert type(unknown) is StoreError and unknown.errno == errno.EIO


def test_network_errors_are_eio() -> None:
    err = translate_store_error(EndpointConnectionError(endpoint_url="http://x"), "GET")
    assert isinstance(err, StoreError) and err.errno == errno.EIO
