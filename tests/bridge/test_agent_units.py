"""Pure parts of the node agent: path mapping, runtime command lines, redaction, parsing."""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from pathlib import Path

import pytest

from bridge.agent.errors import RuntimeUnavailable, TaskFileError
from bridge.agent.paths import Bind, PathMap, literal_dir, task_prefixes
from bridge.agent.redact import is_secret_name, redact_url, scrub
from bridge.agent.runtime import (
    RuntimeKind,
    RuntimeSelector,
    charliecloud_argv,
    oci_run_argv,
    plan_launch,
)
from bridge.agent.task import parse_runtime, parse_task
from bridge.agent.workdir import (
    LocalWorkDir,
    S3WorkDir,
    open_workdir,
    read_status,
    read_task,
    write_status,
    write_task,
)

ROOT = Path("/scratch/a1/root")

TASK = {
    "id": "t-1",
    "inputs": [
        {"path": "/data/in.txt", "url": "file:///src/in.txt"},
        {"path": "/ref", "url": "s3://b/ref", "type": "DIRECTORY"},
    ],
    "outputs": [
        {"path": "/data/out.txt", "url": "file:///dst/out.txt"},
        {"path": "/results/*.csv", "url": "s3://b/csv/", "path_prefix": "/results"},
        {"path": "/out.txt", "url": "file:///dst/top.txt"},
    ],
    "volumes": ["/vol"],
    "executors": [
        {
            "image": "alpine",
            "command": ["sh", "-c", "wc -l /data/in.txt > /data/out.txt"],
            "workdir": "/work",
            "stdout": "/logs/out",
            "env": {"IN": "/data/in.txt", "DB_PASSWORD": "pw"},
        }
    ],
}


def test_prefixes_come_from_inputs_outputs_volumes_and_executor_paths() -> None:
    task = parse_task(TASK)
    assert set(task_prefixes(task)) == {
        "/data/in.txt",
        "/ref",
        "/data/out.txt",
        "/results",
        "/out.txt",
        "/vol",
        "/work",
        "/logs/out",
    }
    assert literal_dir("/a/b*/c/*.txt") == "/a"
    assert literal_dir("/*.txt") == "/"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("/data/in.txt", f"{ROOT}/data/in.txt"),
        ("--in=/data/in.txt", f"--in={ROOT}/data/in.txt"),
        ("wc -l /data/in.txt > /data/out.txt", f"wc -l {ROOT}/data/in.txt > {ROOT}/data/out.txt"),
        ("PATH=/usr/bin:/vol/bin", f"PATH=/usr/bin:{ROOT}/vol/bin"),
        ("'/ref/x'", f"'{ROOT}/ref/x'"),
        ("echo $(cat /data/in.txt)", f"echo $(cat {ROOT}/data/in.txt)"),
        ("x=`cat /data/in.txt`", f"x=`cat {ROOT}/data/in.txt`"),
        ("cp {/data/in.txt,/vol}", f"cp {{{ROOT}/data/in.txt,{ROOT}/vol}}"),
        ("[ -f /data/in.txt ]", f"[ -f {ROOT}/data/in.txt ]"),
        ("-I/ref/include", "-I/ref/include"),
        ("/data/in.txt.gz", "/data/in.txt.gz"),  # another file
        ("/reference", "/reference"),  # not under /ref
        ("s3://b/ref/x", "s3://b/ref/x"),
        ("file:///ref/x", "file:///ref/x"),
        ("/usr/bin/wc", "/usr/bin/wc"),
        ("/data/other", "/data/other"),  # /data itself is not declared
    ],
)
def test_rewrite_rule(value: str, expected: str) -> None:
    paths = PathMap(ROOT, ["/data/in.txt", "/data/out.txt", "/ref", "/vol"])
    assert paths.rewrite(value) == expected


def test_longer_prefix_wins_and_round_trip() -> None:
    paths = PathMap(ROOT, ["/a", "/a/b"])
    assert paths.rewrite("/a/b/c /a/x") == f"{ROOT}/a/b/c {ROOT}/a/x"
    assert paths.host("/a/../b") == ROOT / "b"
    assert paths.container(ROOT / "a" / "b") == "/a/b"
    assert paths.container(ROOT) == "/"


def test_binds_cover_every_path_with_the_fewest_mounts() -> None:
    task = parse_task(
        {**TASK, "inputs": [*TASK["inputs"], {"path": "/data/sub/x", "content": "x"}]}
    )
    binds = PathMap(ROOT, task_prefixes(task)).binds(task)
    # /data (parent of the output) covers /data/in.txt and /data/sub/x; "/" is never bound
    assert [b.container for b in binds] == ["/data", "/ref", "/results", "/vol"]
    assert binds[0] == Bind(f"{ROOT}/data", "/data")


