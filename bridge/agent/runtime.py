"""Container runtimes: which one runs an executor, and the command line that does it.

``runtime.container_runtime`` in ``task.json`` chooses:

``none``
    The executor runs on the host.  Container paths are mapped under the attempt's
    root and rewritten in argv, env, workdir and stdio (see :mod:`bridge.agent.paths`);
    the image is *not* used, which the attempt records (``image_used: false``).
``docker`` / ``podman``
    ``<engine> run --rm --name N -v host:container ... [-w WORKDIR] [-e NAME ...] [-i]
    IMAGE ARGV...``.  The image's entrypoint is kept (as Funnel and most TES servers
    do), so ``command`` is what ``docker run IMAGE command`` would run.  Environment
    values are never on the command line: ``-e NAME`` makes the engine copy the value
    from the client's environment, which the agent sets.  podman gets ``--runtime
    runc`` (``crun`` fails on some kernels; ``runtime.podman_runtime`` overrides it,
    an empty value drops the flag) and raised ``nofile``/``nproc`` ulimits.
``charliecloud``
    ``ch-run [-w] -b host:container ... [-c WORKDIR] IMAGE -- ARGV...``.  The image is a
    directory holding a root file system (or a name in ``$CH_IMAGE_STORAGE``).
    ``ch-run`` passes the environment through, so executor env goes in the process
    environment.  A bind destination must exist in the image; if one does not, ``-w``
    mounts the image writable so ``ch-run`` can create it (this changes the image
    directory: use images the attempt may modify, or pre-create the mount points).
    ``ch-run`` binds a file only onto an existing file, so an input file whose path
    the image lacks is exposed through its parent directory.
``sandbox``
    ``bwrap ... -- ARGV...`` (:mod:`bridge.agent.sandbox`): the executor runs on the
    host's read-only root (or on the image, when it is a root file-system directory as
    for charliecloud) in its own mount namespace, with every declared path bound at its
    container path and a private ``/tmp``.  Nothing is rewritten, so paths inside
    scripts and files work.  Needs bubblewrap and user namespaces (or root).
``auto``
    For each executor, the first of docker, podman, charliecloud that works here *and*
    has the executor's image (present locally, or pulled for docker/podman); else
    ``sandbox`` where bwrap can make one; otherwise ``none``.  The choice and each
    rejection are reported as system log lines.

Stdin/stdout/stderr redirection always happens on the host, on the runtime client's
own streams, so the same code serves every runtime.  Everything here that decides
a command line is a pure function; only :class:`RuntimeSelector` runs probes.
"""

from __future__ import annotations

import enum
import getpass
import os
import posixpath
import re
import shutil
import subprocess
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bridge.agent.errors import RuntimeUnavailable
from bridge.agent.paths import Bind, PathMap
from bridge.agent.sandbox import RootDir, bwrap_argv, probe_argv
from bridge.agent.task import Executor

PROBE_TIMEOUT_S = 15.0
PULL_TIMEOUT_S = 900.0
PODMAN_ULIMITS = ("--ulimit", "nofile=20000:20000", "--ulimit", "nproc=32768:32768")


class RuntimeKind(enum.StrEnum):
    NONE = "none"
    DOCKER = "docker"
    PODMAN = "podman"
    CHARLIECLOUD = "charliecloud"
    SANDBOX = "sandbox"


ENGINES = (RuntimeKind.DOCKER, RuntimeKind.PODMAN, RuntimeKind.CHARLIECLOUD)
"""The runtimes that run an image, in the order ``auto`` tries them."""
BINARIES = {
    RuntimeKind.DOCKER: "docker",
    RuntimeKind.PODMAN: "podman",
    RuntimeKind.CHARLIECLOUD: "ch-run",
    RuntimeKind.SANDBOX: "bwrap",
}
NONE_NOTE = (
    "runtime none: container paths are rewritten in argv, env, workdir and stdio only; "
    "paths inside files and scripts are not mapped"
)


@dataclass(frozen=True)
class Launch:
    """How to start one executor: argv, its environment and directory."""

    argv: list[str]
    env: dict[str, str]
    cwd: Path | None
    runtime: RuntimeKind
    image_used: bool
    cleanup_argv: list[str] | None = None  # run when the executor is canceled
    notes: list[str] = field(default_factory=list)
    make_dirs: list[str] = field(default_factory=list)  # host directories to create first


def engine_prefix(kind: RuntimeKind, podman_runtime: str | None = "runc") -> list[str]:
    if kind is RuntimeKind.PODMAN:
        return ["podman", "--runtime", podman_runtime] if podman_runtime else ["podman"]
    return ["docker"]


