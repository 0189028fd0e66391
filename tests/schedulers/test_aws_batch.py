"""The AWS Batch backend's API contract against moto's server in container-less mode
(jobs succeed at submission; nothing runs).  What runs in containers is in the
conformance suite and the broker tests (docker mode)."""

from __future__ import annotations

import socket
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest

from schedulers.aws_batch import CAPABILITIES, AwsBatchBackend, create
from schedulers.aws_batch_settings import AwsBatchSettings
from schedulers.base import JobSpec, JobState, Resources
from schedulers.errors import BackendUnavailable, SubmitError
from tests.schedulers.aws_batch_env import BatchEnvironment, client, make_environment, moto_url

pytestmark = [pytest.mark.batch, pytest.mark.anyio]


@pytest.fixture(scope="module")
def environment() -> BatchEnvironment:
    """One set of queues for the module (each test's jobs have their own names)."""
    return make_environment(moto_url())


def settings_for(env: BatchEnvironment, **extra: Any) -> AwsBatchSettings:
    return AwsBatchSettings(
        endpoint_url=env.url,
        job_queue=env.queue,
        spot_job_queue=env.spot_queue,
        job_definition_prefix=f"bridge-{uuid.uuid4().hex[:8]}",  # fresh definitions per test
        **extra,
    )


def make_backend(settings: AwsBatchSettings) -> AwsBatchBackend:
    """A backend whose client carries moto's test credentials."""
    return AwsBatchBackend("batch", settings, client=client("batch", str(settings.endpoint_url)))


@pytest.fixture
async def backend(environment: BatchEnvironment) -> AsyncIterator[AwsBatchBackend]:
    backend = make_backend(settings_for(environment))
    yield backend
    await backend.close()