def test_none_launch_rewrites_argv_env_and_workdir() -> None:
    task = parse_task(TASK)
    paths = PathMap(ROOT, task_prefixes(task))
    launch = plan_launch(
        RuntimeKind.NONE,
        task.executors[0],
        paths=paths,
        binds=[],
        base_env={"HOME": "/h"},
        name="n",
    )
    assert launch.argv == ["sh", "-c", f"wc -l {ROOT}/data/in.txt > {ROOT}/data/out.txt"]
    assert launch.env == {"HOME": "/h", "IN": f"{ROOT}/data/in.txt", "DB_PASSWORD": "pw"}
    assert launch.cwd == ROOT / "work"
    assert not launch.image_used


def test_docker_and_podman_argv_never_carry_env_values() -> None:
    task = parse_task(TASK)
    paths = PathMap(ROOT, task_prefixes(task))
    binds = paths.binds(task)
    docker = plan_launch(
        RuntimeKind.DOCKER, task.executors[0], paths=paths, binds=binds, base_env={}, name="c1"
    )
    assert docker.argv[:5] == ["docker", "run", "--rm", "--name", "c1"]
    assert ["-v", f"{ROOT}/data:/data"] == docker.argv[5:7]
    assert docker.argv[-4:] == ["alpine", "sh", "-c", "wc -l /data/in.txt > /data/out.txt"]
    assert "-w" in docker.argv and docker.argv[docker.argv.index("-w") + 1] == "/work"
    assert "pw" not in " ".join(docker.argv) and "DB_PASSWORD" in docker.argv
    assert docker.env["DB_PASSWORD"] == "pw"  # the engine copies it from its environment
    assert docker.cleanup_argv == ["docker", "rm", "-f", "c1"]
    podman = plan_launch(
        RuntimeKind.PODMAN, task.executors[0], paths=paths, binds=binds, base_env={}, name="c1"
    )
    assert podman.argv[:4] == ["podman", "--runtime", "runc", "run"]
    assert "nofile=20000:20000" in podman.argv


def test_oci_and_charliecloud_argv_shapes() -> None:
    binds = [Bind("/h/data", "/data")]
    assert oci_run_argv(
        ["docker"],
        "img",
        ["cat"],
        binds=binds,
        workdir=None,
        env_names=["A"],
        name="n",
        interactive=True,
    ) == [
        "docker",
        "run",
        "--rm",
        "--name",
        "n",
        "-i",
        "-v",
        "/h/data:/data",
        "-e",
        "A",
        "img",
        "cat",
    ]
    assert charliecloud_argv("/img", ["ls", "-l"], binds=binds, workdir="/data", writable=True) == [
        "ch-run", "-w", "-b", "/h/data:/data", "-c", "/data", "/img", "--", "ls", "-l",
    ]  # fmt: skip


def test_charliecloud_launch_binds_parents_of_missing_files(tmp_path: Path) -> None:
    image = tmp_path / "img"
    (image / "etc").mkdir(parents=True)
    (image / "etc" / "hosts").write_text("")
    root = tmp_path / "root"
    (root / "data").mkdir(parents=True)
    (root / "data" / "in.txt").write_text("x")
    (root / "etc").mkdir()
    (root / "etc" / "hosts").write_text("y")
    task = parse_task(
        {
            "inputs": [
                {"path": "/data/in.txt", "content": "x"},
                {"path": "/etc/hosts", "content": "y"},
            ],
            "executors": [{"image": str(image), "command": ["cat", "/data/in.txt"]}],
        }
    )
    paths = PathMap(root, task_prefixes(task))
    launch = plan_launch(
        RuntimeKind.CHARLIECLOUD,
        task.executors[0],
        paths=paths,
        binds=paths.binds(task),
        base_env={"USER": "u"},
        name="n",
    )
    assert launch.argv == [
        "ch-run", "-w", "-b", f"{root}/data:/data", "-b", f"{root}/etc/hosts:/etc/hosts",
        str(image), "--", "cat", "/data/in.txt",
    ]  # fmt: skip
    assert launch.image_used and "writable" in launch.notes[0]


class FakeHost:
    """Which runtime binaries exist and which probe commands succeed."""

    def __init__(self, binaries: set[str], ok: set[str]) -> None:
        self.binaries = binaries
        self.ok = ok
        self.calls: list[str] = []

    def which(self, name: str) -> str | None:
        return f"/usr/bin/{name}" if name in self.binaries else None

    def probe(self, argv: Sequence[str], timeout: float) -> bool:
        cmd = " ".join(argv)
        self.calls.append(cmd)
        return cmd in self.ok


