"""The ``sandbox`` runtime: bwrap command lines, the runtime choice, and real sandboxes.

The tests marked ``sandbox`` run the real ``bridge-agent`` with Debian's ``bubblewrap``
(installed by ``scripts/test``); the others check pure functions.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tempfile
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from bridge.agent.check import fuse_problem, node_report
from bridge.agent.errors import RuntimeUnavailable
from bridge.agent.paths import Bind, PathMap
from bridge.agent.runtime import RuntimeKind, RuntimeSelector, run_probe
from bridge.agent.sandbox import RootDir, SandboxError, bwrap_argv, probe_argv
from tests.bridge.agent_fixtures import (
    AGENT,
    agent_env,
    build_busybox_rootfs,
    make_workdir,
    run_agent,
    status_of,
    wait_for,
)
from tests.conftest import SERVICES, read_env_file

# ---------------------------------------------------------------- command lines (pure)


def fake_root(top: Path) -> RootDir:
    """A small root file system: merged /usr, /etc, /opt/conda, and the special dirs."""
    for sub in ("usr/bin", "usr/lib", "etc", "opt/conda", "tmp", "proc", "dev", "var/tmp"):
        (top / sub).mkdir(parents=True, exist_ok=True)
    (top / "etc" / "hosts").write_text("127.0.0.1 localhost\n")
    (top / "bin").symlink_to("usr/bin")
    return RootDir(top)


def after(argv: Sequence[str], flag: str, width: int) -> list[tuple[str, ...]]:
    """The ``width`` arguments after each occurrence of ``flag``."""
    return [tuple(argv[i + 1 : i + 1 + width]) for i, a in enumerate(argv) if a == flag]


def test_declared_paths_are_bound_at_their_mount_points(tmp_path: Path) -> None:
    root = fake_root(tmp_path / "rootfs")
    paths = PathMap(tmp_path / "scratch" / "root")
    plan = bwrap_argv(
        ["sh", "-c", "true"],
        root=root,
        paths=paths,
        wanted=["/data/in.txt", "/out", "/opt/work/run", "/tmp/declared"],
        workdir="/opt/work",
    )
    argv = plan.argv
    assert argv[:5] == ["bwrap", "--unshare-pid", "--die-with-parent", "--tmpfs", "/"]
    assert argv[-8:] == ["--remount-ro", "/", "--chdir", "/opt/work", "--", "sh", "-c", "true"]
    # every declared path, /tmp and the workdir come from the attempt's host tree
    assert plan.binds == [
        Bind(str(paths.host(p)), p) for p in ("/data", "/opt/work", "/out", "/tmp")
    ]
    assert after(argv, "--bind", 2) == [(b.host, b.container) for b in plan.binds]
    # the root is shown read-only; /opt is recreated to hold /opt/work next to /opt/conda
    ro = after(argv, "--ro-bind-try", 2)
    assert (f"{root.top}/usr", "/usr") in ro and (f"{root.top}/etc", "/etc") in ro
    assert (f"{root.top}/opt/conda", "/opt/conda") in ro
    assert not any(dest in ("/opt", "/tmp", "/proc", "/dev") for _, dest in ro)
    assert after(argv, "--dir", 1) == [("/opt",)]
    assert argv.index("--dir") < argv.index("/opt/work")
    assert ("usr/bin", "/bin") in after(argv, "--symlink", 2)
    assert argv.index("--remount-ro") > max(i for i, a in enumerate(argv) if a == "--bind")


def test_paths_the_root_has_are_bound_in_place(tmp_path: Path) -> None:
    root = fake_root(tmp_path / "rootfs")
    paths = PathMap(tmp_path / "scratch" / "root")
    plan = bwrap_argv(["cat"], root=root, paths=paths, wanted=["/etc/hosts"], workdir="/etc")
    assert Bind(str(paths.host("/etc/hosts")), "/etc/hosts") in plan.binds
    assert "--dir" not in plan.argv  # /etc stays the root's, bound read-only
    assert (f"{root.top}/etc", "/etc") in after(plan.argv, "--ro-bind-try", 2)
    assert after(plan.argv, "--chdir", 1) == [("/etc",)]  # exists in the root: not bound


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("/proc/x", "is under /proc"),
        ("/bin/tool", "/bin is a symbolic link"),
        ("/etc/hosts/x", "/etc/hosts is not a directory"),
    ],
)
def test_paths_a_sandbox_cannot_lay_out(tmp_path: Path, path: str, message: str) -> None:
    root = fake_root(tmp_path / "rootfs")
    with pytest.raises(SandboxError, match=message):
        bwrap_argv(["true"], root=root, paths=PathMap(tmp_path), wanted=[path], workdir=None)


class FakeHost:
    """Which runtime binaries exist and which probe commands succeed."""

    def __init__(self, binaries: set[str], ok: set[str]) -> None:
        self.binaries = binaries
        self.ok = ok

    def which(self, name: str) -> str | None:
        return f"/usr/bin/{name}" if name in self.binaries else None

    def probe(self, argv: Sequence[str], timeout: float) -> bool:
        return " ".join(argv) in self.ok


SANDBOX_PROBE = " ".join(probe_argv())


def test_auto_prefers_engines_then_sandbox_then_none(tmp_path: Path) -> None:
    image = build_busybox_rootfs(tmp_path / "img")
    assert image is not None, "busybox-static is needed (scripts/test installs it)"
    host = FakeHost({"ch-run", "bwrap"}, {SANDBOX_PROBE})
    selector = RuntimeSelector("auto", which=host.which, probe=host.probe)
    assert selector.choose(str(image)) == (
        RuntimeKind.CHARLIECLOUD,
        [
            "auto: docker not used: docker is not installed",
            "auto: podman not used: podman is not installed",
            "auto: charliecloud chosen",
        ],
    )
    kind, notes = selector.choose("alpine")
    assert kind is RuntimeKind.SANDBOX
    assert notes[2] == "auto: charliecloud not used: image 'alpine' is not a directory here"
    assert notes[-1] == "auto: sandbox chosen"
    kind, notes = selector.choose("")
    assert kind is RuntimeKind.SANDBOX and "names no image" in notes[0]

    no_userns = FakeHost({"bwrap"}, set())
    kind, notes = RuntimeSelector("auto", which=no_userns.which, probe=no_userns.probe).choose(
        "alpine"
    )
    assert kind is RuntimeKind.NONE
    assert notes[-2].startswith("auto: sandbox not used: bwrap cannot make a sandbox here")
    assert notes[-1] == "auto: none chosen"
    with pytest.raises(RuntimeUnavailable, match="container runtime sandbox: bwrap cannot"):
        RuntimeSelector("sandbox", which=no_userns.which, probe=no_userns.probe).choose("x")


def test_node_report_names_every_runtime_and_fuse(tmp_path: Path) -> None:
    host = FakeHost({"bwrap", "docker"}, {SANDBOX_PROBE})
    report = node_report(RuntimeSelector("auto", which=host.which, probe=host.probe))
    assert set(report["runtimes"]) == {"docker", "podman", "charliecloud", "sandbox", "none"}
    assert report["runtimes"]["sandbox"] == {"usable": True, "detail": "ok"}
    assert report["runtimes"]["docker"]["usable"] is False
    assert "docker info" in report["runtimes"]["docker"]["detail"]
    assert report["runtimes"]["none"]["usable"] is True
    assert set(report["fuse"]) == {"usable", "detail"} and report["agent_version"]
    missing = fuse_problem(str(tmp_path / "no-fuse"))
    assert missing is not None and "is not usable" in missing
    assert fuse_problem(os.devnull, which=lambda name: None) == (
        "fusermount3 is not installed (Debian package fuse3)"
    )


def test_runtime_none_says_paths_in_files_are_not_mapped(tmp_path: Path) -> None:
    wd = make_workdir(tmp_path / "wd", {"executors": [{"image": "", "command": ["true"]}]})
    assert run_agent(str(wd), env=agent_env(tmp_path)).returncode == 0
    logs = status_of(str(wd))["system_logs"]
    assert any("paths inside files and scripts are not mapped" in line for line in logs), logs


# ---------------------------------------------------------------- real sandboxes


@pytest.fixture
def bwrap() -> None:
    """Skip, saying why, where bwrap cannot make the sandbox the runtime needs."""
    if shutil.which("bwrap") is None:
        pytest.skip("bwrap not found (Debian package bubblewrap; scripts/test installs it)")
    if not run_probe(probe_argv(), 30):
        pytest.skip(f"bwrap cannot make a sandbox here: {' '.join(probe_argv())} failed")


@pytest.fixture
def outside() -> Iterator[Path]:
    """A host directory outside /tmp (the sandbox shows the host's /var/tmp read-only)."""
    path = Path(tempfile.mkdtemp(prefix="bridge-sandbox-test-", dir="/var/tmp"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def sandbox_task(executors: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    return {"executors": executors, **extra}


def sh(script: str, image: str = "alpine", **extra: Any) -> dict[str, Any]:
    return {"image": image, "command": ["sh", "-c", script], **extra}


SCRATCH_SCRIPT = """set -e
mkdir /tmp/x
echo "$NAME" > /tmp/x/id
i=0
while [ ! -e "$RELEASE/go" ]; do
    i=$((i + 1)); [ "$i" -lt 1200 ] || exit 9
    sleep 0.1
done
cat /tmp/x/id > /out/id.txt
"""


@pytest.mark.sandbox
def test_two_tasks_use_the_same_scratch_path_at_once(
    tmp_path: Path, bwrap: None, outside: Path
) -> None:
    host_tmp_x_before = Path("/tmp/x").exists()
    agents: list[tuple[Path, Path, subprocess.Popen[str]]] = []
    for name in ("first", "second"):
        task = sandbox_task(
            [
                {
                    "image": "alpine",
                    "command": ["sh", "/jobs/job.sh"],
                    "env": {"NAME": name, "RELEASE": str(outside)},
                }
            ],
            inputs=[{"path": "/jobs/job.sh", "content": SCRATCH_SCRIPT}],
            outputs=[{"path": "/out/id.txt", "url": str(tmp_path / f"{name}.txt")}],
        )
        wd = make_workdir(tmp_path / f"wd-{name}", task, {"container_runtime": "sandbox"})
        scratch = tmp_path / f"scratch-{name}"
        env = agent_env(tmp_path, {"BRIDGE_SCRATCH_DIR": str(scratch)})
        proc = subprocess.Popen(
            [AGENT, "run", str(wd)], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
        agents.append((wd, scratch, proc))  # type: ignore[arg-type]
    try:
        # both tasks hold their own /tmp/x at the same time (seen from the host)
        for _, scratch, _ in agents:
            wait_for(
                lambda s=scratch: list(s.glob("*/root/tmp/x/id")),
                timeout=60,
                what=f"/tmp/x/id in {scratch}",
            )
        (outside / "go").touch()
        for _, _, proc in agents:
            proc.wait(timeout=120)
    finally:
        for _, _, proc in agents:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    for (wd, _, _), name in zip(agents, ("first", "second"), strict=True):
        status = status_of(str(wd))
        assert status["state"] == "COMPLETE", (status["system_logs"], status["executors"])
        assert status["metadata"]["container_runtime"] == "sandbox"
        assert (tmp_path / f"{name}.txt").read_text() == f"{name}\n"
    assert Path("/tmp/x").exists() == host_tmp_x_before  # the host's /tmp was not used


@pytest.mark.sandbox
def test_writes_outside_the_binds_fail_and_leave_the_host_alone(
    tmp_path: Path, bwrap: None, outside: Path
) -> None:
    host_tmp = tmp_path / "host-tmp"
    top = f"/bridge-sandbox-{uuid.uuid4().hex[:8]}"
    task = sandbox_task(
        [
            # /tmp is the attempt's own: a host path under /tmp is made privately
            sh(f"mkdir -p {host_tmp} && echo private > {host_tmp}/file"),
            sh(f"mkdir {top}", ignore_error=True),  # the root is read-only
            sh(f"echo bad > {outside}/evil"),  # a host directory outside the binds
            sh("echo never"),
        ]
    )
    wd = make_workdir(tmp_path / "wd", task, {"container_runtime": "sandbox"})
    done = run_agent(str(wd), env=agent_env(tmp_path))
    assert done.returncode == 1, done.stderr
    status = status_of(str(wd))
    assert status["state"] == "EXECUTOR_ERROR", status["system_logs"]
    codes = [e["exit_code"] for e in status["executors"]]
    assert codes[0] == 0 and codes[1] != 0 and codes[2] != 0 and len(codes) == 3
    assert "Read-only file system" in status["executors"][1]["stderr"]
    assert "Read-only file system" in status["executors"][2]["stderr"]
    assert not host_tmp.exists()
    assert not Path(top).exists()
    assert list(outside.iterdir()) == []


def full_task(src: Path, results: Path, image: str) -> dict[str, Any]:
    """Inputs (file, inline, directory), outputs (file, DIRECTORY, wildcard), a volume,
    stdin/stdout files and a workdir: what a docker executor sees."""
    return {
        "id": "sandbox-full",
        "inputs": [
            {"path": "/data/in.txt", "url": f"file://{src}/in.txt"},
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
                "cat /data/in.txt /data/inline.txt > /out/summary.txt"
                " && (cd /ref && find . -type f | sort) > /out/dir/listing.txt"
                " && mkdir -p /out/dir/sub && echo deep > /out/dir/sub/deep.txt"
                " && echo 1,2 > /out/a.csv && echo 3,4 > /out/b.csv"
                " && echo kept > /scratchvol/v && echo done",
                image=image,
            ),
            {
                "image": image,
                "command": ["wc", "-l"],
                "stdin": "/out/summary.txt",
                "stdout": "/out/count.txt",
            },
            sh(
                'pwd; echo "$WHERE"; cat /scratchvol/v; echo warn >&2',
                image=image,
                workdir="/work/here",
                env={"WHERE": "/work/here/x"},
            ),
        ],
    }


def run_full_task(tmp_path: Path, runtime: str, image: str, env: dict[str, str]) -> Path:
    src = tmp_path / "src"
    (src / "refdir" / "nested").mkdir(parents=True, exist_ok=True)
    (src / "in.txt").write_text("one\ntwo\n")
    (src / "refdir" / "a").write_text("A")
    (src / "refdir" / "nested" / "b").write_text("B")
    results = tmp_path / f"results-{runtime}"
    wd = make_workdir(
        tmp_path / f"wd-{runtime}",
        full_task(src, results, image),
        {"container_runtime": runtime},
    )
    done = run_agent(str(wd), env=agent_env(tmp_path, env), timeout=120)
    status = status_of(str(wd))
    assert done.returncode == 0, (done.stderr, status["system_logs"], status["executors"])
    assert status["metadata"]["container_runtime"] == runtime
    return wd


def tree(path: Path) -> dict[str, str]:
    return {str(p.relative_to(path)): p.read_text() for p in sorted(path.rglob("*")) if p.is_file()}


@pytest.mark.sandbox
def test_inputs_outputs_and_directories_without_rewriting(tmp_path: Path, bwrap: None) -> None:
    wd = run_full_task(tmp_path, "sandbox", "alpine", {})
    assert tree(tmp_path / "results-sandbox") == {
        "summary.txt": "one\ntwo\ninline\n",
        "dir/listing.txt": "./a\n./nested/b\n",
        "dir/sub/deep.txt": "deep\n",
        "csv/a.csv": "1,2\n",
        "csv/b.csv": "3,4\n",
        "count.txt": "3\n",
    }
    status = status_of(str(wd))
    # the executor saw its container paths as they are: nothing was rewritten
    assert status["executors"][2]["stdout"] == "/work/here\n/work/here/x\nkept\n"
    assert status["executors"][2]["stderr"] == "warn\n"
    assert status["metadata"]["image_used"] == "false"
    assert any("host's root file system is used" in line for line in status["system_logs"])
    assert not Path("/work/here").exists() and not Path("/scratchvol").exists()


@pytest.mark.sandbox
def test_results_match_docker(tmp_path: Path, bwrap: None) -> None:
    env_file = SERVICES / "docker.env"
    if not env_file.is_file() or shutil.which("docker") is None:
        pytest.skip(f"dockerd not set up: {env_file} missing (run scripts/services/dockerd.sh)")
    docker = read_env_file(env_file)
    ping = subprocess.run(
        ["docker", "image", "inspect", docker["BRIDGE_BASE_IMAGE"]],
        env={**os.environ, **docker},
        capture_output=True,
        check=False,
    )
    if ping.returncode != 0:
        pytest.skip(f"dockerd or its base image is not there: {ping.stderr.decode()[-300:]}")
    image = docker["BRIDGE_BASE_IMAGE"]
    wd_docker = run_full_task(tmp_path, "docker", image, {"DOCKER_HOST": docker["DOCKER_HOST"]})
    wd_sandbox = run_full_task(tmp_path, "sandbox", image, {})
    assert tree(tmp_path / "results-sandbox") == tree(tmp_path / "results-docker")
    docker_ex, sandbox_ex = (
        [(e["exit_code"], e["stdout"], e["stderr"]) for e in status_of(str(wd))["executors"]]
        for wd in (wd_docker, wd_sandbox)
    )
    assert docker_ex == sandbox_ex
    outputs = [
        sorted((o["path"], o["size_bytes"]) for o in status_of(str(wd))["outputs"])
        for wd in (wd_docker, wd_sandbox)
    ]
    assert outputs[0] == outputs[1]


def marked(marker: str) -> list[int]:
    """Processes started as ``sh -c ... <marker>``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if argv[:2] == [b"sh", b"-c"] and len(argv) > 3 and argv[3].startswith(marker.encode()):
            found.append(int(entry.name))
    return found


@pytest.mark.sandbox
def test_cancel_kills_the_whole_sandboxed_tree(tmp_path: Path, bwrap: None) -> None:
    marker = f"bridge-sandbox-{uuid.uuid4().hex[:12]}"
    script = (
        # one child leaves the process group, one ignores SIGTERM
        f"setsid sh -c 'while :; do sleep 1; done' {marker}-setsid & "
        f"sh -c 'trap \"\" TERM; while :; do sleep 1; done' {marker}-deaf & "
        "wait"
    )
    wd = make_workdir(tmp_path / "wd", sandbox_task([sh(script)]), {"container_runtime": "sandbox"})
    proc = subprocess.Popen(
        [AGENT, "run", str(wd)],
        env=agent_env(tmp_path),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for(lambda: len(marked(marker)) == 2, timeout=60, what="both sandboxed processes")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 143
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert status_of(str(wd))["state"] == "CANCELED"
    wait_for(lambda: not marked(marker), timeout=30, what="no sandboxed process left")


@pytest.mark.sandbox
def test_an_image_directory_is_the_root(tmp_path: Path, bwrap: None) -> None:
    image = build_busybox_rootfs(tmp_path / "img")
    if image is None:
        pytest.skip("no static busybox (Debian package busybox-static; scripts/test installs it)")
    task = sandbox_task(
        [sh("ls / > /out/r.txt; cat /data/in.txt /etc/passwd >> /out/r.txt", image=str(image))],
        inputs=[{"path": "/data/in.txt", "content": "input\n"}],
        outputs=[{"path": "/out/r.txt", "url": str(tmp_path / "r.txt")}],
    )
    wd = make_workdir(tmp_path / "wd", task, {"container_runtime": "sandbox"})
    done = run_agent(str(wd), env=agent_env(tmp_path))
    status = status_of(str(wd))
    assert done.returncode == 0, (status["system_logs"], status["executors"])
    lines = (tmp_path / "r.txt").read_text().splitlines()
    assert lines[-2:] == ["input", "root:x:0:0:root:/root:/bin/sh"]  # the image's passwd
    assert "usr" not in lines and {"bin", "data", "etc", "out", "tmp"} <= set(lines)
    assert status["metadata"]["image_used"] == "true"
    assert (image / "data").exists() is False  # the image directory was not changed


@pytest.mark.sandbox
def test_auto_chooses_the_sandbox_and_says_why(tmp_path: Path, bwrap: None) -> None:
    task = sandbox_task(
        [sh("cat /data/in.txt", image="bridge-test-no-such-image")],
        inputs=[{"path": "/data/in.txt", "content": "seen\n"}],
    )
    wd = make_workdir(tmp_path / "wd", task, {"container_runtime": "auto"})
    # a docker client without a daemon, so that no pull is tried
    env = agent_env(tmp_path, {"DOCKER_HOST": f"unix://{tmp_path}/no-docker.sock"})
    done = run_agent(str(wd), env=env, timeout=120)
    status = status_of(str(wd))
    assert done.returncode == 0, (status["system_logs"], status["executors"])
    assert status["executors"][0]["stdout"] == "seen\n"
    assert status["metadata"]["container_runtime"] == "sandbox"
    logs = status["system_logs"]
    assert any(line.startswith("executor 0: auto: docker not used: ") for line in logs), logs
    assert any("auto: charliecloud not used: " in line for line in logs), logs
    assert "executor 0: auto: sandbox chosen" in logs


@pytest.mark.sandbox
def test_check_reports_the_sandbox(bwrap: None) -> None:
    done = subprocess.run(
        [AGENT, "check"], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["runtimes"]["sandbox"] == {"usable": True, "detail": "ok"}
    assert report["runtimes"]["none"]["usable"] is True
    assert {"docker", "podman", "charliecloud"} <= set(report["runtimes"])
    assert isinstance(report["fuse"]["usable"], bool) and report["agent_version"]