async def test_create_builds_a_client_from_the_settings(
    environment: BatchEnvironment, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    backend = create("batch", settings_for(environment))
    assert CAPABILITIES.native_arrays and CAPABILITIES.object_store_workdir
    assert (await backend.status([await backend.submit(job("bridge-c0-1"))])).popitem()[
        1
    ].state is JobState.COMPLETED


def job(name: str, *argv: str, **resources: Any) -> JobSpec:
    return JobSpec(
        name=name, argv=list(argv or ["true"]), workdir="/nowhere", resources=Resources(**resources)
    )


def count_calls(backend: AwsBatchBackend, operation: str) -> list[dict[str, Any]]:
    calls: list[dict[str, Any]] = []
    backend.client.meta.events.register(
        f"provide-client-params.batch.{operation}", lambda params, **_: calls.append(params)
    )
    return calls


async def test_like_jobs_share_one_definition_and_a_restart_reuses_it(
    backend: AwsBatchBackend, environment: BatchEnvironment
) -> None:
    registered = count_calls(backend, "RegisterJobDefinition")
    first = await backend.describe(
        [await backend.submit(job("bridge-a-1")), await backend.submit(job("bridge-b-1"))]
    )
    assert len({j["jobDefinition"] for j in first.values()}) == 1
    assert len(registered) == 1
    bigger = await backend.describe(
        [await backend.submit(job("bridge-c-1", cpus=4, memory_mb=8192, gpus=1))]
    )
    assert len(registered) == 2
    definition = client("batch", environment.url).describe_job_definitions(
        jobDefinitions=[next(iter(bigger.values()))["jobDefinition"]]
    )["jobDefinitions"][0]
    requirements = {
        r["type"]: r["value"] for r in definition["containerProperties"]["resourceRequirements"]
    }
    assert requirements == {"VCPU": "4", "MEMORY": "8192", "GPU": "1"}
    restarted = make_backend(backend.settings)
    again = count_calls(restarted, "RegisterJobDefinition")
    reused = await restarted.describe([await restarted.submit(job("bridge-d-1"))])
    assert not again
    assert next(iter(reused.values()))["jobDefinition"] in {
        j["jobDefinition"] for j in first.values()
    }


async def test_preemptible_jobs_go_to_the_spot_queue(
    backend: AwsBatchBackend, environment: BatchEnvironment
) -> None:
    spot = await backend.submit(job("bridge-spot-1", preemptible=True))
    plain = await backend.submit(job("bridge-plain-1"))
    found = await backend.describe([spot, plain])
    assert found[spot]["jobQueue"].endswith(f"/{environment.spot_queue}")
    assert found[plain]["jobQueue"].endswith(f"/{environment.queue}")


async def test_the_job_gets_its_argv_env_and_time_limit(backend: AwsBatchBackend) -> None:
    spec = JobSpec(
        name="bridge-e-1",
        argv=["bridge-agent", "run", "s3://work/e", "--attempt", "1"],
        workdir="/nowhere",
        env={"BRIDGE_X": "1"},
        resources=Resources(wall_time_s=3600),
    )
    found = await backend.describe([await backend.submit(spec)])
    described = next(iter(found.values()))
    assert described["container"]["command"] == list(spec.argv)
    assert {"name": "BRIDGE_X", "value": "1"} in described["container"]["environment"]
    assert described["timeout"] == {"attemptDurationSeconds": 3600}
    assert described["jobName"] == "bridge-e-1"


async def test_like_jobs_go_out_as_one_array_job(backend: AwsBatchBackend) -> None:
    submitted = count_calls(backend, "SubmitJob")
    specs = [job(f"bridge-el{i}-1", "echo", str(i)) for i in range(5)] + [
        job("bridge-big-1", cpus=2)
    ]
    ids = await backend.submit_array(specs)
    assert all(isinstance(i, str) for i in ids)
    parent = str(ids[0]).split(":")[0]
    assert ids[:5] == [f"{parent}:{i}" for i in range(5)]
    assert ":" not in str(ids[5])  # a different shape: a job of its own
    assert sorted(c.get("arrayProperties", {}).get("size", 0) for c in submitted) == [0, 5]
    states = await backend.status([str(i) for i in ids])
    assert {s.state for s in states.values()} == {JobState.COMPLETED}


async def test_an_array_too_large_for_one_environment_is_split(
    environment: BatchEnvironment,
) -> None:
    backend = make_backend(settings_for(environment, max_array_env_bytes=2000))
    submitted = count_calls(backend, "SubmitJob")
    ids = await backend.submit_array(
        [job(f"bridge-{i:032x}-1", "echo", f"{i:032x}") for i in range(60)]
    )
    sizes = [c["arrayProperties"]["size"] for c in submitted]
    assert sum(sizes) == 60 and len(sizes) > 1
    assert all(len(str(c["containerOverrides"]["environment"])) < 4000 for c in submitted)
    assert len(set(ids)) == 60


async def test_states_come_in_chunks_of_100_and_unknown_jobs_are_lost(
    backend: AwsBatchBackend,
) -> None:
    ids = [str(i) for i in await backend.submit_array([job(f"bridge-s{i}-1") for i in range(150)])]
    calls = count_calls(backend, "DescribeJobs")
    states = await backend.status([*ids, "no-such-job"])
    assert len(calls) == 2 and all(len(c["jobs"]) <= 100 for c in calls)
    assert states["no-such-job"].state is JobState.LOST
    assert sum(s.state is JobState.COMPLETED for s in states.values()) == 150


async def test_a_restarted_backend_adopts_jobs_by_name(backend: AwsBatchBackend) -> None:
    plain = await backend.submit(job("bridge-p-1"))
    ids = await backend.submit_array([job(f"bridge-q{i}-1") for i in range(3)])
    restarted = make_backend(backend.settings)
    found = await restarted.adopt(["bridge-p-1", "bridge-q2-1", "bridge-never-1"])
    assert found == {"bridge-p-1": plain, "bridge-q2-1": ids[2]}


async def test_terminate_is_sent_with_the_broker_s_reason(backend: AwsBatchBackend) -> None:
    sent = count_calls(backend, "TerminateJob")
    job_id = await backend.submit(job("bridge-t-1"))
    await backend.cancel([job_id, "no-such-job"])
    assert [c["jobId"] for c in sent] == [job_id, "no-such-job"]
    assert all(c["reason"].startswith("bridge:") for c in sent)


async def test_probe_describes_queue_and_capacity(backend: AwsBatchBackend) -> None:
    info = await backend.probe()
    assert info.healthy, info.detail
    assert info.cpus == 16
    assert info.microarchitecture == "icelake"  # c6i, from the instance family table
    assert info.queue_wait_s == 0
    stated = make_backend(backend.settings.model_copy(update={"microarchitecture": "zen4"}))
    assert (await stated.probe()).microarchitecture == "zen4"


async def test_a_missing_queue_is_unhealthy_and_refuses_jobs(environment: BatchEnvironment) -> None:
    backend = make_backend(
        settings_for(environment).model_copy(update={"job_queue": "no-such-queue"})
    )
    info = await backend.probe()
    assert not info.healthy and "no-such-queue" in info.detail
    with pytest.raises(SubmitError, match="no-such-queue"):
        await backend.submit(job("bridge-r-1"))


async def test_an_endpoint_that_does_not_answer_is_unavailable(
    environment: BatchEnvironment,
) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    settings = settings_for(environment).model_copy(
        update={"endpoint_url": f"http://127.0.0.1:{port}"}
    )
    backend = AwsBatchBackend("batch", settings, client=client("batch", str(settings.endpoint_url)))
    with pytest.raises(BackendUnavailable):
        await backend.submit(job("bridge-u-1"))