def oci_run_argv(
    engine: Sequence[str],
    image: str,
    command: Sequence[str],
    *,
    binds: Sequence[Bind],
    workdir: str | None,
    env_names: Sequence[str],
    name: str,
    interactive: bool,
    extra: Sequence[str] = (),
) -> list[str]:
    """``docker run`` / ``podman run`` argv (pure)."""
    argv = [*engine, "run", "--rm", "--name", name, *extra]
    if interactive:
        argv.append("-i")
    for bind in binds:
        argv += ["-v", f"{bind.host}:{bind.container}"]
    if workdir:
        argv += ["-w", workdir]
    for env_name in env_names:
        argv += ["-e", env_name]
    return [*argv, image, *command]


def charliecloud_argv(
    image: str,
    command: Sequence[str],
    *,
    binds: Sequence[Bind],
    workdir: str | None,
    writable: bool,
) -> list[str]:
    """``ch-run`` argv (pure)."""
    argv = ["ch-run"]
    if writable:
        argv.append("-w")
    for bind in binds:
        argv += ["-b", f"{bind.host}:{bind.container}"]
    if workdir:
        argv += ["-c", workdir]
    return [*argv, image, "--", *command]


def charliecloud_image(image: str, env: Mapping[str, str] | None = None) -> Path | None:
    """The image directory for a path or a name in Charliecloud's storage, if it exists."""
    if not image:
        return None
    env = os.environ if env is None else env
    if image.startswith("/"):
        path = Path(image)
        return path if path.is_dir() else None
    storage = env.get("CH_IMAGE_STORAGE") or f"/var/tmp/{env.get('USER') or getpass.getuser()}.ch"
    path = Path(storage) / "img" / image.replace("/", "%").replace(":", "+")
    return path if path.is_dir() else None


def charliecloud_binds(binds: Sequence[Bind], image_dir: Path, paths: PathMap) -> list[Bind]:
    """Binds ``ch-run`` can make: it binds a file only onto a file the image has.

    A file whose destination is missing from the image is exposed by binding its
    parent directory instead (the host tree mirrors the container tree).
    """
    wanted: list[str] = []
    for bind in binds:
        target = image_dir / bind.container.lstrip("/")
        if Path(bind.host).is_file() and not target.is_file():
            parent = posixpath.dirname(bind.container)
            wanted.append(bind.container if parent == "/" else parent)
        else:
            wanted.append(bind.container)
    return paths.collapse(wanted)


def container_name(task_id: str, attempt: int, index: int) -> str:
    safe = re.sub(r"[^a-zA-Z0-9_.-]", "-", task_id)[:60]
    return f"bridge-{safe}-a{attempt}-e{index}-{os.getpid()}"


def sandbox_launch(
    ex: Executor, *, paths: PathMap, binds: Sequence[Bind], base_env: Mapping[str, str]
) -> Launch:
    """The ``sandbox`` launch: the image directory as ``/`` if there is one, else the
    host's root.  ``TMPDIR`` of the agent is dropped (its ``/tmp`` is not the task's)."""
    image_dir = charliecloud_image(ex.image, base_env) if ex.image else None
    root = RootDir(image_dir or "/")
    plan = bwrap_argv(
        ex.command, root=root, paths=paths, wanted=[b.container for b in binds], workdir=ex.workdir
    )
    env = {k: v for k, v in base_env.items() if k != "TMPDIR"}
    env.update(ex.env)
    if image_dir is not None:
        notes = [f"sandbox: image directory {image_dir} is the root file system"]
    elif ex.image:
        notes = [
            f"sandbox: image {ex.image!r} is not a directory here; "
            "the host's root file system is used, read-only"
        ]
    else:
        notes = ["sandbox: the host's root file system is used, read-only"]
    make_dirs = [b.host for b in plan.binds if not Path(b.host).exists()]
    return Launch(
        plan.argv,
        env,
        None,
        RuntimeKind.SANDBOX,
        image_used=image_dir is not None,
        notes=notes,
        make_dirs=make_dirs,
    )


