"""The agent with an S3 work directory, S3 inputs and S3 outputs (moto's server)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bridge.agent.errors import WorkDirError
from bridge.agent.workdir import (
    open_workdir,
    read_executor_log,
    read_status,
    read_task,
    write_status,
    write_task,
)
from tests.bridge.agent_fixtures import (
    S3Service,
    agent_env,
    moto_s3,
    run_agent,
    s3_env,
)

__all__ = ["moto_s3", "s3_env"]  # fixtures, imported for pytest

pytestmark = pytest.mark.s3


def body(s3: S3Service, bucket: str, key: str) -> bytes:
    return bytes(s3.client().get_object(Bucket=bucket, Key=key)["Body"].read())


def test_s3_workdir_reader_and_writer(s3_env: S3Service) -> None:
    s3_env.client().create_bucket(Bucket="wd-unit")
    wd = open_workdir("s3://wd-unit/tasks/t1")
    assert read_status(wd, 1) is None
    with pytest.raises(FileNotFoundError):
        wd.read_bytes("task.json")
    write_task(wd, {"id": "t1"}, {"container_runtime": "none"})
    assert read_task(wd)["task"] == {"id": "t1"}
    write_status(wd, 1, {"state": "QUEUED"})
    assert read_status(wd, 1) == {"state": "QUEUED"}
    assert b'"state": "QUEUED"' in body(s3_env, "wd-unit", "tasks/t1/attempts/1/status.json")
    with pytest.raises(FileNotFoundError, match="NoSuchBucket"):
        open_workdir("s3://no-such-bucket/x").read_bytes("task.json")
    assert isinstance(WorkDirError("x"), OSError)


def test_task_with_s3_workdir_inputs_and_outputs(s3_env: S3Service, tmp_path: Path) -> None:
    client = s3_env.client()
    for bucket in ("work", "data"):
        client.create_bucket(Bucket=bucket)
    client.put_object(Bucket="data", Key="in/reads.txt", Body=b"r1\nr2\nr3\n")
    client.put_object(Bucket="data", Key="refs/genome/a.fa", Body=b">a\n")
    client.put_object(Bucket="data", Key="refs/genome/sub/b.fa", Body=b">b\n")
    client.put_object(Bucket="data", Key="refs/genome-other/c.fa", Body=b"no")  # not in the prefix
    task = {
        "id": "s3-task",
        "inputs": [
            {"path": "/data/reads.txt", "url": "s3://data/in/reads.txt"},
            {"path": "/ref", "url": "s3://data/refs/genome", "type": "DIRECTORY"},
        ],
        "outputs": [
            {"path": "/out/count.txt", "url": "s3://data/results/count.txt"},
            {"path": "/out/dir", "url": "s3://data/results/dir/", "type": "DIRECTORY"},
            {"path": "/out/*.log", "url": "s3://data/results/logs", "path_prefix": "/out"},
        ],
        "executors": [
            {
                "image": "alpine",
                "command": [
                    "sh",
                    "-c",
                    "wc -l < /data/reads.txt > /out/count.txt"
                    " && (cd /ref && find . -type f | sort) > /out/dir/refs.txt"
                    " && echo a > /out/x.log && echo listed",
                ],
            }
        ],
    }
    write_task(open_workdir("s3://work/prefix/s3-task/"), task, {"container_runtime": "none"})
    done = run_agent("s3://work/prefix/s3-task/", env=agent_env(tmp_path, s3_env.env))
    assert done.returncode == 0, done.stderr
    wd = open_workdir("s3://work/prefix/s3-task")
    status = read_status(wd, 1)
    assert status is not None and status["state"] == "COMPLETE", status
    assert body(s3_env, "data", "results/count.txt").strip() == b"3"
    assert body(s3_env, "data", "results/dir/refs.txt") == b"./a.fa\n./sub/b.fa\n"
    assert body(s3_env, "data", "results/logs/x.log") == b"a\n"
    sizes = {o["url"]: o["size_bytes"] for o in status["outputs"]}
    assert sizes["s3://data/results/logs/x.log"] == "2"
    assert set(sizes) == {
        "s3://data/results/count.txt",
        "s3://data/results/dir/refs.txt",
        "s3://data/results/logs/x.log",
    }
    # the executor's whole output went to the S3 work directory too
    assert read_executor_log(wd, 1, 0, "stdout") == b"listed\n"
    assert read_executor_log(wd, 1, 0, "stderr") == b""
    agent_log = wd.read_bytes("attempts/1/agent.log").decode()  # no backend can put it there
    assert "attempt 1 finished: COMPLETE" in agent_log
    assert s3_env.env["AWS_SECRET_ACCESS_KEY"] not in repr(status) + done.stderr


def test_missing_s3_input_is_a_system_error(s3_env: S3Service, tmp_path: Path) -> None:
    s3_env.client().create_bucket(Bucket="work2")
    task = {
        "inputs": [{"path": "/data/x", "url": "s3://work2/nope.txt"}],
        "executors": [{"image": "x", "command": ["true"]}],
    }
    write_task(open_workdir("s3://work2/t/"), task, {"container_runtime": "none"})
    done = run_agent("s3://work2/t/", "--attempt", "2", env=agent_env(tmp_path, s3_env.env))
    assert done.returncode == 2
    status = read_status(open_workdir("s3://work2/t/"), 2)
    assert status is not None and status["state"] == "SYSTEM_ERROR"
    (line,) = status["system_logs"]
    assert line.startswith("input /data/x from s3://work2/nope.txt could not be fetched")
    assert "ObjectNotFound" in line and "NoSuchKey" in line  # FileNotFoundError, typed
