"""Command runners: how a backend runs a command on its target.

A runner runs an *argument vector* (never a shell string) and returns its output.
:class:`LocalRunner` runs on this machine; :class:`SSHRunner` runs on another host
over one reused SSH connection (paramiko).  Backends take a runner and know nothing
of where it runs.

The SSH runner's choices:

* **Host keys are enforced.**  The server's key must be in the given known_hosts file
  (OpenSSH format, ``[host]:port`` entries for non-standard ports).  An unknown or
  different key raises :class:`~schedulers.errors.HostKeyMismatch` before anything
  runs; keys are never added automatically.
* **Argument vectors only.**  The remote side of SSH always hands the command to the
  user's login shell, so the vector is quoted with :func:`shlex.join` (POSIX quoting:
  the login shell must be sh-compatible — bash, dash, zsh, ksh).  Environment
  variables travel as an ``env K=V ... argv`` prefix because sshd drops most
  client-sent variables and a non-interactive remote environment is nearly empty
  (Slurm commands need ``SLURM_CONF`` there, for instance).  That prefix is visible
  in the remote process list, so it is for configuration, never for secrets; large
  or private data goes through stdin or a file.
* **One connection, many channels.**  The connection opens lazily, is reused by
  every command and by SFTP, reopens once if it dropped, and commands run
  concurrently on separate channels (bounded, below sshd's ``MaxSessions``).
  paramiko is blocking, so each call runs in a worker thread.
"""

from __future__ import annotations

import asyncio
import logging
import os
import posixpath
import shlex
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, Protocol

from schedulers.errors import BackendUnavailable, CommandFailed, HostKeyMismatch

if TYPE_CHECKING:
    import paramiko

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CommandResult:
    returncode: int
    stdout: str
    stderr: str


class CommandRunner(Protocol):
    """Runs commands and moves small files on one host."""

    async def run(
        self,
        argv: Sequence[str],
        *,
        stdin: str | None = None,
        env: Mapping[str, str] | None = None,
        timeout: float | None = None,
        check: bool = True,
    ) -> CommandResult:
        """Run ``argv``; raise :class:`CommandFailed` on non-zero exit if ``check``."""
        ...

    async def write_file(self, path: str, data: bytes, mode: int = 0o644) -> None:
        """Create or replace a file on the host (parents are created)."""
        ...

    async def read_file(self, path: str) -> bytes:
        """Read a file on the host; ``FileNotFoundError`` if it is missing."""
        ...

    async def close(self) -> None: ...


class LocalRunner:
    """Runs commands on this machine with :mod:`asyncio` subprocesses."""

    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        self._base_env = dict(env or {})

    async def run(
        self,
        argv: Sequence[str],
        *,
        stdin: str | None = None,
        env: Mapping[str, str] | None = None,
        timeout: float | None = None,
        check: bool = True,
    ) -> CommandResult:
        full_env = {**os.environ, **self._base_env, **(env or {})}
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=full_env,
        )
        try:
            out, err = await asyncio.wait_for(
                proc.communicate(stdin.encode() if stdin is not None else None), timeout
            )
        except (TimeoutError, asyncio.CancelledError):
            # a command nobody waits for any more must not run on (a probe job's srun
            # would hold a place in the queue)
            proc.kill()
            await proc.wait()
            raise
        result = CommandResult(
            proc.returncode or 0, out.decode(errors="replace"), err.decode(errors="replace")
        )
        if check and result.returncode != 0:
            raise CommandFailed(argv, result.returncode, result.stdout, result.stderr)
        return result

    async def write_file(self, path: str, data: bytes, mode: int = 0o644) -> None:
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.tmp{os.getpid()}")
        tmp.write_bytes(data)
        tmp.chmod(mode)
        tmp.replace(target)

    async def read_file(self, path: str) -> bytes:
        return Path(path).read_bytes()

    async def close(self) -> None:
        return None


def _remote_command(argv: Sequence[str], env: Mapping[str, str]) -> str:
    """The shell string sshd hands to the remote login shell for ``argv``."""
    if not argv:
        raise ValueError("empty argument vector")
    for key in env:
        if not key or "=" in key or not key.replace("_", "a").isalnum():
            raise ValueError(f"invalid environment variable name {key!r}")
    prefix = ["env", *(f"{k}={v}" for k, v in env.items())] if env else []
    return shlex.join([*prefix, *argv])


