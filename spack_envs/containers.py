"""Container images built for one CPU target, pushed to a registry, named by content.

:func:`render_containerfile` (and :func:`render_apptainer_def` for HPC sites) turn an
:class:`~spack_envs.requests.EnvRequest` into a build recipe whose build environment
carries the target's compiler flags (``-march``/``-mcpu`` from archspec for the image's
compiler, so anything pip or a build step compiles is tuned for that CPU) and whose
label records the target.  :class:`ImageBuilder` builds it with the engine found
(``docker``, ``buildah`` or ``podman``), pushes ("freezes") it to an OCI registry under
a tag derived from the request's key, and reports the pushed digest.  It can also add
the node agent to a task's own image, once per image digest, for backends that run
the task's image directly.

:func:`compatibility_problem` is the check made *before* any build: code for an arm
target cannot run on x86 nodes, and ``x86_64_v4`` code does not run on a ``zen2``
cluster; the answer is the reason in words, or ``None``.
"""

from __future__ import annotations

import hashlib
import json
import shlex
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from spack_envs import targets
from spack_envs.requests import EnvRequest
from spack_envs.spack import CommandRunner, LocalRunner

TARGET_LABEL = "org.converged-bridge.target"
KEY_LABEL = "org.converged-bridge.env-key"
AGENT_LABEL = "org.converged-bridge.agent-for"
DEFAULT_COMPILER = ("gcc", "12")  # Debian bookworm's gcc, the base images' compiler
ENGINES = ("docker", "buildah", "podman")


class ImageBuildError(RuntimeError):
    """A build or push failed; the message ends with the tail of the engine's output."""


# -- compatibility --------------------------------------------------------------------


def compatibility_problem(wanted: str, host_targets: Sequence[str]) -> str | None:
    """Why code built for ``wanted`` cannot run on every one of ``host_targets``, or None."""
    try:
        want = targets.target(wanted)
    except targets.UnknownTarget as err:
        return str(err)
    for host_name in host_targets:
        try:
            host = targets.target(host_name)
        except targets.UnknownTarget:
            continue  # a host archspec does not know: nothing to say about it
        if targets.runs_on(wanted, host_name):
            continue
        if str(want.family) != str(host.family):
            return (
                f"{wanted} is an {want.family} target and the nodes are {host.family} "
                f"({host_name}): its code cannot run there"
            )
        missing = sorted(set(want.features) - set(host.features))
        detail = f" (they lack {', '.join(missing[:6])})" if missing else ""
        return f"{wanted} code does not run on {host_name} nodes{detail}"
    return None


# -- recipes --------------------------------------------------------------------------


def target_flags(target_name: str, compiler: tuple[str, str] = DEFAULT_COMPILER) -> str:
    """The archspec flags for the image's compiler, or '' when archspec has none."""
    return targets.compiler_flags(target_name, compiler[0], compiler[1])


def image_tag(request: EnvRequest) -> str:
    """A tag that names the content: the target and the request's key."""
    return f"{request.target.replace('_', '-')}-{request.key}"


def _apt_packages(request: EnvRequest) -> list[str]:
    pkgs = set(request.apt)
    if request.pip:
        pkgs |= {"python3", "python3-pip"}
    return sorted(pkgs)


BUILD_CA = "build-ca.pem"
"""Name, in the build context and under /usr/local/share/bridge/, of the CA bundle pip
trusts during the build (sites that intercept TLS need theirs)."""


