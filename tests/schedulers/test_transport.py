"""Command runners: the local one, and the SSH one against the loopback sshd."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Mapping
from pathlib import Path

import pytest

from schedulers.errors import BackendUnavailable, CommandFailed, HostKeyMismatch
from schedulers.transport import LocalRunner, SSHRunner, _remote_command

from .conftest import make_ssh_runner

pytestmark = pytest.mark.anyio

TRICKY = ["a b", "it's", '"dq"', "$HOME", "`id`", "; rm -rf /", "*", "", "new\nline"]


def test_remote_command_quotes_every_argument() -> None:
    assert _remote_command(["echo", "a b", "$X"], {}) == "echo 'a b' '$X'"
    assert _remote_command(["squeue"], {"SLURM_CONF": "/a b"}) == "env 'SLURM_CONF=/a b' squeue"
    with pytest.raises(ValueError):
        _remote_command(["true"], {"BAD;NAME": "x"})
    with pytest.raises(ValueError):
        _remote_command([], {})


async def test_local_runner_argv_env_stdin_and_failure(tmp_path: Path) -> None:
    runner = LocalRunner(env={"BASE": "1"})
    result = await runner.run(["printf", "%s|", *TRICKY])
    assert result.stdout == "".join(f"{a}|" for a in TRICKY)
    env = await runner.run(["sh", "-c", 'echo "$BASE $EXTRA"'], env={"EXTRA": "2"})
    assert env.stdout == "1 2\n"
    assert (await runner.run(["cat"], stdin="piped")).stdout == "piped"
    with pytest.raises(CommandFailed) as info:
        await runner.run(["sh", "-c", "echo boom >&2; exit 3"])
    assert info.value.returncode == 3 and "boom" in str(info.value)
    assert (await runner.run(["false"], check=False)).returncode == 1
    await runner.write_file(str(tmp_path / "a" / "b"), b"x", 0o600)
    assert (tmp_path / "a" / "b").stat().st_mode & 0o777 == 0o600
    assert await runner.read_file(str(tmp_path / "a" / "b")) == b"x"
    with pytest.raises(TimeoutError):
        await runner.run(["sleep", "5"], timeout=0.3)


@pytest.fixture
async def ssh(ssh_env: Mapping[str, str]) -> AsyncIterator[SSHRunner]:
    runner = make_ssh_runner(ssh_env, env={"RUNNER_LEVEL": "set by runner"})
    yield runner
    await runner.close()


@pytest.mark.ssh
async def test_ssh_runs_argv_exactly(ssh: SSHRunner) -> None:
    result = await ssh.run(["printf", "%s|", *TRICKY])
    assert result.stdout == "".join(f"{a}|" for a in TRICKY)


@pytest.mark.ssh
async def test_ssh_env_stdin_exit_codes_and_stderr(ssh: SSHRunner) -> None:
    env = await ssh.run(["sh", "-c", 'echo "$RUNNER_LEVEL|$PER_CALL"'], env={"PER_CALL": "x y"})
    assert env.stdout == "set by runner|x y\n"
    assert (await ssh.run(["cat"], stdin="line one\nline two\n")).stdout == "line one\nline two\n"
    failed = await ssh.run(["sh", "-c", "echo out; echo err >&2; exit 5"], check=False)
    assert (failed.returncode, failed.stdout, failed.stderr) == (5, "out\n", "err\n")
    with pytest.raises(CommandFailed) as info:
        await ssh.run(["sh", "-c", "exit 9"])
    assert info.value.returncode == 9


@pytest.mark.ssh
async def test_ssh_large_stdout_and_stderr_together(ssh: SSHRunner) -> None:
    script = "head -c 3000000 /dev/zero | tr '\\0' e >&2; head -c 3000000 /dev/zero | tr '\\0' o"
    result = await ssh.run(["sh", "-c", script], timeout=30)
    assert len(result.stdout) == 3_000_000 and set(result.stdout) == {"o"}
    assert len(result.stderr) == 3_000_000 and set(result.stderr) == {"e"}


@pytest.mark.ssh
async def test_ssh_reuses_one_connection_for_concurrent_commands(ssh: SSHRunner) -> None:
    await ssh.run(["true"])
    client = ssh._client
    results = await asyncio.gather(*(ssh.run(["echo", str(i)]) for i in range(16)))
    assert [r.stdout for r in results] == [f"{i}\n" for i in range(16)]
    assert ssh._client is client  # same connection throughout
    await ssh.close()
    assert (await ssh.run(["echo", "again"])).stdout == "again\n"  # reconnects


@pytest.mark.ssh
async def test_ssh_files_over_sftp(ssh: SSHRunner, tmp_path: Path) -> None:
    target = tmp_path / "deep" / "er" / "file.bin"
    payload = bytes(range(256)) * 4096
    await ssh.write_file(str(target), payload, 0o640)
    assert target.read_bytes() == payload
    assert target.stat().st_mode & 0o777 == 0o640
    assert await ssh.read_file(str(target)) == payload
    await ssh.write_file(str(target), b"replaced")
    assert target.read_bytes() == b"replaced"
    assert not [p for p in target.parent.iterdir() if p.name.startswith(".")]  # no temp left
    with pytest.raises(FileNotFoundError):
        await ssh.read_file(str(tmp_path / "missing"))


@pytest.mark.ssh
async def test_ssh_timeout(ssh: SSHRunner) -> None:
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        await ssh.run(["sleep", "10"], timeout=0.5)
    assert time.monotonic() - started < 5
    assert (await ssh.run(["echo", "still usable"])).stdout == "still usable\n"


@pytest.mark.ssh
async def test_wrong_host_key_is_refused_before_anything_runs(
    ssh_env: Mapping[str, str], tmp_path: Path
) -> None:
    marker = tmp_path / "ran"
    runner = make_ssh_runner(ssh_env, known_hosts=ssh_env["SSH_KNOWN_HOSTS_WRONG"])
    with pytest.raises(HostKeyMismatch, match="differs"):
        await runner.run(["touch", str(marker)])
    assert not marker.exists()


@pytest.mark.ssh
async def test_unknown_host_is_refused_never_added(
    ssh_env: Mapping[str, str], tmp_path: Path
) -> None:
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text("")
    marker = tmp_path / "ran"
    runner = make_ssh_runner(ssh_env, known_hosts=str(known_hosts))
    with pytest.raises(HostKeyMismatch, match="not in known_hosts"):
        await runner.run(["touch", str(marker)])
    assert not marker.exists()
    assert known_hosts.read_text() == ""  # nothing was added
    missing = make_ssh_runner(ssh_env, known_hosts=str(tmp_path / "absent"))
    with pytest.raises(HostKeyMismatch):
        await missing.run(["true"])


@pytest.mark.ssh
async def test_wrong_key_and_closed_port_are_unavailable(
    ssh_env: Mapping[str, str], tmp_path: Path
) -> None:
    wrong_key = str(Path(ssh_env["SSH_KNOWN_HOSTS_WRONG"]).parent / "wrong_ed25519")
    with pytest.raises(BackendUnavailable, match="authentication"):
        await make_ssh_runner(ssh_env, key_filename=wrong_key).run(["true"])
    with pytest.raises(BackendUnavailable, match="cannot connect"):
        await make_ssh_runner(ssh_env, port=1, connect_timeout=3).run(["true"])