class SSHRunner:
    """Runs commands on one host over SSH, enforcing its known host key.

    ``known_hosts`` is an OpenSSH known_hosts file (default ``~/.ssh/known_hosts``);
    authentication uses ``key_filename`` and/or the SSH agent.  ``env`` is set for
    every command (e.g. ``{"SLURM_CONF": "/etc/slurm/slurm.conf"}``).
    """

    def __init__(
        self,
        host: str,
        *,
        port: int = 22,
        user: str | None = None,
        key_filename: str | None = None,
        known_hosts: str | None = None,
        use_agent: bool = True,
        env: Mapping[str, str] | None = None,
        connect_timeout: float = 15.0,
        max_channels: int = 8,
    ) -> None:
        self.host = host
        self.port = port
        self.user = user
        self._key_filename = key_filename
        self._known_hosts = known_hosts or os.path.expanduser("~/.ssh/known_hosts")
        self._use_agent = use_agent
        self._base_env = dict(env or {})
        self._connect_timeout = connect_timeout
        self._channels = asyncio.Semaphore(max_channels)
        self._lock = threading.Lock()  # guards the client and the SFTP session
        self._sftp_lock = threading.Lock()  # one SFTP operation at a time
        self._client: paramiko.SSHClient | None = None
        self._sftp: paramiko.SFTPClient | None = None

    def __repr__(self) -> str:
        return f"SSHRunner({self.user or ''}@{self.host}:{self.port})"

    # -- connection -------------------------------------------------------------------
    def _connect(self) -> paramiko.SSHClient:
        """Return the live client, connecting (or reconnecting) if needed."""
        pm = _import_paramiko()
        with self._lock:
            client = self._client
            transport = client.get_transport() if client is not None else None
            if client is not None and transport is not None and transport.is_active():
                return client
            self._drop()
            if not os.path.exists(self._known_hosts):
                raise HostKeyMismatch(f"known_hosts file {self._known_hosts} does not exist")
            client = pm.SSHClient()
            client.load_host_keys(self._known_hosts)
            client.set_missing_host_key_policy(_reject_unknown_host())
            try:
                client.connect(
                    self.host,
                    port=self.port,
                    username=self.user,
                    key_filename=self._key_filename,
                    allow_agent=self._use_agent,
                    look_for_keys=False,
                    timeout=self._connect_timeout,
                    banner_timeout=self._connect_timeout,
                    auth_timeout=self._connect_timeout,
                )
            except pm.BadHostKeyException as err:
                client.close()
                raise HostKeyMismatch(
                    f"host key of {self.host}:{self.port} differs from {self._known_hosts}"
                ) from err
            except HostKeyMismatch:
                client.close()
                raise
            except pm.AuthenticationException as err:
                client.close()
                raise BackendUnavailable(
                    f"ssh authentication to {self.user or ''}@{self.host}:{self.port} failed: {err}"
                ) from err
            except (OSError, pm.SSHException) as err:
                client.close()
                raise BackendUnavailable(
                    f"cannot connect to {self.host}:{self.port} over ssh: {err}"
                ) from err
            transport = client.get_transport()
            if transport is not None:
                transport.set_keepalive(30)
            self._client = client
            return client

    def _drop(self) -> None:
        if self._sftp is not None:
            self._sftp.close()
            self._sftp = None
        if self._client is not None:
            self._client.close()
            self._client = None

    def _open_channel(self) -> paramiko.Channel:
        pm = _import_paramiko()
        for attempt in (1, 2):
            client = self._connect()
            transport = client.get_transport()
            try:
                if transport is None:
                    raise pm.SSHException("no transport")
                return transport.open_session(timeout=self._connect_timeout)
            except (OSError, pm.SSHException) as err:
                with self._lock:
                    self._drop()
                if attempt == 2:
                    raise BackendUnavailable(f"ssh channel to {self.host} failed: {err}") from err
        raise AssertionError("unreachable")

    def _sftp_session(self) -> paramiko.SFTPClient:
        client = self._connect()
        with self._lock:
            if self._sftp is None:
                self._sftp = client.open_sftp()
            return self._sftp

    # -- commands ---------------------------------------------------------------------
    async def run(
        self,
        argv: Sequence[str],
        *,
        stdin: str | None = None,
        env: Mapping[str, str] | None = None,
        timeout: float | None = None,
        check: bool = True,
    ) -> CommandResult:
        command = _remote_command(argv, {**self._base_env, **(env or {})})
        log.debug("ssh %s: %s", self.host, shlex.join(argv))
        async with self._channels:
            channel = await asyncio.to_thread(self._open_channel)
            try:
                result = await asyncio.wait_for(
                    asyncio.to_thread(_exec_on_channel, channel, command, stdin), timeout
                )
            except TimeoutError:
                channel.close()
                raise
        if check and result.returncode != 0:
            raise CommandFailed(argv, result.returncode, result.stdout, result.stderr)
        return result

    # -- files ------------------------------------------------------------------------
    async def write_file(self, path: str, data: bytes, mode: int = 0o644) -> None:
        await asyncio.to_thread(self._write_file, path, data, mode)

    def _write_file(self, path: str, data: bytes, mode: int) -> None:
        sftp = self._sftp_session()
        with self._sftp_lock:
            _sftp_makedirs(sftp, posixpath.dirname(path))
            tmp = posixpath.join(
                posixpath.dirname(path), f".{posixpath.basename(path)}.tmp{os.getpid()}"
            )
            with sftp.open(tmp, "wb") as handle:
                handle.set_pipelined(True)
                handle.write(data)
            sftp.chmod(tmp, mode)
            sftp.posix_rename(tmp, path)

    async def read_file(self, path: str) -> bytes:
        return await asyncio.to_thread(self._read_file, path)

    def _read_file(self, path: str) -> bytes:
        sftp = self._sftp_session()
        with self._sftp_lock:
            try:
                with sftp.open(path, "rb") as handle:
                    handle.prefetch()
                    return handle.read()
            except FileNotFoundError:
                raise
            except OSError as err:
                if getattr(err, "errno", None) == 2:
                    raise FileNotFoundError(2, f"{self.host}:{path} does not exist") from err
                raise

    async def close(self) -> None:
        with self._lock:
            self._drop()


