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
import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

from schedulers.aws_batch_parse import (
    CANCEL_REASON,
    ELEMENT_SCRIPT,
    ArrayEnvironment,
    array_environment,
    element_names,
    estimate_wait,
    job_status,
    microarchitecture,
)
from schedulers.aws_batch_settings import AwsBatchSettings
from schedulers.base import Capabilities, JobSpec, JobState, JobStatus, Resources, TargetInfo
from schedulers.errors import BackendUnavailable, SubmitError

CAPABILITIES = Capabilities(
    native_arrays=True, submit_many=False, gpus=True, object_store_workdir=True, adopt_by_name=True
)
ARRAY_PREFIX = "bridge-array-"
_UNAVAILABLE_CODES = {
    "Throttling",
    "ThrottlingException",
    "TooManyRequestsException",
    "ServiceUnavailable",
    "ServerException",
}
# Runs the job's argv in its workdir with its output files (used when the workdir is
# on a node mount); values are positional arguments, never part of the script.
_IN_WORKDIR = 'cd "$1" || exit 1; out=$2; err=$3; shift 3; exec "$@" >>"$out" 2>>"$err"'


def create(name: str, settings: AwsBatchSettings) -> AwsBatchBackend:
    return AwsBatchBackend(name, settings)


def job_name(name: str) -> str:
    """A Batch-valid job name (letters, digits, ``-``, ``_``; 128 at most)."""
    return re.sub(r"[^A-Za-z0-9_-]", "-", name)[:128]


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
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return await asyncio.to_thread(getattr(self.client, method), **kwargs)
        except ClientError as err:
            code = err.response.get("Error", {}).get("Code", "")
            status = err.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
            if code in _UNAVAILABLE_CODES or status >= 500:
                raise BackendUnavailable(f"AWS Batch {method}: {err}") from err
            raise SubmitError(f"AWS Batch {method} refused: {err}") from err
        except BotoCoreError as err:  # no connection, timeouts, bad endpoint
            raise BackendUnavailable(f"AWS Batch {method}: {err}") from err

    # -- job definitions ----------------------------------------------------------

    def _container(self, res: Resources) -> dict[str, Any]:
        s = self.settings
        requirements = [
            {"type": "VCPU", "value": str(max(1, res.cpus))},
            {"type": "MEMORY", "value": str(res.memory_mb or s.default_memory_mb)},
        ]
        if res.gpus:
            requirements.append({"type": "GPU", "value": str(res.gpus)})
        paths = [s.scratch_dir, *s.node_mounts, *([s.docker_socket] if s.docker_socket else [])]
        mounts = {f"mount{i}": p for i, p in enumerate(dict.fromkeys(paths))}
        env = [{"name": "BRIDGE_SCRATCH_DIR", "value": s.scratch_dir}]
        if s.docker_socket:
            env.append({"name": "DOCKER_HOST", "value": f"unix://{s.docker_socket}"})
        container: dict[str, Any] = {
            "image": s.image,
            "command": ["true"],
            "resourceRequirements": requirements,
            "volumes": [{"name": k, "host": {"sourcePath": p}} for k, p in mounts.items()],
            "mountPoints": [
                {"sourceVolume": k, "containerPath": p, "readOnly": False}
                for k, p in mounts.items()
            ],
            "environment": env,
        }
        if s.job_role_arn:
            container["jobRoleArn"] = s.job_role_arn
        return container

    async def _definition(self, res: Resources) -> str:
        container = self._container(res)
        key = hashlib.sha256(json.dumps(container, sort_keys=True).encode()).hexdigest()[:24]
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
        """The argv, run in its workdir when that directory is on a node mount."""
        mounts = [m.rstrip("/") + "/" for m in self.settings.node_mounts]
        if not any((spec.workdir.rstrip("/") + "/").startswith(m) for m in mounts):
            return list(spec.argv)
        out = spec.stdout_path or "/dev/stdout"
        err = spec.stderr_path or "/dev/stderr"
        return ["sh", "-c", _IN_WORKDIR, "bridge-job", spec.workdir, out, err, *spec.argv]

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
        """Members split into arrays within the size and environment budgets."""
        chunks: list[list[int]] = []
        current: list[int] = []
        for i in members:
            try:
                self._array_env(specs, [i])
            except ValueError:  # an argv that cannot be one line: a job of its own
                chunks.append([i])
                continue
            trial = [*current, i]
            if len(trial) > self.settings.max_array_size or (
                len(trial) > 1
                and self._array_env(specs, trial).size_bytes > self.settings.max_array_env_bytes
            ):
                chunks.append(current)
                trial = [i]
            current = trial
        return [*chunks, current] if current else chunks

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
                    JobState.LOST, reason=f"AWS Batch has no record of job {job_id}"
                )
                continue
            status = job_status(job, self.settings.image)
            if status.state is JobState.CANCELLED and job_id not in self._cancelled:
                status = JobStatus(
                    status.state,
                    status.exit_code,
                    f"terminated outside the broker: {status.reason}",
                    status.native_state,
                )
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

    async def _list(self, queue: str, name: str) -> list[dict[str, Any]]:
        jobs: list[dict[str, Any]] = []
        kwargs: dict[str, Any] = {
            "jobQueue": queue,
            "filters": [{"name": "JOB_NAME", "values": [name]}],
        }
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

    async def _count(self, queue: str, state: str) -> int:
        count, kwargs = 0, {"jobQueue": queue, "jobStatus": state}
        while True:
            page = await self._call("list_jobs", **kwargs)
            count += len(page.get("jobSummaryList", []))
            if not page.get("nextToken"):
                return count
            kwargs["nextToken"] = page["nextToken"]

    async def probe(self) -> TargetInfo:
        queues = (await self._call("describe_job_queues", jobQueues=self._queues())).get(
            "jobQueues", []
        )
        problems = [
            f"queue {q} not found"
            for q in self._queues()
            if q not in {x["jobQueueName"] for x in queues}
        ]
        problems += [
            f"queue {q['jobQueueName']} is {q.get('state')}/{q.get('status')}"
            for q in queues
            if q.get("state") != "ENABLED" or q.get("status") != "VALID"
        ]
        envs = [
            e["computeEnvironment"] for q in queues for e in q.get("computeEnvironmentOrder", [])
        ]
        described = (
            (await self._call("describe_compute_environments", computeEnvironments=envs)).get(
                "computeEnvironments", []
            )
            if envs
            else []
        )
        usable = [
            e for e in described if e.get("state") == "ENABLED" and e.get("status") == "VALID"
        ]
        if not usable:
            problems.append("no enabled and valid compute environment")
        max_vcpus = sum(int((e.get("computeResources") or {}).get("maxvCpus", 0)) for e in usable)
        types = [
            t for e in usable for t in (e.get("computeResources") or {}).get("instanceTypes", [])
        ]
        arch = self.settings.microarchitecture or microarchitecture(
            types, self.settings.microarchitecture_table()
        )
        main = self.settings.job_queue
        runnable, running = await asyncio.gather(
            self._count(main, "RUNNABLE"), self._count(main, "RUNNING")
        )
        wait = estimate_wait(
            runnable, running, max_vcpus, 1.0, self.settings.typical_job_s, self.settings.startup_s
        )
        detail = [
            f"queues {', '.join(self._queues())}: {runnable} runnable, {running} running; max {max_vcpus} vCPUs",
            *problems,
        ]
        return TargetInfo(
            name=self.name,
            kind="aws_batch",
            healthy=not problems,
            microarchitecture=arch,
            cpus=max_vcpus or None,
            partitions=tuple(self._queues()),
            pending_jobs=runnable,
            queue_wait_s=wait if wait != float("inf") else 86400.0,
            detail="; ".join(detail),
        )

    async def close(self) -> None:
        close = getattr(self.client, "close", None)
        if close is not None:
            close()
