"""The real ``bridge-agent`` on real local work directories (runtime ``none``)."""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

from bridge.agent.workdir import open_workdir, read_executor_log
from tests.bridge.agent_fixtures import (
    AGENT,
    HttpServer,
    agent_env,
    http_server,
    make_workdir,
    run_agent,
    status_of,
    wait_for,
)

__all__ = ["http_server"]  # the fixture, imported for pytest


def rfc3339(value: str) -> dt.datetime:
    parsed = dt.datetime.fromisoformat(value)
    assert parsed.tzinfo is not None, value
    return parsed


def sh(script: str, **extra: Any) -> dict[str, Any]:
    return {"image": "alpine", "command": ["sh", "-c", script], **extra}


def test_full_task_stages_runs_and_uploads(tmp_path: Path, http_server: HttpServer) -> None:
    src = tmp_path / "src"
    (src / "refdir" / "nested").mkdir(parents=True)
    (src / "in.txt").write_text("one\ntwo\n")
    (src / "plain.txt").write_text("plain\n")
    (src / "refdir" / "a").write_text("A")
    (src / "refdir" / "nested" / "b").write_text("B")
    (http_server.root / "web.txt").write_text("from the web\n")
    results = tmp_path / "results"
    task = {
        "id": "full-1",
        "inputs": [
            {"path": "/data/in.txt", "url": f"file://{src}/in.txt"},
            {"path": "/data/plain.txt", "url": str(src / "plain.txt")},
            {"path": "/data/web.txt", "url": f"{http_server.url}/web.txt"},
            {"path": "/data/inline.txt", "content": "inline\n"},
            {"path": "/ref", "url": str(src / "refdir"), "type": "DIRECTORY"},
        ],
        "outputs": [
            {"path": "/out/summary.txt", "url": f"file://{results}/summary.txt"},
            {"path": "/out/dir", "url": f"{results}/dir", "type": "DIRECTORY"},
            {"path": "/out/*.csv", "url": f"file://{results}/csv/", "path_prefix": "/out"},
            {"path": "/out/count.txt", "url": str(results / "count.txt")},
        ],
        "volumes": ["/scratchvol"],
        "executors": [
            sh(
                "cat /data/in.txt /data/plain.txt /data/web.txt /data/inline.txt > /out/summary.txt"
                " && (cd /ref && find . -type f | sort) > /out/dir/listing.txt"
                " && mkdir -p /out/dir/sub && echo deep > /out/dir/sub/deep.txt"
                " && echo 1,2 > /out/a.csv && echo 3,4 > /out/b.csv && echo done"
            ),
            {
                "image": "alpine",
                "command": ["wc", "-l"],
                "stdin": "/out/summary.txt",
                "stdout": "/out/count.txt",
            },
            sh(
                'pwd; echo "$WHERE"; ls -A /scratchvol | wc -l; echo warn >&2',
                workdir="/work/here",
                env={"WHERE": "/work/here/x"},
            ),
        ],
    }
    wd = make_workdir(tmp_path / "wd", task)
    done = run_agent(str(wd), env=agent_env(tmp_path))
    assert done.returncode == 0, done.stderr
    status = status_of(str(wd))
    assert status["state"] == "COMPLETE", status["system_logs"]
    assert [e["exit_code"] for e in status["executors"]] == [0, 0, 0]
    start, end = rfc3339(status["start_time"]), rfc3339(status["end_time"])
    assert start <= rfc3339(status["executors"][0]["start_time"]) <= end

    assert (results / "summary.txt").read_text() == "one\ntwo\nplain\nfrom the web\ninline\n"
    assert (results / "dir" / "listing.txt").read_text() == "./a\n./nested/b\n"
    assert (results / "dir" / "sub" / "deep.txt").read_text() == "deep\n"
    assert (results / "csv" / "a.csv").read_text() == "1,2\n"
    assert (results / "csv" / "b.csv").read_text() == "3,4\n"
    assert (results / "count.txt").read_text().strip() == "5"

    logs = {o["path"]: o for o in status["outputs"]}
    assert set(logs) == {
        "/out/summary.txt",
        "/out/dir/listing.txt",
        "/out/dir/sub/deep.txt",
        "/out/a.csv",
        "/out/b.csv",
        "/out/count.txt",
    }
    assert logs["/out/summary.txt"]["size_bytes"] == str(
        len("one\ntwo\nplain\nfrom the web\ninline\n")
    )
    assert logs["/out/a.csv"]["url"] == f"file://{results}/csv/a.csv"
    assert logs["/out/dir/sub/deep.txt"]["url"] == f"{results}/dir/sub/deep.txt"

    # workdir, env and volume were mapped under the attempt's root; the volume is empty
    pwd, where, count = status["executors"][2]["stdout"].splitlines()
    assert pwd.endswith("/root/work/here") and pwd != "/work/here"
    assert where == pwd + "/x"
    assert count.strip() == "0"
    assert status["executors"][2]["stderr"] == "warn\n"
    assert status["executors"][0]["stdout"] == "done\n"
    # the executor that named its stdout file: the tail and the work-dir copy still exist
    assert status["executors"][1]["stdout"].strip() == "5"
    assert read_executor_log(open_workdir(str(wd)), 1, 1, "stdout") == b"5\n"
    assert (wd / "attempts/1/executor-2.stderr").read_text() == "warn\n"

    meta = status["metadata"]
    assert meta["image_used"] == "false" and meta["container_runtime"] == "none"
    assert meta["host"] == os.uname().nodename
    assert any("'alpine' was not used" in line for line in status["system_logs"])
    assert not Path(meta["scratch_dir"]).exists()  # scratch removed after the attempt


