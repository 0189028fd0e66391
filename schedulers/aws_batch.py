"""AWS Batch backend (boto3): job definitions per shape, native array jobs, adoption by name.

* **Job definitions.**  One per (image, vCPUs, memory, GPUs, mounts), named by a hash
  of that content (``bridge-<key>``), looked up before it is registered and cached, so
  a restarted broker reuses what it registered before.
* **Arrays.**  Like jobs (same resources and environment) go out as one array job.
  Every element runs :data:`~schedulers.aws_batch_parse.ELEMENT_SCRIPT`, which picks
  its own command line from the array's environment by ``AWS_BATCH_JOB_ARRAY_INDEX``;
  an element's job id is ``<array id>:<index>``, as Batch names child jobs.
* **Status** is ``describe_jobs`` in chunks of 100; reasons become states in
  :mod:`.aws_batch_parse` (a host or spot reclaim is ``PREEMPTED``).
* **Adoption.**  ``list_jobs`` with a ``JOB_NAME`` filter on every queue; array
  elements are found through the names their array job carries.
* **Errors.**  An endpoint that does not answer or throttles is ``BackendUnavailable``;
  a refused job is ``SubmitError`` with Batch's words.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

from schedulers.aws_batch_jobs import (
    container_properties,
    content_key,
    job_name,
    node_argv,
    plan_arrays,
    queue_capacity,
)
from schedulers.aws_batch_parse import (
    CANCEL_REASON,
    ELEMENT_SCRIPT,
    ArrayEnvironment,
    array_environment,
    element_names,
    estimate_wait,
    job_status,
)
from schedulers.aws_batch_settings import AwsBatchSettings
from schedulers.base import Capabilities, JobSpec, JobState, JobStatus, Resources, TargetInfo
from schedulers.errors import BackendUnavailable, SubmitError

CAPABILITIES = Capabilities(
    native_arrays=True, submit_many=False, gpus=True, object_store_workdir=True, adopt_by_name=True
)
ARRAY_PREFIX = "bridge-array-"
_COUNTED = ("RUNNABLE", "RUNNING")
_UNAVAILABLE = {"Throttling", "ThrottlingException", "TooManyRequestsException", "ServerException"}


def create(
    name: str, settings: AwsBatchSettings, env: Mapping[str, str] | None = None
) -> AwsBatchBackend:
    return AwsBatchBackend(name, settings)


class AwsBatchBackend:
    """An AWS Batch endpoint; ``client`` is a boto3 Batch client (made from settings)."""

    def __init__(self, name: str, settings: AwsBatchSettings, client: Any = None) -> None:
        self.name = name
        self.settings = settings
        if client is None:
            import boto3

            client = boto3.session.Session().client(
                "batch", region_name=settings.region, endpoint_url=settings.endpoint_url
            )
        self.client = client
        self._definitions: dict[str, str] = {}  # content key -> job definition ARN
        self._lock = asyncio.Lock()
        self._cancelled: set[str] = set()

    async def _call(self, method: str, **kwargs: Any) -> Any:
        from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

        try:
            return await asyncio.to_thread(getattr(self.client, method), **kwargs)
        except ClientError as err:
            code = err.response.get("Error", {}).get("Code", "")
            status = err.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
            if code in _UNAVAILABLE or status >= 500:
                raise BackendUnavailable(f"AWS Batch {method}: {err}") from err
            raise SubmitError(f"AWS Batch {method} refused: {err}") from err
        except NoCredentialsError as err:  # waiting would not help
            raise SubmitError(f"AWS Batch {method}: no AWS credentials configured") from err
        except BotoCoreError as err:  # no connection, timeouts, bad endpoint
            raise BackendUnavailable(f"AWS Batch {method}: {err}") from err

    # -- job definitions ----------------------------------------------------------

    async def _definition(self, res: Resources) -> str:
        container = container_properties(self.settings, res)
        key = content_key(container)
        async with self._lock:
            if key in self._definitions:
                return self._definitions[key]
            name = f"{self.settings.job_definition_prefix}-{key}"
            found = await self._call(
                "describe_job_definitions", jobDefinitionName=name, status="ACTIVE"
            )
            known = sorted(found.get("jobDefinitions", []), key=lambda d: d.get("revision", 0))
            if known:
                arn = str(known[-1]["jobDefinitionArn"])
            else:
                made = await self._call(
                    "register_job_definition",
                    jobDefinitionName=name,
                    type="container",
                    containerProperties=container,
                )
                arn = str(made["jobDefinitionArn"])
            self._definitions[key] = arn
            return arn

    # -- submission ---------------------------------------------------------------

    def _queue(self, res: Resources) -> str:
        spot = self.settings.spot_job_queue
        return spot if res.preemptible and spot else self.settings.job_queue

    def _node_argv(self, spec: JobSpec) -> list[str]:
        return node_argv(spec, self.settings.node_mounts)

    async def _submit_job(
        self, name: str, res: Resources, command: list[str], env: Mapping[str, str], size: int = 0
    ) -> str:
        kwargs: dict[str, Any] = {
            "jobName": job_name(name),
            "jobQueue": self._queue(res),
            "jobDefinition": await self._definition(res),
            "containerOverrides": {
                "command": command,
                "environment": [{"name": k, "value": v} for k, v in env.items()],
            },
        }
        if size:
            kwargs["arrayProperties"] = {"size": size}
        if res.wall_time_s:
            kwargs["timeout"] = {"attemptDurationSeconds": max(60, res.wall_time_s)}
        answer = await self._call("submit_job", **kwargs)
        return str(answer["jobId"])

    async def submit(self, spec: JobSpec) -> str:
        return await self._submit_job(spec.name, spec.resources, self._node_argv(spec), spec.env)

    async def submit_array(self, specs: Sequence[JobSpec]) -> list[str | Exception]:
        groups: dict[tuple[Resources, tuple[tuple[str, str], ...]], list[int]] = {}
        for i, spec in enumerate(specs):
            groups.setdefault((spec.resources, tuple(sorted(spec.env.items()))), []).append(i)
        answers: list[str | Exception] = [SubmitError("not submitted")] * len(specs)
        jobs = [chunk for members in groups.values() for chunk in self._chunks(specs, members)]
        results = await asyncio.gather(
            *(self._submit_chunk(specs, c) for c in jobs), return_exceptions=True
        )
        if results and all(isinstance(r, BackendUnavailable) for r in results):
            raise results[0]  # type: ignore[misc]
        for chunk, result in zip(jobs, results, strict=True):
            for element, i in enumerate(chunk):
                if isinstance(result, BaseException):
                    answers[i] = (
                        result if isinstance(result, Exception) else SubmitError(str(result))
                    )
                else:
                    answers[i] = result if len(chunk) == 1 else f"{result}:{element}"
        return answers

    def _chunks(self, specs: Sequence[JobSpec], members: list[int]) -> list[list[int]]:
        argvs = [self._node_argv(specs[i]) for i in members]
        names = [job_name(specs[i].name) for i in members]
        s = self.settings
        plan = plan_arrays(argvs, names, s.max_array_size, s.max_array_env_bytes)
        return [[members[k] for k in chunk] for chunk in plan]

    def _array_env(self, specs: Sequence[JobSpec], members: list[int]) -> ArrayEnvironment:
        return array_environment(
            [self._node_argv(specs[i]) for i in members], [job_name(specs[i].name) for i in members]
        )

    async def _submit_chunk(self, specs: Sequence[JobSpec], members: list[int]) -> str:
        first = specs[members[0]]
        if len(members) == 1:
            return await self.submit(first)
        array = self._array_env(specs, members)
        digest = hashlib.sha256("\n".join(array.names).encode()).hexdigest()[:16]
        env = {**first.env, **array.as_env()}
        return await self._submit_job(
            f"{ARRAY_PREFIX}{digest}",
            first.resources,
            ["sh", "-c", ELEMENT_SCRIPT],
            env,
            len(members),
        )

    # -- state --------------------------------------------------------------------

    async def describe(self, job_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        """Raw ``describe_jobs`` entries by job id, 100 ids per call."""
        chunks = [list(job_ids[i : i + 100]) for i in range(0, len(job_ids), 100)]
        answers = await asyncio.gather(*(self._call("describe_jobs", jobs=c) for c in chunks))
        return {str(j["jobId"]): j for a in answers for j in a.get("jobs", [])}

    async def status(self, job_ids: Sequence[str]) -> Mapping[str, JobStatus]:
        wanted = list(dict.fromkeys(job_ids))
        found = await self.describe(wanted)
        out: dict[str, JobStatus] = {}
        for job_id in wanted:
            job = found.get(job_id)
            if job is None:
                out[job_id] = JobStatus(
                    JobState.LOST, reason=f"AWS Batch has no record of {job_id}"
                )
                continue
            status = job_status(job, self.settings.image)
            if status.state is JobState.CANCELLED and job_id not in self._cancelled:
                status = replace(status, reason=f"terminated outside the broker: {status.reason}")
            out[job_id] = status
        return out

    async def cancel(self, job_ids: Sequence[str]) -> None:
        self._cancelled.update(job_ids)
        await asyncio.gather(
            *(self._call("terminate_job", jobId=j, reason=CANCEL_REASON) for j in job_ids)
        )

    async def adopt(self, names: Sequence[str]) -> Mapping[str, str]:
        wanted = {job_name(n): n for n in names}
        found: dict[str, str] = {}
        for queue in self._queues():
            plain = await asyncio.gather(*(self._list(queue, n) for n in wanted))
            for name, jobs in zip(wanted, plain, strict=True):
                if jobs:
                    found[wanted[name]] = str(
                        max(jobs, key=lambda j: j.get("createdAt", 0))["jobId"]
                    )
            arrays = await self._list(queue, f"{ARRAY_PREFIX}*")
            parents = [str(a["jobId"]) for a in arrays if ":" not in str(a["jobId"])]
            described = await self.describe(parents)
            for array_id, job in described.items():
                env = (job.get("container") or {}).get("environment") or []
                for index, name in enumerate(element_names(env)):
                    if name in wanted:
                        found.setdefault(wanted[name], f"{array_id}:{index}")
        return found

    async def _list(self, queue: str, name: str = "", state: str = "") -> list[dict[str, Any]]:
        """``list_jobs`` on a queue, every page, by name filter or by state."""
        jobs: list[dict[str, Any]] = []
        kwargs: dict[str, Any] = {"jobQueue": queue}
        if name:
            kwargs["filters"] = [{"name": "JOB_NAME", "values": [name]}]
        else:
            kwargs["jobStatus"] = state
        while True:
            page = await self._call("list_jobs", **kwargs)
            jobs += page.get("jobSummaryList", [])
            if not page.get("nextToken"):
                return jobs
            kwargs["nextToken"] = page["nextToken"]

    def _queues(self) -> list[str]:
        return list(
            dict.fromkeys(q for q in (self.settings.job_queue, self.settings.spot_job_queue) if q)
        )

    async def probe(self) -> TargetInfo:
        wanted = self._queues()
        queues = (await self._call("describe_job_queues", jobQueues=wanted))["jobQueues"]
        names = queue_capacity(wanted, queues, None, self.settings).compute_environments
        envs = await self._call("describe_compute_environments", computeEnvironments=names)
        # (no names: Batch would describe every environment of the account)
        cap = queue_capacity(
            wanted, queues, envs["computeEnvironments"] if names else [], self.settings
        )
        main, runnable, running = self.settings.job_queue, 0, 0
        if main in {q["jobQueueName"] for q in queues}:
            lists = await asyncio.gather(*(self._list(main, state=w) for w in _COUNTED))
            runnable, running = (len(jobs) for jobs in lists)
        s = self.settings
        wait = estimate_wait(runnable, running, cap.max_vcpus, 1.0, s.typical_job_s, s.startup_s)
        detail = f"{main}: {runnable} runnable, {running} running; max {cap.max_vcpus} vCPUs"
        return TargetInfo(
            name=self.name,
            kind="aws_batch",
            healthy=not cap.problems,
            microarchitecture=cap.microarchitecture,
            cpus=cap.max_vcpus or None,
            partitions=tuple(wanted),
            pending_jobs=runnable,
            queue_wait_s=min(wait, 86400.0),
            detail="; ".join([detail, *cap.problems]),
        )

    async def close(self) -> None:
        close = getattr(self.client, "close", None)
        if close is not None:
            close()