def _exec_on_channel(channel: paramiko.Channel, command: str, stdin: str | None) -> CommandResult:
    """Run ``command`` on an open session channel; read stdout and stderr together."""
    with channel:
        channel.exec_command(command)
        if stdin is not None:
            channel.sendall(stdin.encode())
        channel.shutdown_write()
        err_chunks: list[bytes] = []
        # Both streams share one flow-control window: drain stderr in a second thread
        # so that a command writing a lot to stderr cannot stall its stdout.
        drain = threading.Thread(target=_drain_stderr, args=(channel, err_chunks), daemon=True)
        drain.start()
        out_chunks: list[bytes] = []
        while chunk := channel.recv(65536):
            out_chunks.append(chunk)
        drain.join()
        code = channel.recv_exit_status()
    return CommandResult(
        code,
        b"".join(out_chunks).decode(errors="replace"),
        b"".join(err_chunks).decode(errors="replace"),
    )


def _drain_stderr(channel: paramiko.Channel, chunks: list[bytes]) -> None:
    while chunk := channel.recv_stderr(65536):
        chunks.append(chunk)


def _sftp_makedirs(sftp: paramiko.SFTPClient, path: str) -> None:
    """``mkdir -p`` over SFTP."""
    if not path or path == "/":
        return
    try:
        sftp.stat(path)
        return
    except FileNotFoundError:
        pass
    except OSError as err:
        if getattr(err, "errno", None) != 2:
            raise
    _sftp_makedirs(sftp, posixpath.dirname(path))
    sftp.mkdir(path)


def _import_paramiko() -> Any:
    try:
        import paramiko
    except ImportError as err:  # pragma: no cover - depends on the installation
        raise ImportError(
            "the SSH runner needs paramiko: pip install 'converged-bridge[slurm]'"
        ) from err
    return paramiko


def _reject_unknown_host() -> paramiko.MissingHostKeyPolicy:
    """paramiko's RejectPolicy, raising our typed error for an unknown host."""
    _import_paramiko()
    import paramiko

    class RejectUnknownHost(paramiko.RejectPolicy):
        def missing_host_key(
            self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey
        ) -> NoReturn:
            raise HostKeyMismatch(
                f"{hostname} is not in known_hosts (its {key.get_name()} key is refused)"
            )

    policy: paramiko.MissingHostKeyPolicy = RejectUnknownHost()
    return policy