def test_non_zero_exit_stops_the_executors(tmp_path: Path) -> None:
    marker = tmp_path / "second-ran"
    task = {
        "executors": [sh("echo before; exit 3"), sh(f"touch {marker}")],
        "outputs": [{"path": "/data/partial.txt", "url": str(tmp_path / "p.txt")}],
    }
    wd = make_workdir(tmp_path / "wd", task)
    done = run_agent(str(wd), env=agent_env(tmp_path))
    status = status_of(str(wd))
    assert (done.returncode, status["state"]) == (1, "EXECUTOR_ERROR")
    assert [e["exit_code"] for e in status["executors"]] == [3]
    assert status["executors"][0]["stdout"] == "before\n"
    assert not marker.exists()
    # a missing output after an executor error is logged, the state stays EXECUTOR_ERROR
    assert any("/data/partial.txt" in line for line in status["system_logs"])


def test_ignore_error_records_the_code_and_continues(tmp_path: Path) -> None:
    task = {"executors": [sh("exit 4", ignore_error=True), sh("echo after")]}
    wd = make_workdir(tmp_path / "wd", task)
    assert run_agent(str(wd), env=agent_env(tmp_path)).returncode == 0
    status = status_of(str(wd))
    assert status["state"] == "COMPLETE"
    assert [e["exit_code"] for e in status["executors"]] == [4, 0]
    assert status["executors"][1]["stdout"] == "after\n"


def test_failed_input_is_a_system_error_and_nothing_runs(
    tmp_path: Path, http_server: HttpServer
) -> None:
    marker = tmp_path / "ran"
    task = {
        "inputs": [
            {"path": "/data/x", "url": f"{http_server.url}/missing.txt?X-Amz-Signature=s1g"}
        ],
        "executors": [sh(f"touch {marker}")],
    }
    wd = make_workdir(tmp_path / "wd", task)
    done = run_agent(str(wd), env=agent_env(tmp_path))
    status = status_of(str(wd))
    assert (done.returncode, status["state"]) == (2, "SYSTEM_ERROR")
    assert status["executors"] == [] and not marker.exists()
    (line,) = [x for x in status["system_logs"] if x.startswith("input /data/x")]
    assert "HTTP 404" in line and "missing.txt" in line
    assert "s1g" not in line  # the signature is redacted


def test_missing_output_after_success_is_a_system_error(tmp_path: Path) -> None:
    task = {
        "executors": [sh("echo ok > /data/made.txt")],
        "outputs": [
            {"path": "/data/made.txt", "url": str(tmp_path / "made.txt")},
            {"path": "/data/never.txt", "url": str(tmp_path / "never.txt")},
        ],
    }
    wd = make_workdir(tmp_path / "wd", task)
    run_agent(str(wd), env=agent_env(tmp_path))
    status = status_of(str(wd))
    assert status["state"] == "SYSTEM_ERROR"
    assert [o["path"] for o in status["outputs"]] == ["/data/made.txt"]
    assert "output /data/never.txt: not created by the executors" in status["system_logs"]
    assert (tmp_path / "made.txt").read_text() == "ok\n"


def test_stdout_tail_is_the_last_64_kib(tmp_path: Path) -> None:
    script = "i=0; while [ $i -lt 2000 ]; do printf '%099d\\n' $i; i=$((i+1)); done; echo END"
    wd = make_workdir(tmp_path / "wd", {"executors": [sh(script)]})
    run_agent(str(wd), env=agent_env(tmp_path))
    status = status_of(str(wd))
    tail = status["executors"][0]["stdout"]
    assert len(tail.encode()) == 64 * 1024 and tail.endswith("01999\nEND\n")
    assert (wd / "attempts/1/executor-0.stdout").stat().st_size == 2000 * 100 + 4