def test_auto_picks_the_first_runtime_with_the_image() -> None:
    host = FakeHost(
        {"docker", "podman"},
        {"docker info", "podman --runtime runc info", "podman --runtime runc image inspect img"},
    )
    selector = RuntimeSelector("auto", which=host.which, probe=host.probe)
    kind, notes = selector.choose("img")
    assert kind is RuntimeKind.PODMAN
    assert "docker pull img" in host.calls  # docker tried to pull before giving up
    assert notes == [
        "auto: docker not used: image 'img' is not present and could not be pulled",
        "auto: podman chosen",
    ]
    selector.choose("img")
    assert host.calls.count("docker info") == 1  # engine probes are cached


def test_auto_falls_back_to_none_and_explicit_runtime_must_work() -> None:
    host = FakeHost({"docker"}, set())
    kind, notes = RuntimeSelector("auto", which=host.which, probe=host.probe).choose("img")
    assert kind is RuntimeKind.NONE and len(notes) == 5
    assert notes[3] == "auto: sandbox not used: bwrap is not installed (Debian package bubblewrap)"
    with pytest.raises(RuntimeUnavailable, match="docker engine is not reachable"):
        RuntimeSelector("docker", which=host.which, probe=host.probe).choose("img")
    with pytest.raises(RuntimeUnavailable, match="podman is not installed"):
        RuntimeSelector("podman", which=host.which, probe=host.probe).choose("img")
    assert RuntimeSelector("none").choose("img") == (RuntimeKind.NONE, [])


def test_redaction() -> None:
    assert all(map(is_secret_name, ["AWS_SECRET_ACCESS_KEY", "gh_token", "DB_PASSWORD"]))
    assert not is_secret_name("HOME")
    url = "https://bob:hunter2@h/p?X-Amz-Signature=abc&X-Amz-Security-Token=t&part=1"
    clean = redact_url(url)
    assert "hunter2" not in clean and "abc" not in clean and "=t&" not in clean
    assert clean.startswith("https://***@h/p?") and "part=1" in clean
    assert scrub("key is sekret-1", ["sekret-1"]) == "key is ***"


def test_task_file_errors_name_the_field() -> None:
    with pytest.raises(TaskFileError, match=r"inputs\[0\].path must be an absolute path"):
        parse_task({"inputs": [{"path": "rel", "content": "x"}], "executors": TASK["executors"]})
    with pytest.raises(TaskFileError, match="no path_prefix"):
        parse_task({"outputs": [{"path": "/a/*", "url": "/x"}], "executors": TASK["executors"]})
    with pytest.raises(TaskFileError, match="no executors"):
        parse_task({"id": "x"})
    with pytest.raises(TaskFileError, match="container_runtime"):
        parse_runtime({"container_runtime": "lxc"})
    assert parse_runtime(None).container_runtime == "auto"


def test_local_workdir_round_trip(tmp_path: Path) -> None:
    wd = open_workdir(f"file://{tmp_path}/w")
    assert isinstance(wd, LocalWorkDir) and wd.path == tmp_path / "w"
    assert read_status(wd, 1) is None
    write_task(wd, {"id": "t"}, {"container_runtime": "none"})
    assert read_task(wd) == {"task": {"id": "t"}, "runtime": {"container_runtime": "none"}}
    write_status(wd, 2, {"state": "RUNNING"})
    assert read_status(wd, 2) == {"state": "RUNNING"}
    assert json.loads((tmp_path / "w/attempts/2/status.json").read_text())["state"] == "RUNNING"
    with pytest.raises(ValueError, match=r"\.\."):
        wd.read_bytes("../escape")
    s3 = open_workdir("s3://bucket/a/b")
    assert isinstance(s3, S3WorkDir) and s3.url == "s3://bucket/a/b/"


def test_status_writes_are_atomic_for_readers(tmp_path: Path) -> None:
    wd = LocalWorkDir(tmp_path)
    big = {"state": "RUNNING", "pad": "x" * 200_000}
    write_status(wd, 1, big)
    stop = threading.Event()
    bad: list[str] = []

    def reader() -> None:
        while not stop.is_set():
            doc = read_status(wd, 1)
            if doc is None or len(doc["pad"]) != 200_000:
                bad.append("torn read")

    thread = threading.Thread(target=reader)
    thread.start()
    for i in range(50):
        write_status(wd, 1, {**big, "state": f"S{i}"})
    stop.set()
    thread.join()
    assert not bad
    assert [p.name for p in (tmp_path / "attempts/1").iterdir()] == ["status.json"]
