"""Dask and AWS Batch targets: the scheduler answers; the job queue is VALID and ENABLED.

Those backends are plug-ins; when a kind's module is not installed the target gets
one skipped line saying so instead of checks that cannot mean anything.  Settings are
read by name (``address``/``scheduler_address``, ``job_queue``, ``region``,
``endpoint_url``) so the checks follow the kind's settings model as it evolves.
"""

from __future__ import annotations

import asyncio
import importlib.util
from typing import Any
from urllib.parse import urlsplit

from bridge.doctor.context import DoctorContext
from bridge.doctor.core import Check, CheckFailed, CheckSkipped

DASK = "dask scheduler answers"
BATCH = "batch job queue VALID and ENABLED"
MODULES = {"dask": "schedulers.dask", "aws_batch": "schedulers.aws_batch"}


def backend_module_present(kind: str) -> bool:
    module = MODULES.get(kind)
    return module is None or importlib.util.find_spec(module) is not None


def _setting(ctx: DoctorContext, *names: str) -> Any:
    for name in names:
        value = getattr(ctx.target, name, None)
        if value:
            return value
    return None


async def dask_scheduler(ctx: DoctorContext) -> str:
    address = _setting(ctx, "address", "scheduler_address")
    if not address:
        raise CheckSkipped("no scheduler address configured (the backend starts its own)")
    parts = urlsplit(address if "://" in address else f"tcp://{address}")
    host, port = parts.hostname or "127.0.0.1", parts.port or 8786
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), 10)
        writer.close()
    except (OSError, TimeoutError) as err:
        raise CheckFailed(f"{address}: {err}") from err
    try:
        from distributed import Client
    except ImportError:
        return f"{address} accepts connections (distributed not installed here)"

    def info() -> int:
        with Client(address, timeout=15) as client:
            return len(client.scheduler_info().get("workers", {}))

    try:
        workers = await asyncio.to_thread(info)
    except Exception as err:
        raise CheckFailed(
            f"{address} accepts connections but does not answer as dask: {err}"
        ) from err
    return f"{address}: {workers} workers"


async def batch_queue(ctx: DoctorContext) -> str:
    queue = _setting(ctx, "job_queue")
    if not queue:
        raise CheckFailed("no job_queue configured", "set job_queue of target {target}")
    import boto3

    options: dict[str, Any] = {}
    if endpoint := _setting(ctx, "endpoint_url"):
        options["endpoint_url"] = endpoint
    if region := _setting(ctx, "region", "region_name"):
        options["region_name"] = region

    def describe() -> list[dict[str, Any]]:
        client = boto3.session.Session().client("batch", **options)
        return list(client.describe_job_queues(jobQueues=[queue])["jobQueues"])

    try:
        queues = await asyncio.to_thread(describe)
    except Exception as err:
        raise CheckFailed(
            f"describe-job-queues failed: {err}",
            "check the AWS credentials and region (or endpoint_url) of target {target}",
        ) from err
    if not queues:
        raise CheckFailed(f"job queue {queue!r} does not exist", "create it or fix job_queue")
    q = queues[0]
    state, status = q.get("state"), q.get("status")
    if state != "ENABLED" or status != "VALID":
        raise CheckFailed(
            f"job queue {queue}: state {state}, status {status} ({q.get('statusReason', '')})",
            f"enable the queue (aws batch update-job-queue --job-queue {queue} --state "
            "ENABLED) and fix its compute environments until it is VALID",
        )
    return f"{queue}: ENABLED, VALID"


CHECKS = {
    "dask": [Check(DASK, dask_scheduler, "start the dask scheduler or fix address of {target}")],
    "aws_batch": [Check(BATCH, batch_queue, "fix job_queue of target {target}")],
}