def render_containerfile(request: EnvRequest, base_image: str, ca_bundle: bool = False) -> str:
    """A Dockerfile/Containerfile for ``request`` on ``base_image``.

    With ``ca_bundle`` the build context holds :data:`BUILD_CA`, used by pip."""
    flags = target_flags(request.target)
    lines = [
        f"FROM {base_image}",
        f'LABEL {TARGET_LABEL}="{request.target}" {KEY_LABEL}="{request.key}"',
        f'ENV BRIDGE_TARGET="{request.target}" CFLAGS="{flags}" CXXFLAGS="{flags}" '
        f'FFLAGS="{flags}" DEBIAN_FRONTEND=noninteractive',
    ]
    apt = _apt_packages(request)
    if apt:
        lines.append(
            "RUN apt-get update -qq && apt-get install -y -qq --no-install-recommends "
            f"{shlex.join(apt)} >/dev/null && rm -rf /var/lib/apt/lists/*"
        )
    if request.pip:
        cert = ""
        if ca_bundle:
            lines.append(f"COPY {BUILD_CA} /usr/local/share/bridge/{BUILD_CA}")
            cert = f"--cert /usr/local/share/bridge/{BUILD_CA} "
        lines.append(
            "RUN python3 -m pip install --no-cache-dir --break-system-packages -q "
            f"{cert}"
            f"{shlex.join(sorted(set(request.pip)))}"
        )
    return "\n".join(lines) + "\n"


def render_apptainer_def(request: EnvRequest, base_image: str) -> str:
    """The same recipe as an Apptainer/Singularity definition file."""
    flags = target_flags(request.target)
    post = []
    apt = _apt_packages(request)
    if apt:
        post.append(
            "    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "
            f"--no-install-recommends {shlex.join(apt)} && rm -rf /var/lib/apt/lists/*"
        )
    if request.pip:
        post.append(
            "    python3 -m pip install --no-cache-dir --break-system-packages "
            f"{shlex.join(sorted(set(request.pip)))}"
        )
    return "\n".join(
        [
            "Bootstrap: docker",
            f"From: {base_image}",
            "",
            "%labels",
            f"    {TARGET_LABEL} {request.target}",
            f"    {KEY_LABEL} {request.key}",
            "",
            "%environment",
            f'    export BRIDGE_TARGET="{request.target}"',
            "",
            "%post",
            f'    export CFLAGS="{flags}" CXXFLAGS="{flags}" FFLAGS="{flags}"',
            *post,
            "",
        ]
    )


# -- building -------------------------------------------------------------------------


def find_engine(preferred: Sequence[str] = ENGINES) -> str | None:
    """The first container engine installed here, or None."""
    for name in preferred:
        if shutil.which(name):
            return name
    return None


@dataclass(frozen=True)
class BuiltImage:
    reference: str  # registry/repository:tag
    digest: str  # sha256:... of the pushed manifest ('' when not pushed)

    @property
    def pinned(self) -> str:
        """The reference pinned by digest when there is one."""
        if not self.digest:
            return self.reference
        return f"{self.reference.rsplit(':', 1)[0]}@{self.digest}"


