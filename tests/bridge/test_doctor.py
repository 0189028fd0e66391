"""``bridge doctor`` against the real test services: green when healthy, and each broken
piece reported as ✘ on its own step, with a fix.

The command runs as a subprocess with its own ``bridge.toml`` (as an administrator
would run it); the Slurm cluster, the sshd and s3rver are the ones
``scripts/services/*.sh`` start.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest

from bridge.client import BridgeClient, BridgeError
from bridge.config import Settings, TargetConfig, UserConfig
from bridge.server import free_port, serve_in_thread
from tests.conftest import REPO, service_env

BRIDGE = str(Path(sys.executable).with_name("bridge"))
AGENT = str(Path(sys.executable).with_name("bridge-agent"))
S3RVER = "http://127.0.0.1:4568"

SSH_STEP = "ssh reachable, host key known"
SLURM_STEP = "slurm commands answer (sinfo, squeue)"
AGENT_STEP = "agent installed, version matches"
STORE_STEP = "object store reachable with the configured credentials"
WORKDIR_STEP = "work directory writable from the broker"
PROBE_STEP = "probe job writes the work directory from a node"


def toml_value(value: Any) -> str:
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {toml_value(v)}" for k, v in value.items()) + " }"
    return json.dumps(value)  # strings, numbers, booleans and lists read the same in TOML


def write_config(path: Path, work_url: str, targets: list[dict[str, Any]]) -> Path:
    lines = [f"work_url = {toml_value(work_url)}", ""]
    for target in targets:
        lines.append("[[targets]]")
        lines += [f"{k} = {toml_value(v)}" for k, v in target.items()]
        lines.append("")
    path.write_text("\n".join(lines))
    return path


def doctor(
    config: Path, tmp_path: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    full_env = {
        "PATH": os.environ["PATH"],
        "HOME": str(tmp_path),
        "BRIDGE_DATA_DIR": str(tmp_path / "data"),
        "BRIDGE_CONFIG": str(config),
        **(env or {}),
    }
    return subprocess.run(
        [BRIDGE, "doctor", *args],
        capture_output=True,
        text=True,
        timeout=300,
        env=full_env,
        check=False,
    )


def doctor_json(
    config: Path, tmp_path: Path, target: str, env: dict[str, str] | None = None
) -> tuple[int, dict[str, Any]]:
    result = doctor(config, tmp_path, target, "--json", env=env)
    try:
        doc = json.loads(result.stdout)
    except ValueError:
        raise AssertionError(f"not one JSON document: {result.stdout!r} {result.stderr}") from None
    (report,) = doc["targets"]
    assert doc["usable"] == report["usable"]
    return result.returncode, report


def steps(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in report["checks"]}


def assert_green(code: int, report: dict[str, Any]) -> None:
    failed = [c for c in report["checks"] if c["outcome"] == "fail"]
    assert code == 0 and report["usable"] and not failed, json.dumps(report, indent=1)
    assert all(c["seconds"] >= 0 and c["fix"] is None for c in report["checks"])


def assert_first_failure(code: int, report: dict[str, Any], step: str, *fix_words: str) -> None:
    """``step`` is the first ✘, has a fix naming ``fix_words``; nothing after it fails."""
    failed = [c for c in report["checks"] if c["outcome"] == "fail"]
    assert code == 1 and not report["usable"], json.dumps(report, indent=1)
    assert failed and failed[0]["name"] == step, json.dumps(report, indent=1)
    assert len(failed) == 1, json.dumps(report, indent=1)  # later steps are skipped, not failed
    fix = failed[0]["fix"] or ""
    for word in fix_words:
        assert word in fix, fix


# -- the services ----------------------------------------------------------------------


def slurm_env() -> dict[str, str]:
    env = service_env("slurm")
    if not env:
        pytest.skip("the Slurm test cluster is not set up: run scripts/services/slurm.sh")
    # another test may have just restarted slurmctld: give it a minute to answer
    deadline = time.monotonic() + 60
    while True:
        ping = subprocess.run(
            ["scontrol", "ping"], env={**os.environ, **env}, capture_output=True, text=True
        )
        if (
            "is UP" in ping.stdout
            and subprocess.run(
                ["sinfo", "-h"], env={**os.environ, **env}, capture_output=True
            ).returncode
            == 0
        ):
            return env
        if time.monotonic() > deadline:
            pytest.skip(f"slurmctld does not answer: {ping.stdout.strip() or ping.stderr.strip()}")
        time.sleep(1)


def ssh_target(known_hosts_key: str = "SSH_KNOWN_HOSTS", **extra: Any) -> dict[str, Any]:
    ssh = service_env("sshd")
    if not ssh:
        pytest.skip("the test sshd is not set up: run scripts/services/sshd.sh")
    try:
        socket.create_connection((ssh["SSH_HOST"], int(ssh["SSH_PORT"])), timeout=2).close()
    except OSError as err:
        pytest.skip(f"the test sshd is not listening: {err}")
    return {
        "name": "hpc",
        "kind": "slurm",
        "runner": "ssh",
        "host": ssh["SSH_HOST"],
        "port": int(ssh["SSH_PORT"]),
        "user": ssh["SSH_USER"],
        "key_file": ssh["SSH_KEY"],
        "known_hosts": ssh[known_hosts_key],
        "partition": "debug",
        "env": slurm_env(),
        # the broker's default agent path is this machine's; say where it is on the target
        "agent_command": [AGENT],
        **extra,
    }


def local_slurm_target(**extra: Any) -> dict[str, Any]:
    return {"name": "hpc", "kind": "slurm", "env": slurm_env(), **extra}


@pytest.fixture
def s3rver() -> str:
    try:
        socket.create_connection(("127.0.0.1", 4568), timeout=2).close()
    except OSError as err:
        pytest.skip(
            f"s3rver is not listening on 127.0.0.1:4568 (scripts/services/s3rver.sh): {err}"
        )
    return S3RVER


@pytest.fixture
def bucket(s3rver: str) -> Iterator[str]:
    name = f"doctor-{uuid.uuid4().hex[:10]}"
    s3 = boto3.client(
        "s3",
        endpoint_url=s3rver,
        aws_access_key_id="S3RVER",
        aws_secret_access_key="S3RVER",
        region_name="us-east-1",
    )
    s3.create_bucket(Bucket=name)
    yield name
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=name):
        for obj in page.get("Contents", []):
            s3.delete_object(Bucket=name, Key=obj["Key"])
    s3.delete_bucket(Bucket=name)


def s3_env(key: str = "S3RVER") -> dict[str, str]:
    return {
        "AWS_ENDPOINT_URL": S3RVER,
        "AWS_ACCESS_KEY_ID": key,
        "AWS_SECRET_ACCESS_KEY": key,
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_S3_ADDRESSING_STYLE": "path",
    }


# -- healthy targets ---------------------------------------------------------------------


def test_a_healthy_local_target_is_all_green(tmp_path: Path) -> None:
    config = write_config(tmp_path / "bridge.toml", str(tmp_path / "work"), [])
    result = doctor(config, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "local (local)" in result.stdout and "=> local is usable" in result.stdout
    assert f"✔ {AGENT_STEP}" in result.stdout and f"✔ {PROBE_STEP}" in result.stdout
    assert "✘" not in result.stdout
    code, report = doctor_json(config, tmp_path, "local")
    assert_green(code, report)
    by_name = steps(report)
    assert by_name[PROBE_STEP]["outcome"] == "ok"
    assert by_name[STORE_STEP]["outcome"] == "skip"  # the work directory is a path
    assert not list((tmp_path / "work" / ".doctor").glob("node-*")), "probe files are removed"


@pytest.mark.slurm
def test_a_healthy_slurm_target_is_all_green(tmp_path: Path) -> None:
    config = write_config(
        tmp_path / "bridge.toml", str(tmp_path / "work"), [local_slurm_target(partition="debug")]
    )
    code, report = doctor_json(config, tmp_path, "hpc")
    assert_green(code, report)
    by_name = steps(report)
    assert by_name[SLURM_STEP]["outcome"] == "ok" and "debug" in by_name[SLURM_STEP]["detail"]
    assert by_name[PROBE_STEP]["outcome"] == "ok"
    assert by_name[PROBE_STEP]["detail"].startswith("job ")


@pytest.mark.slurm
@pytest.mark.ssh
def test_a_healthy_slurm_target_over_ssh_is_all_green(tmp_path: Path) -> None:
    slurm_env()  # the cluster answers before the doctor is asked about it
    config = write_config(tmp_path / "bridge.toml", str(tmp_path / "work"), [ssh_target()])
    code, report = doctor_json(config, tmp_path, "hpc")
    assert_green(code, report)
    assert steps(report)[SSH_STEP]["outcome"] == "ok"


@pytest.mark.s3
def test_a_local_target_with_the_work_directory_in_a_bucket_is_green(
    tmp_path: Path, bucket: str
) -> None:
    config = write_config(tmp_path / "bridge.toml", f"s3://{bucket}/work", [])
    code, report = doctor_json(config, tmp_path, "local", env=s3_env())
    assert_green(code, report)
    assert steps(report)[STORE_STEP]["outcome"] == "ok"
    assert steps(report)[WORKDIR_STEP]["outcome"] == "ok"


# -- one broken piece at a time ---------------------------------------------------------------


@pytest.mark.slurm
@pytest.mark.ssh
def test_a_wrong_host_key_fails_the_ssh_step(tmp_path: Path) -> None:
    config = write_config(
        tmp_path / "bridge.toml",
        str(tmp_path / "work"),
        [ssh_target(known_hosts_key="SSH_KNOWN_HOSTS_WRONG")],
    )
    code, report = doctor_json(config, tmp_path, "hpc")
    assert_first_failure(code, report, SSH_STEP, "ssh-keyscan", "fingerprint")
    assert "host key" in steps(report)[SSH_STEP]["detail"]
    assert steps(report)[SLURM_STEP]["outcome"] == "skip"
    text = doctor(config, tmp_path, "hpc")
    assert text.returncode == 1
    assert f"✘ {SSH_STEP}" in text.stdout and "fix: " in text.stdout
    assert "=> hpc is NOT usable" in text.stdout


@pytest.mark.slurm
@pytest.mark.slow
def test_a_stopped_slurmctld_fails_the_slurm_step(tmp_path: Path) -> None:
    env = slurm_env()
    config = write_config(tmp_path / "bridge.toml", str(tmp_path / "work"), [local_slurm_target()])
    pid = int((REPO / ".services" / "slurm" / "run" / "slurmctld.pid").read_text())
    os.kill(pid, 15)
    try:
        deadline = time.monotonic() + 30
        while Path(f"/proc/{pid}").exists():
            assert time.monotonic() < deadline, "slurmctld did not stop"
            time.sleep(0.1)
        code, report = doctor_json(config, tmp_path, "hpc")
    finally:
        subprocess.run([str(REPO / "scripts" / "services" / "slurm.sh")], check=True, timeout=120)
        deadline = time.monotonic() + 60
        while (
            "is UP"
            not in subprocess.run(
                ["scontrol", "ping"], env={**os.environ, **env}, capture_output=True, text=True
            ).stdout
        ):
            assert time.monotonic() < deadline, "slurmctld did not come back"
            time.sleep(0.5)
    assert_first_failure(code, report, SLURM_STEP, "scontrol ping", "slurmctld")
    assert steps(report)[PROBE_STEP]["outcome"] == "skip"


@pytest.mark.parametrize(
    "kind", ["local", pytest.param("slurm-ssh", marks=[pytest.mark.slurm, pytest.mark.ssh])]
)
def test_a_missing_agent_fails_the_agent_step(tmp_path: Path, kind: str) -> None:
    missing = str(tmp_path / "nowhere" / "bin" / "bridge-agent")
    if kind == "local":
        target = {"name": "hpc", "kind": "local", "agent_command": [missing]}
    else:
        target = ssh_target(agent_command=[missing])
    config = write_config(tmp_path / "bridge.toml", str(tmp_path / "work"), [target])
    code, report = doctor_json(config, tmp_path, "hpc")
    assert_first_failure(code, report, AGENT_STEP, "bridge targets bootstrap hpc")
    assert missing in steps(report)[AGENT_STEP]["detail"]


def test_an_unwritable_work_directory_fails_the_work_directory_step(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("a file where the work directory's parent should be\n")
    work = blocker / "work"
    config = write_config(tmp_path / "bridge.toml", str(work), [])
    code, report = doctor_json(config, tmp_path, "local")
    assert_first_failure(code, report, WORKDIR_STEP, str(work), "work_url")
    assert steps(report)[PROBE_STEP]["outcome"] == "skip"
    assert steps(report)[PROBE_STEP]["detail"].startswith("needs ")


@pytest.mark.s3
def test_wrong_s3_credentials_fail_the_object_store_step(tmp_path: Path, bucket: str) -> None:
    config = write_config(tmp_path / "bridge.toml", f"s3://{bucket}/work", [])
    code, report = doctor_json(config, tmp_path, "local", env=s3_env("NOT-A-KEY"))
    assert_first_failure(code, report, STORE_STEP, "AWS_ACCESS_KEY_ID", bucket)
    assert "InvalidAccessKeyId" in steps(report)[STORE_STEP]["detail"]
    assert "NOT-A-KEY" not in json.dumps(report)  # credentials are never echoed
    assert steps(report)[WORKDIR_STEP]["outcome"] == "skip"


def test_an_unknown_target_name_is_a_clear_error(tmp_path: Path) -> None:
    config = write_config(tmp_path / "bridge.toml", str(tmp_path / "work"), [])
    result = doctor(config, tmp_path, "nope")
    assert result.returncode == 2
    assert "no target named nope" in result.stderr and "Traceback" not in result.stderr


def test_a_kind_whose_backend_is_absent_gets_one_clear_line(tmp_path: Path) -> None:
    import importlib.util

    if importlib.util.find_spec("schedulers.aws_batch") is not None:
        pytest.skip("the aws_batch backend is installed here: its real checks apply")
    config = write_config(
        tmp_path / "bridge.toml",
        str(tmp_path / "work"),
        [{"name": "cloud", "kind": "aws_batch", "job_queue": "q", "work_url": "s3://b/w"}],
    )
    code, report = doctor_json(config, tmp_path, "cloud")
    (only,) = report["checks"]
    assert only["outcome"] == "skip" and "schedulers.aws_batch is absent" in only["detail"]
    assert code == 0


# -- the same checks through the API ----------------------------------------------------------


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_target_health_over_the_api_is_for_admins(settings: Settings, tmp_path: Path) -> None:
    from bridge.api.auth import new_token

    admin_token, admin_digest = new_token()
    user_token, user_digest = new_token()
    settings = settings.model_copy(
        update={
            "port": free_port(),
            "work_url": str(tmp_path / "work"),
            "targets": [TargetConfig(name="local", kind="local", container_runtime="none")],
            "users": [
                UserConfig(name="root", token_sha256=admin_digest, admin=True),
                UserConfig(name="alice", token_sha256=user_digest),
            ],
        }
    )
    with serve_in_thread(settings) as url:
        with BridgeClient(url, token=admin_token) as admin:
            report = admin._call("GET", "/api/targets/local/health")
            assert report["target"] == "local" and report["usable"] is True
            names = [c["name"] for c in report["checks"]]
            assert AGENT_STEP in names and PROBE_STEP in names
            with pytest.raises(BridgeError) as missing:
                admin._call("GET", "/api/targets/nope/health")
            assert missing.value.status == 404
        with BridgeClient(url, token=user_token) as user, pytest.raises(BridgeError) as refused:
            user._call("GET", "/api/targets/local/health")
        assert refused.value.status == 403