def test_program_not_found_is_an_executor_error(tmp_path: Path) -> None:
    task = {"executors": [{"image": "x", "command": ["/no/such/program", "arg"]}]}
    wd = make_workdir(tmp_path / "wd", task)
    run_agent(str(wd), env=agent_env(tmp_path))
    status = status_of(str(wd))
    assert status["state"] == "EXECUTOR_ERROR"
    assert status["executors"][0]["exit_code"] == 127
    assert "cannot run '/no/such/program'" in status["executors"][0]["stderr"]


def test_sigterm_cancels_the_running_executor(tmp_path: Path) -> None:
    pidfile = tmp_path / "pid"
    task = {"executors": [sh(f"echo $$ > {pidfile}; sleep 60; echo not-here"), sh("true")]}
    wd = make_workdir(tmp_path / "wd", task)
    agent = subprocess.Popen(
        [AGENT, "run", str(wd)], env=agent_env(tmp_path), stderr=subprocess.PIPE
    )
    try:
        executor_pid = int(
            wait_for(lambda: pidfile.exists() and pidfile.read_text().strip(), what="pid")
        )
        assert status_of(str(wd))["state"] == "RUNNING"
        agent.send_signal(signal.SIGTERM)
        assert agent.wait(timeout=15) == 143
    finally:
        agent.kill()
        agent.communicate()
    status = status_of(str(wd))
    assert status["state"] == "CANCELED"
    assert status["end_time"] is not None
    assert [e["exit_code"] for e in status["executors"]] == [128 + signal.SIGTERM]
    assert any("SIGTERM" in line for line in status["system_logs"])
    stat = Path(f"/proc/{executor_pid}/stat")
    assert not stat.exists() or stat.read_text().split(")")[1].split()[0] == "Z"


def test_sigterm_during_staging_cancels_at_once(tmp_path: Path, http_server: HttpServer) -> None:
    task = {
        "inputs": [{"path": "/data/big", "url": f"{http_server.url}/slow"}],
        "executors": [sh("true")],
    }
    wd = make_workdir(tmp_path / "wd", task)
    agent = subprocess.Popen(
        [AGENT, "run", str(wd)], env=agent_env(tmp_path), stderr=subprocess.PIPE
    )
    try:
        scratch = tmp_path / "scratch"
        wait_for(lambda: list(scratch.glob("*/root/data/.big.*.part")), what="a partial download")
        started = time.monotonic()
        agent.send_signal(signal.SIGTERM)
        assert agent.wait(timeout=10) == 143
        assert time.monotonic() - started < 3
    finally:
        agent.kill()
        agent.communicate()
    status = status_of(str(wd))
    assert status["state"] == "CANCELED" and status["executors"] == []
    assert not list((tmp_path / "scratch").iterdir())  # scratch removed, no partial file left


def test_output_symlinks_leaving_the_task_are_not_uploaded(tmp_path: Path) -> None:
    secret_file = tmp_path / "host-secret"
    secret_file.write_text("host only\n")
    script = f"echo fine > /out/dir/ok.txt && ln -s {secret_file} /out/dir/leak.txt"
    task = {
        "executors": [sh(script)],
        "outputs": [{"path": "/out/dir", "url": str(tmp_path / "up"), "type": "DIRECTORY"}],
    }
    wd = make_workdir(tmp_path / "wd", task)
    run_agent(str(wd), env=agent_env(tmp_path))
    status = status_of(str(wd))
    assert status["state"] == "SYSTEM_ERROR"
    assert [o["path"] for o in status["outputs"]] == ["/out/dir/ok.txt"]
    assert (tmp_path / "up" / "ok.txt").read_text() == "fine\n"
    assert not (tmp_path / "up" / "leak.txt").exists()
    assert any("links outside the task's files" in line for line in status["system_logs"])


def test_secrets_stay_out_of_status_and_agent_log(tmp_path: Path, http_server: HttpServer) -> None:
    secret = "s3cr3t-value-123"
    aws_secret = "aws-secret-value-789"
    task = {
        "executors": [
            sh(
                'test "$MY_SECRET_TOKEN" = s3cr3t-value-123 && echo ok; exit 1',
                env={"MY_SECRET_TOKEN": secret},
            )
        ]
    }
    wd = make_workdir(tmp_path / "wd", task, {"api_url": http_server.url})
    env = agent_env(
        tmp_path, {"AWS_SECRET_ACCESS_KEY": aws_secret, "BRIDGE_AGENT_TOKEN": "agent-tok-456"}
    )
    done = run_agent(str(wd), "-v", env=env)
    status = status_of(str(wd))
    assert status["executors"][0]["stdout"] == "ok\n"  # the executor did get its value
    written = (wd / "attempts/1/status.json").read_text() + done.stderr + done.stdout
    posted = repr([body for _, _, body in http_server.posts])
    for value in (secret, aws_secret, "agent-tok-456"):
        assert value not in written and value not in posted
    # the token went to the broker as a header, nowhere else
    assert http_server.posts[0][1]["Authorization"] == "Bearer agent-tok-456"


