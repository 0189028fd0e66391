"""The object store with the configured credentials: list, put, get, delete."""

from __future__ import annotations

import os
import uuid
from typing import Any

from bridge.agent.s3 import split_s3_url
from bridge.doctor.context import DoctorContext
from bridge.doctor.core import Check, CheckFailed, CheckSkipped

OBJECT_STORE = "object store reachable with the configured credentials"


def _client() -> Any:
    """A fresh client (not the process-wide cached one): credentials may have changed."""
    import boto3
    from botocore.config import Config

    s3_options: Any = {"addressing_style": os.environ.get("AWS_S3_ADDRESSING_STYLE", "auto")}
    config = Config(
        s3=s3_options,
        retries={"max_attempts": 2, "mode": "standard"},
        connect_timeout=5,
        read_timeout=20,
    )
    return boto3.session.Session().client("s3", config=config)


def delete_key(url: str, name: str) -> None:
    bucket, prefix = split_s3_url(url)
    key = f"{prefix.strip('/')}/{name}" if prefix.strip("/") else name
    _client().delete_object(Bucket=bucket, Key=key)


def _code(err: Exception) -> str:
    response = getattr(err, "response", None)
    if isinstance(response, dict):
        return str(response.get("Error", {}).get("Code", ""))
    return ""


async def object_store(ctx: DoctorContext) -> str:
    url = ctx.work_url
    if not url.startswith("s3://"):
        raise CheckSkipped(f"no object store in use (work directory {url} is a path)")
    bucket, prefix = split_s3_url(url)
    key = f"{prefix.strip('/') + '/' if prefix.strip('/') else ''}.doctor/{uuid.uuid4().hex}"
    client = _client()
    step = "list"
    try:
        client.list_objects_v2(Bucket=bucket, Prefix=prefix, MaxKeys=1)
        step = "put"
        client.put_object(Bucket=bucket, Key=key, Body=b"bridge doctor probe\n")
        step = "get"
        body = client.get_object(Bucket=bucket, Key=key)["Body"].read()
        step = "delete"
        client.delete_object(Bucket=bucket, Key=key)
    except Exception as err:
        code = _code(err)
        endpoint = client.meta.endpoint_url
        if code in ("InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "403"):
            fix = (
                "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or AWS_PROFILE) in the "
                f"broker's environment file to credentials allowed on s3://{bucket}"
            )
        elif code in ("NoSuchBucket", "404"):
            fix = f"create the bucket {bucket} or change work_url/work_bucket"
        else:
            fix = f"check AWS_ENDPOINT_URL ({endpoint}) and that the object store runs"
        raise CheckFailed(
            f"{step} on s3://{bucket} at {endpoint} failed: {code or err}", fix
        ) from err
    if body != b"bridge doctor probe\n":
        raise CheckFailed(f"s3://{bucket}: the probe object read back different bytes")
    return f"s3://{bucket} at {client.meta.endpoint_url} (list, put, get, delete)"


CHECKS = [
    Check(
        OBJECT_STORE,
        object_store,
        "check AWS_ENDPOINT_URL and the AWS credentials in the broker's environment",
    )
]