def plan_launch(
    kind: RuntimeKind,
    ex: Executor,
    *,
    paths: PathMap,
    binds: Sequence[Bind],
    base_env: Mapping[str, str],
    name: str,
    podman_runtime: str | None = "runc",
) -> Launch:
    """The :class:`Launch` of executor ``ex`` with runtime ``kind`` (pure but for
    Charliecloud and the sandbox, which look at the image directory or host root)."""
    if kind is RuntimeKind.SANDBOX:
        return sandbox_launch(ex, paths=paths, binds=binds, base_env=base_env)
    if kind is RuntimeKind.NONE:
        env = {**base_env, **{k: paths.rewrite(v) for k, v in ex.env.items()}}
        cwd = paths.host(ex.workdir) if ex.workdir else paths.root
        argv = [paths.rewrite(a) for a in ex.command]
        return Launch(argv, env, cwd, kind, image_used=False)
    env = {**base_env, **ex.env}
    if kind is RuntimeKind.CHARLIECLOUD:
        image_dir = charliecloud_image(ex.image, base_env)
        if image_dir is None:
            raise RuntimeUnavailable(f"charliecloud: image {ex.image!r} is not a directory here")
        env.setdefault("USER", base_env.get("USER") or getpass.getuser())
        binds = charliecloud_binds(binds, image_dir, paths)
        missing = [b.container for b in binds if not (image_dir / b.container.lstrip("/")).exists()]
        argv = charliecloud_argv(
            str(image_dir), ex.command, binds=binds, workdir=ex.workdir, writable=bool(missing)
        )
        notes = (
            [f"charliecloud: image mounted writable to create {', '.join(missing)}"]
            if missing
            else []
        )
        return Launch(argv, env, None, kind, image_used=True, notes=notes)
    engine = engine_prefix(kind, podman_runtime)
    extra = PODMAN_ULIMITS if kind is RuntimeKind.PODMAN else ()
    argv = oci_run_argv(
        engine,
        ex.image,
        ex.command,
        binds=binds,
        workdir=ex.workdir,
        env_names=sorted(ex.env),
        name=name,
        interactive=ex.stdin is not None,
        extra=extra,
    )
    return Launch(argv, env, None, kind, image_used=True, cleanup_argv=[*engine, "rm", "-f", name])


Prober = Callable[[Sequence[str], float], bool]


def run_probe(argv: Sequence[str], timeout: float) -> bool:
    """True if ``argv`` exits 0 within ``timeout`` seconds (output discarded)."""
    try:
        done = subprocess.run(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=timeout,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


class RuntimeSelector:
    """Chooses the runtime of each executor from ``runtime.container_runtime``."""

    def __init__(
        self,
        requested: str,
        *,
        podman_runtime: str | None = "runc",
        which: Callable[[str], str | None] = shutil.which,
        probe: Prober = run_probe,
    ) -> None:
        self.requested = requested
        self.podman_runtime = podman_runtime
        self._which = which
        self._probe = probe
        self._engine_ok: dict[RuntimeKind, str | None] = {}

    def engine_problem(self, kind: RuntimeKind) -> str | None:
        """``None`` if the runtime can run executors here, else why not."""
        if kind is RuntimeKind.NONE:
            return None
        if kind not in self._engine_ok:
            problem: str | None = None
            binary = BINARIES[kind]
            if self._which(binary) is None:
                problem = f"{binary} is not installed"
                if kind is RuntimeKind.SANDBOX:
                    problem += " (Debian package bubblewrap)"
            elif kind is RuntimeKind.SANDBOX:
                if not self._probe(probe_argv(), PROBE_TIMEOUT_S):
                    problem = (
                        "bwrap cannot make a sandbox here (are unprivileged user "
                        "namespaces disabled?)"
                    )
            elif kind is not RuntimeKind.CHARLIECLOUD:
                info = [*engine_prefix(kind, self.podman_runtime), "info"]
                if not self._probe(info, PROBE_TIMEOUT_S):
                    problem = f"{kind.value} engine is not reachable ('{' '.join(info)}' failed)"
            self._engine_ok[kind] = problem
        return self._engine_ok[kind]

    def _image_problem(self, kind: RuntimeKind, image: str) -> str | None:
        if kind is RuntimeKind.CHARLIECLOUD:
            return None if charliecloud_image(image) else f"image {image!r} is not a directory here"
        engine = engine_prefix(kind, self.podman_runtime)
        if self._probe([*engine, "image", "inspect", image], PROBE_TIMEOUT_S):
            return None
        if self._probe([*engine, "pull", image], PULL_TIMEOUT_S):
            return None
        return f"image {image!r} is not present and could not be pulled"

    def choose(self, image: str) -> tuple[RuntimeKind, list[str]]:
        """The runtime for an executor with ``image``, and system-log notes.

        Raises :class:`RuntimeUnavailable` when a specific runtime was asked for and
        cannot run here.
        """
        if self.requested == "none":
            return RuntimeKind.NONE, []
        if self.requested != "auto":
            kind = RuntimeKind(self.requested)
            problem = self.engine_problem(kind)
            if problem is None and kind is RuntimeKind.CHARLIECLOUD:
                problem = self._image_problem(kind, image)
            if problem:
                raise RuntimeUnavailable(f"container runtime {kind.value}: {problem}")
            return kind, []
        notes: list[str] = []
        if image:
            for kind in ENGINES:
                problem = self.engine_problem(kind) or self._image_problem(kind, image)
                if problem is None:
                    return kind, [*notes, f"auto: {kind.value} chosen"]
                notes.append(f"auto: {kind.value} not used: {problem}")
        else:
            notes.append("auto: the executor names no image; no container engine is needed")
        problem = self.engine_problem(RuntimeKind.SANDBOX)
        if problem is None:
            return RuntimeKind.SANDBOX, [*notes, "auto: sandbox chosen"]
        notes.append(f"auto: sandbox not used: {problem}")
        return RuntimeKind.NONE, [*notes, "auto: none chosen"]