def test_progress_is_posted_to_the_api(tmp_path: Path, http_server: HttpServer) -> None:
    task = {"id": "task/42", "executors": [sh("echo hi")]}
    wd = make_workdir(tmp_path / "wd", task, {"api_url": http_server.url + "/"})
    assert run_agent(str(wd), env=agent_env(tmp_path)).returncode == 0
    paths = {path for path, _, _ in http_server.posts}
    assert paths == {"/internal/tasks/task%2F42/status"}
    states = [body["state"] for _, _, body in http_server.posts]
    assert states[0] == "INITIALIZING" and "RUNNING" in states and states[-1] == "COMPLETE"
    assert http_server.posts[-1][2] == status_of(str(wd))


def test_unreachable_api_never_fails_the_task(tmp_path: Path) -> None:
    import socket

    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    wd = make_workdir(
        tmp_path / "wd", {"executors": [sh("echo hi")]}, {"api_url": f"http://127.0.0.1:{port}"}
    )
    done = run_agent(str(wd), env=agent_env(tmp_path))
    assert done.returncode == 0 and status_of(str(wd))["state"] == "COMPLETE"
    assert "status post" in done.stderr


def test_attempt_number_and_file_url(tmp_path: Path) -> None:
    wd = make_workdir(tmp_path / "wd", {"executors": [sh("echo three")]}, {"attempt": 2})
    assert run_agent(f"file://{wd}", "--attempt", "3", env=agent_env(tmp_path)).returncode == 0
    assert not (wd / "attempts/2").exists()
    assert status_of(str(wd), 3)["attempt"] == 3
    assert (wd / "attempts/3/executor-0.stdout").read_text() == "three\n"


def test_bad_task_file_is_reported(tmp_path: Path) -> None:
    wd = tmp_path / "wd"
    wd.mkdir()
    (wd / "task.json").write_text('{"task": {"id": "t", "executors": [{"command": "ls"}]}}')
    done = run_agent(str(wd), env=agent_env(tmp_path))
    status = status_of(str(wd))
    assert (done.returncode, status["state"]) == (2, "SYSTEM_ERROR")
    assert "executors[0].command must be a non-empty list" in status["system_logs"][0]
    assert run_agent(str(tmp_path / "nowhere"), env=agent_env(tmp_path)).returncode == 2


def test_explicit_runtime_that_cannot_run_is_a_system_error(tmp_path: Path) -> None:
    wd = make_workdir(
        tmp_path / "wd",
        {"executors": [sh("true")]},
        {"container_runtime": "charliecloud"},
    )
    run_agent(str(wd), env=agent_env(tmp_path))
    status = status_of(str(wd))
    assert status["state"] == "SYSTEM_ERROR" and status["executors"] == []
    assert status["system_logs"][-1].startswith("container runtime charliecloud:")


def test_local_backend_runs_and_cancels_the_agent(tmp_path: Path) -> None:
    import asyncio

    from schedulers.base import JobSpec, JobState
    from schedulers.local import LocalBackend

    backend = LocalBackend()
    done_wd = make_workdir(tmp_path / "done", {"executors": [sh("echo via backend")]})
    slow_wd = make_workdir(tmp_path / "slow", {"executors": [sh("sleep 60")]})

    def job(wd: Path) -> JobSpec:
        return JobSpec(
            name=wd.name,
            argv=[AGENT, "run", str(wd), "--attempt", "1"],
            workdir=str(wd),
            env={"BRIDGE_SCRATCH_DIR": str(tmp_path / "scratch")},
            stdout_path=str(wd / "attempts/1/agent.log"),
            stderr_path=str(wd / "attempts/1/agent.log"),
        )

    async def scenario() -> tuple[JobState, JobState]:
        done_id, slow_id = await backend.submit_array([job(done_wd), job(slow_wd)])
        await asyncio.to_thread(
            wait_for, lambda: (slow_wd / "attempts/1/executor-0.stdout").exists(), 10, "start"
        )
        await backend.cancel([slow_id])
        for _ in range(200):
            states = await backend.status([done_id, slow_id])
            if all(s.state.finished for s in states.values()):
                return states[done_id].state, states[slow_id].state
            await asyncio.sleep(0.05)
        raise AssertionError("jobs did not finish")

    assert asyncio.run(scenario()) == (JobState.COMPLETED, JobState.CANCELLED)
    assert status_of(str(done_wd))["executors"][0]["stdout"] == "via backend\n"
    assert status_of(str(slow_wd))["state"] == "CANCELED"
    assert "attempt 1 finished: CANCELED" in (slow_wd / "attempts/1/agent.log").read_text()