class ImageBuilder:
    """Builds, pushes and inspects images with one engine, through a command runner."""

    def __init__(
        self,
        engine: str | None = None,
        registry: str = "",
        repository: str = "bridge-env",
        runner: CommandRunner | None = None,
        env: Mapping[str, str] | None = None,
        timeout: float = 1800.0,
        ca_bundle: Path | None = None,
    ) -> None:
        found = engine or find_engine()
        if found is None:
            raise ImageBuildError(f"no container engine found (looked for {', '.join(ENGINES)})")
        self.engine = found
        self.registry = registry.rstrip("/")
        self.repository = repository
        self.runner = runner or LocalRunner()
        self.env = {"DOCKER_BUILDKIT": "0", **(env or {})}
        self.timeout = timeout
        self.ca_bundle = ca_bundle

    def reference(self, tag: str, repository: str | None = None) -> str:
        repo = repository or self.repository
        return f"{self.registry}/{repo}:{tag}" if self.registry else f"{repo}:{tag}"

    def _run(self, args: Sequence[str], log_path: Path | None) -> str:
        argv = [self.engine, *args]
        result = self.runner.run(argv, env=self.env, timeout=self.timeout)
        if log_path is not None:
            with log_path.open("a") as log:
                log.write(f"$ {shlex.join(argv)}\n{result.output}\n[exit {result.returncode}]\n")
        if result.returncode != 0:
            tail = "\n".join(result.output.strip().splitlines()[-15:])
            raise ImageBuildError(
                f"{self.engine} {args[0]} failed (exit {result.returncode}):\n{tail}"
            )
        return result.output

    def labels(self, reference: str) -> dict[str, str]:
        """The image's labels ({} if it has none)."""
        fmt = "{{json .Config.Labels}}"
        out = self._run(["image", "inspect", "--format", fmt, reference], None)
        return dict(json.loads(out.strip() or "null") or {})

    def pushed_digest(self, reference: str) -> str:
        """The registry digest a local image was pushed with ('' if none is known)."""
        out = self._run(["image", "inspect", "--format", "{{json .RepoDigests}}", reference], None)
        repo = reference.rsplit(":", 1)[0]
        for entry in json.loads(out.strip() or "null") or []:
            name, _, digest = str(entry).partition("@")
            if name == repo:
                return digest
        return ""

    def exists(self, reference: str) -> bool:
        argv = [self.engine, "image", "inspect", reference]
        return self.runner.run(argv, env=self.env, timeout=60).returncode == 0

    def _build(self, recipe: str, reference: str, log_path: Path) -> None:
        with tempfile.TemporaryDirectory(prefix="bridge-image-") as context:
            containerfile = Path(context) / "Containerfile"
            containerfile.write_text(recipe)
            if self.ca_bundle is not None:
                shutil.copyfile(self.ca_bundle, Path(context) / BUILD_CA)
            if self.engine == "buildah":
                args = ["bud", "--network", "host", "-t", reference, "-f", str(containerfile)]
            else:
                args = ["build", "--network", "host", "-t", reference, "-f", str(containerfile)]
            self._run([*args, context], log_path)

    def push(self, reference: str, log_path: Path) -> str:
        """Push ``reference``; its manifest digest (``sha256:…``)."""
        if not self.registry:
            return ""
        if self.engine == "buildah":
            with tempfile.TemporaryDirectory() as tmp:
                digest_file = Path(tmp) / "digest"
                self._run(
                    ["push", "--tls-verify=false", "--digestfile", str(digest_file), reference],
                    log_path,
                )
                return digest_file.read_text().strip()
        out = self._run(["push", reference], log_path)
        for word in out.split():
            if word.startswith("sha256:"):
                return word
        raise ImageBuildError(f"{self.engine} push printed no digest for {reference}")

    def build(self, request: EnvRequest, base_image: str, build_dir: Path) -> BuiltImage:
        """Write the recipes into ``build_dir``, build, push; the pushed image."""
        build_dir.mkdir(parents=True, exist_ok=True)
        recipe = render_containerfile(request, base_image, ca_bundle=self.ca_bundle is not None)
        (build_dir / "Containerfile").write_text(recipe)
        (build_dir / "apptainer.def").write_text(render_apptainer_def(request, base_image))
        log_path = build_dir / "build.log"
        reference = self.reference(image_tag(request))
        self._build(recipe, reference, log_path)
        return BuiltImage(reference, self.push(reference, log_path))

    def add_agent(self, image: str, digest: str, agent_dir: Path, build_dir: Path) -> BuiltImage:
        """``image`` plus the node agent (``agent_dir`` copied to ``/opt/bridge-agent``).

        The result is tagged by the source image's digest, so it is built once per
        digest: a second call finds the tag and returns it without building.
        """
        tag = "agent-" + hashlib.sha256(digest.encode()).hexdigest()[:24]
        reference = self.reference(tag, repository=f"{self.repository}-agent")
        if self.exists(reference):
            return BuiltImage(reference, self.pushed_digest(reference))
        build_dir.mkdir(parents=True, exist_ok=True)
        log_path = build_dir / "build.log"
        with tempfile.TemporaryDirectory(prefix="bridge-agent-image-") as context:
            shutil.copytree(agent_dir, Path(context) / "agent")
            (Path(context) / "Containerfile").write_text(
                f'FROM {image}\nLABEL {AGENT_LABEL}="{digest}"\nCOPY agent /opt/bridge-agent\n'
                'ENV PATH="/opt/bridge-agent/bin:$PATH"\n'
            )
            verb = "bud" if self.engine == "buildah" else "build"
            self._run(
                [
                    verb,
                    "--network",
                    "host",
                    "-t",
                    reference,
                    "-f",
                    str(Path(context) / "Containerfile"),
                    context,
                ],
                log_path,
            )
        return BuiltImage(reference, self.push(reference, log_path))
