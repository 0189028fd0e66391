"""Submitting N like jobs to AWS Batch (moto's server here): one job each versus arrays.

Both cases go through the backend (:mod:`schedulers.aws_batch`) to the same endpoint
(container-less moto from scripts/services/moto.sh, so nothing runs and only
submission is measured), with the same job per task -- ``bridge-agent run <s3 work
URL> --attempt 1``:

* ``plain``  -- ``submit`` per job, 8 in flight (how a backend without arrays does it);
* ``arrays`` -- ``submit_array`` for all of them (one SubmitJob per array of like jobs).

Rate: jobs/s from the first call until every job has an id.  The agent image's size
is read from the local Docker (``--image``; the newest ``bridge-agent`` tag by default).

    .venv/bin/python bench/batch_submit.py [--tasks 200] [--image TAG]

The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from schedulers.aws_batch import AwsBatchBackend  # noqa: E402
from schedulers.aws_batch_settings import AwsBatchSettings  # noqa: E402
from schedulers.base import JobSpec  # noqa: E402
from tests.conftest import read_env_file  # noqa: E402
from tests.schedulers.aws_batch_env import client, make_environment  # noqa: E402


def specs(n: int, tag: str) -> list[JobSpec]:
    return [
        JobSpec(
            name=f"bridge-{tag}{i:06d}-1",
            argv=["bridge-agent", "run", f"s3://bridge-work/work/{tag}{i:06d}", "--attempt", "1"],
            workdir="/var/tmp",
        )
        for i in range(n)
    ]


async def plain(backend: AwsBatchBackend, jobs: list[JobSpec]) -> float:
    limit = asyncio.Semaphore(8)

    async def one(spec: JobSpec) -> str:
        async with limit:
            return await backend.submit(spec)

    started = time.perf_counter()
    ids = await asyncio.gather(*(one(s) for s in jobs))
    assert len(set(ids)) == len(jobs)
    return time.perf_counter() - started


async def arrays(backend: AwsBatchBackend, jobs: list[JobSpec]) -> tuple[float, int]:
    calls: list[object] = []
    backend.client.meta.events.register(
        "provide-client-params.batch.SubmitJob", lambda params, **_: calls.append(params)
    )
    started = time.perf_counter()
    ids = await backend.submit_array(jobs)
    elapsed = time.perf_counter() - started
    assert all(isinstance(i, str) for i in ids) and len(set(ids)) == len(jobs)
    return elapsed, len(calls)


def image_size(image: str | None) -> tuple[str | None, int | None]:
    docker_env = REPO / ".services" / "docker.env"
    env = {**os.environ, **(read_env_file(docker_env) if docker_env.is_file() else {})}
    if image is None:
        listed = subprocess.run(
            ["docker", "images", "bridge-agent", "--format", "{{.Repository}}:{{.Tag}}"],
            env=env, capture_output=True, text=True, check=False,
        )  # fmt: skip
        image = (listed.stdout.split() or [None])[0]
    if image is None:
        return None, None
    out = subprocess.run(
        ["docker", "image", "inspect", image, "--format", "{{.Size}}"],
        env=env, capture_output=True, text=True, check=False,
    )  # fmt: skip
    return image, int(out.stdout.strip()) if out.returncode == 0 else None


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=200)
    parser.add_argument("--image", default=None)
    args = parser.parse_args()
    url = read_env_file(REPO / ".services" / "moto.env")["MOTO_URL"]
    env = make_environment(url)
    settings = AwsBatchSettings(endpoint_url=url, job_queue=env.queue, docker_socket=None)
    tag = uuid.uuid4().hex[:6]
    backend = AwsBatchBackend("bench", settings, client=client("batch", url))
    await backend.submit(specs(1, f"w{tag}")[0])  # register the job definition first
    plain_s = await plain(backend, specs(args.tasks, f"p{tag}"))
    array_s, array_calls = await arrays(backend, specs(args.tasks, f"a{tag}"))
    image, size = image_size(args.image)
    figures = {
        "tasks": args.tasks,
        "plain_jobs_per_s": round(args.tasks / plain_s, 1),
        "array_jobs_per_s": round(args.tasks / array_s, 1),
        "array_submit_calls": array_calls,
        "arrays_over_plain": round(plain_s / array_s, 1),
        "agent_image": image,
        "agent_image_mb": round(size / 1e6, 1) if size else None,
    }
    print(f"plain:  {args.tasks} jobs in {plain_s:.2f} s ({figures['plain_jobs_per_s']} jobs/s)")
    print(
        f"arrays: {args.tasks} jobs in {array_s:.2f} s ({figures['array_jobs_per_s']} jobs/s, {array_calls} SubmitJob)"
    )
    print(
        f"arrays / plain: {figures['arrays_over_plain']}x; agent image {image}: {figures['agent_image_mb']} MB"
    )
    print(json.dumps(figures))


if __name__ == "__main__":
    asyncio.run(main())
