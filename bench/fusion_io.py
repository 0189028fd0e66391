"""Fusion I/O benchmark against a local S3-compatible server, in two settings.

(a) loopback: s3rver on 127.0.0.1 as it is;
(b) emulated cloud: the same server behind ``bench/throttle_proxy.py`` - 20 ms to first
    byte, at most 90 MB/s per connection - which is roughly S3 as a cloud node sees it.

In each setting, runs interleaved (every tool once per round, so that load from other
processes on the machine hits all of them alike), the median reported. Every
measurement is on a fresh mount with the kernel's page cache dropped first, so no
tool reads what an earlier run left in memory:

* cold sequential read of a 1 GiB object: ``dd bs=1M`` from Fusion, ``s3fs`` and
  ``rclone mount`` (Debian binaries, default options), and ``boto3 download_file``
  (default transfer settings) to local disk;
* random reads: 256 ``pread`` calls of 1 MiB at seeded offsets of the 1 GiB object, one
  reader;
* 1,000 files of 64 KiB read one after another (``cat`` per file, the shell's glob lists
  the directory first);
* the same files read by 16 readers in parallel (``xargs -P 16 cat`` over a list of
  their names, as tasks reading a sample sheet's files do - no directory listing);
* sequential write of 1 GiB: ``dd bs=1M`` into the mount (the close included, which is
  when the upload completes) versus ``boto3 upload_file``;
* the Fusion mount's peak RSS (VmHWM) over all its runs;
* for every run, the CPU seconds the S3 server spent on it (``server_cpu_s``, median per
  case and tool), and the CPU seconds the whole machine was busy (``machine_cpu_s``:
  every process - server, mount, readers, proxy - against ``seconds x cores`` of the
  run): on a small machine the one local server, or the cores, are often the limit for
  every tool alike, and this shows when they are.

``--quick`` runs one round of each case (a few minutes) instead of three. The last line
printed is one JSON object with the ratios. Needs root, /dev/fuse, node and npm
(s3rver), s3fs and rclone; ``scripts/services/s3rver.sh`` installs and starts what is
missing.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, suppress
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from fusion.mount import MountOptions, is_mounted, mount  # noqa: E402
from fusion.objects import StoreConfig  # noqa: E402
from fusion.s3_store import S3ObjectStore  # noqa: E402

MiB = 1024 * 1024
GiB = 1024 * MiB
KEY = "S3RVER"
BUCKET = "fusion-bench"
BIG = "big-1g.bin"
SMALL_PREFIX = "small/"
SMALL_COUNT = 1000
SMALL_SIZE = 64 * 1024
LOOPBACK_PORT = 4568
PROXY_PORT = 4569


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def config(port: int) -> StoreConfig:
    return StoreConfig(
        endpoint_url=f"http://127.0.0.1:{port}",
        region="us-east-1",
        access_key_id=KEY,
        secret_access_key=KEY,
    )


def boto3_client(port: int):  # type: ignore[no-untyped-def]
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3",
        endpoint_url=f"http://127.0.0.1:{port}",
        aws_access_key_id=KEY,
        aws_secret_access_key=KEY,
        region_name="us-east-1",
        config=Config(
            s3={"addressing_style": "path"},
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        ),
    )


# -- setup -------------------------------------------------------------------------------------
def prepare(work: Path) -> Path:
    subprocess.run(["bash", str(REPO / "scripts/services/s3rver.sh")], check=True)
    store = S3ObjectStore(config(LOOPBACK_PORT))
    store.ensure_bucket(BUCKET)
    local = work / "big-1g.bin"
    if not local.exists() or local.stat().st_size != GiB:
        log("making a 1 GiB local file")
        block = os.urandom(MiB)
        with open(local, "wb") as fh:
            for i in range(1024):
                fh.write(i.to_bytes(8, "little") + block[8:])
    info = store.head(BUCKET, BIG)
    if info is None or info.size != GiB:
        log("uploading the 1 GiB object")
        boto3_client(LOOPBACK_PORT).upload_file(str(local), BUCKET, BIG)
    listed = sum(1 for _ in store.list(BUCKET, prefix=SMALL_PREFIX))
    if listed != SMALL_COUNT:
        log("uploading 1,000 small objects")
        payload = os.urandom(SMALL_SIZE)
        with ThreadPoolExecutor(16) as pool:
            list(
                pool.map(
                    lambda i: store.put(BUCKET, f"{SMALL_PREFIX}f{i:04d}", payload),
                    range(SMALL_COUNT),
                )
            )
    return local


@contextmanager
def throttle_proxy() -> Iterator[None]:
    proc = subprocess.Popen(
        [
            sys.executable,
            str(REPO / "bench/throttle_proxy.py"),
            "--listen",
            f"127.0.0.1:{PROXY_PORT}",
            "--upstream",
            f"127.0.0.1:{LOOPBACK_PORT}",
            "--latency-ms",
            "20",
            "--rate-mbps",
            "90",
        ],
        stdout=subprocess.DEVNULL,
    )
    time.sleep(0.5)
    try:
        yield
    finally:
        proc.terminate()
        proc.wait(timeout=10)


# -- mounts of each tool -----------------------------------------------------------------------
class FusionMount:
    name = "fusion"

    def __init__(self, work: Path, port: int, cache_bytes: int) -> None:
        self.work, self.port, self.cache_bytes = work, port, cache_bytes
        self.peak_rss_kib = 0

    @contextmanager
    def mounted(self) -> Iterator[Path]:
        mnt = self.work / "mnt-fusion"
        cache = self.work / "cache-fusion"
        handle = mount(mnt, config(self.port), cache, self.cache_bytes, options=MountOptions())
        try:
            yield mnt / "s3" / BUCKET
        finally:
            self.peak_rss_kib = max(self.peak_rss_kib, _vm_hwm(handle.pid))
            handle.unmount()


def _vm_hwm(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def _wait_mounted(path: Path, proc: subprocess.Popen[bytes] | None, what: str) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if is_mounted(path):
            return
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}")
        time.sleep(0.05)
    raise RuntimeError(f"{what} did not mount {path}")


def _unmount(path: Path) -> None:
    for _ in range(50):
        if not is_mounted(path):
            return
        subprocess.run(["fusermount3", "-u", str(path)], capture_output=True)
        time.sleep(0.1)
    subprocess.run(["fusermount3", "-u", "-z", str(path)], capture_output=True)


class S3fsMount:
    name = "s3fs"

    def __init__(self, work: Path, port: int) -> None:
        self.work, self.port = work, port
        self.passwd = work / "s3fs.passwd"
        self.passwd.write_text(f"{KEY}:{KEY}\n")
        self.passwd.chmod(0o600)

    @contextmanager
    def mounted(self) -> Iterator[Path]:
        mnt = self.work / "mnt-s3fs"
        mnt.mkdir(exist_ok=True)
        subprocess.run(
            [
                "s3fs",
                BUCKET,
                str(mnt),
                "-o",
                f"url=http://127.0.0.1:{self.port}",
                "-o",
                "use_path_request_style",
                "-o",
                f"passwd_file={self.passwd}",
            ],
            check=True,
        )
        _wait_mounted(mnt, None, "s3fs")
        try:
            yield mnt
        finally:
            _unmount(mnt)


class RcloneMount:
    name = "rclone"

    def __init__(self, work: Path, port: int) -> None:
        self.work, self.port = work, port

    @contextmanager
    def mounted(self) -> Iterator[Path]:
        mnt = self.work / "mnt-rclone"
        mnt.mkdir(exist_ok=True)
        env = {k: v for k, v in os.environ.items() if k != "AWS_CA_BUNDLE"}
        env.update(
            RCLONE_CONFIG_BENCH_TYPE="s3",
            RCLONE_CONFIG_BENCH_PROVIDER="Other",
            RCLONE_CONFIG_BENCH_ENDPOINT=f"http://127.0.0.1:{self.port}",
            RCLONE_CONFIG_BENCH_ACCESS_KEY_ID=KEY,
            RCLONE_CONFIG_BENCH_SECRET_ACCESS_KEY=KEY,
            RCLONE_CONFIG_BENCH_REGION="us-east-1",
        )
        proc = subprocess.Popen(
            ["rclone", "mount", f"bench:{BUCKET}", str(mnt)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        _wait_mounted(mnt, proc, "rclone mount")
        try:
            yield mnt
        finally:
            _unmount(mnt)
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()


# -- measurements ------------------------------------------------------------------------------
Tool = FusionMount | S3fsMount | RcloneMount
RANDOM_READS = 256
CASES = ("read", "random", "smallpar", "small", "write")
RANDOM_SEED = 14


def drop_caches() -> None:
    """Empty the kernel's page cache (root only; best effort elsewhere)."""
    subprocess.run(["sync"], check=False)
    with suppress(OSError):
        Path("/proc/sys/vm/drop_caches").write_text("3\n")


def _server_pid() -> int | None:
    """The local S3 server's process (started by scripts/services/s3rver.sh)."""
    home = Path(os.environ.get("S3RVER_HOME") or REPO / ".services/s3rver")
    try:
        return int((home / "s3rver.pid").read_text().strip())
    except (OSError, ValueError):
        return None


def _cpu_seconds(pid: int | None) -> float:
    """User + system CPU time of ``pid`` and its finished children (0 if unknown)."""
    if pid is None:
        return 0.0
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return sum(int(x) for x in fields[11:15]) / os.sysconf("SC_CLK_TCK")


def _machine_busy_seconds() -> float:
    """CPU seconds all cores spent outside idle and iowait since boot (/proc/stat)."""
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    except OSError:
        return 0.0
    ticks = [int(x) for x in fields[:8]]
    busy = sum(ticks) - ticks[3] - ticks[4]  # all but idle and iowait
    return busy / os.sysconf("SC_CLK_TCK")


#: The S3 server's CPU seconds during each timed run, in the order of the runs ...
SERVER_CPU: list[float] = []
#: ... and the whole machine's busy CPU seconds.
MACHINE_CPU: list[float] = []


def _timed(fn: Callable[[], object]) -> float:
    drop_caches()
    pid = _server_pid()
    cpu = _cpu_seconds(pid)
    busy = _machine_busy_seconds()
    start = time.monotonic()
    fn()
    elapsed = time.monotonic() - start
    SERVER_CPU.append(round(_cpu_seconds(pid) - cpu, 2))
    MACHINE_CPU.append(round(_machine_busy_seconds() - busy, 2))
    return elapsed


def dd(src: Path, dst: str) -> None:
    subprocess.run(["dd", f"if={src}", f"of={dst}", "bs=1M"], check=True, capture_output=True)


def read_mount(tool: Tool) -> float:
    with tool.mounted() as root:
        seconds = _timed(lambda: dd(root / BIG, "/dev/null"))
    return GiB / MiB / seconds


def read_boto3(port: int, work: Path) -> float:
    client = boto3_client(port)
    target = work / "download.bin"
    seconds = _timed(lambda: client.download_file(BUCKET, BIG, str(target)))
    target.unlink()
    return GiB / MiB / seconds


_RANDOM_SCRIPT = """
import os, random, sys
path, n, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
fd = os.open(path, os.O_RDONLY)
size = os.fstat(fd).st_size
rng = random.Random(seed)
for _ in range(n):
    off = rng.randrange(0, size - (1 << 20))
    got = os.pread(fd, 1 << 20, off)
    assert len(got) == 1 << 20, (off, len(got))
os.close(fd)
"""


def random_mount(tool: Tool) -> float:
    """MiB/s of RANDOM_READS 1 MiB preads at seeded (unaligned) offsets, one reader."""
    with tool.mounted() as root:
        seconds = _timed(
            lambda: subprocess.run(
                [sys.executable, "-c", _RANDOM_SCRIPT, str(root / BIG), str(RANDOM_READS),
                 str(RANDOM_SEED)],
                check=True,
            )
        )  # fmt: skip
    return RANDOM_READS / seconds


def write_fusion(tool: FusionMount, local: Path, n: int) -> float:
    with tool.mounted() as root:
        seconds = _timed(lambda: dd(local, str(root / f"written-{n}.bin")))
    return GiB / MiB / seconds


def write_boto3(port: int, local: Path, n: int) -> float:
    client = boto3_client(port)
    seconds = _timed(lambda: client.upload_file(str(local), BUCKET, f"uploaded-{n}.bin"))
    return GiB / MiB / seconds


def small_files(tool: Tool) -> float:
    """Files/s reading the small files one after another (a glob lists them first)."""
    script = 'for f in "$1"/*; do cat "$f"; done > /dev/null'
    with tool.mounted() as root:
        seconds = _timed(
            lambda: subprocess.run(
                ["sh", "-c", script, "sh", str(root / SMALL_PREFIX.rstrip("/"))], check=True
            )
        )
    return SMALL_COUNT / seconds


def small_parallel(tool: Tool, work: Path) -> float:
    """Files/s with 16 readers in parallel over the names (no listing first)."""
    with tool.mounted() as root:
        sheet = work / f"sheet-{tool.name}.txt"
        folder = root / SMALL_PREFIX.rstrip("/")
        sheet.write_text("".join(f"{folder}/f{i:04d}\n" for i in range(SMALL_COUNT)))
        seconds = _timed(
            lambda: subprocess.run(
                ["sh", "-c", 'xargs -a "$1" -P 16 -n 8 cat > /dev/null', "sh", str(sheet)],
                check=True,
            )
        )
    return SMALL_COUNT / seconds


def median(xs: list[float]) -> float:
    return statistics.median(xs) if xs else 0.0


def _show(label: str, what: str, i: int, res: dict[str, list[float]]) -> None:
    log(f"[{label}] {what} round {i + 1}: " + ", ".join(f"{k} {v[-1]:.0f}" for k, v in res.items()))


def run_setting(
    label: str, port: int, work: Path, local: Path, rounds: int, write_runs: int,
    fusion: FusionMount, cases: frozenset[str] = frozenset(CASES),
) -> dict[str, float]:  # fmt: skip
    s3fs, rclone = S3fsMount(work, port), RcloneMount(work, port)
    mounts: list[Tool] = [fusion, s3fs, rclone]
    reads: dict[str, list[float]] = {"fusion": [], "boto3": [], "s3fs": [], "rclone": []}
    rand: dict[str, list[float]] = {t.name: [] for t in mounts}
    small: dict[str, list[float]] = {t.name: [] for t in mounts}
    par: dict[str, list[float]] = {t.name: [] for t in mounts}
    cpu: dict[str, list[float]] = defaultdict(list)
    busy: dict[str, list[float]] = defaultdict(list)

    def measure(case: str, tool: str, res: dict[str, list[float]], figure: float) -> None:
        """Keep a run's figure, and the server's and the machine's CPU of that run (the
        last one timed)."""
        res[tool].append(figure)
        cpu[f"{case}_{tool}"].append(SERVER_CPU[-1])
        busy[f"{case}_{tool}"].append(MACHINE_CPU[-1])

    for i in range(rounds):
        if "read" in cases:
            measure("read", "fusion", reads, read_mount(fusion))
            measure("read", "boto3", reads, read_boto3(port, work))
            measure("read", "s3fs", reads, read_mount(s3fs))
            measure("read", "rclone", reads, read_mount(rclone))
            _show(label, "read MiB/s", i, reads)
        if "random" in cases:
            for tool in mounts:
                measure("random", tool.name, rand, random_mount(tool))
            _show(label, "random MiB/s", i, rand)
        if "smallpar" in cases:
            for tool in mounts:
                measure("smallpar", tool.name, par, small_parallel(tool, work))
            _show(label, "parallel small files/s", i, par)
        if "small" in cases:
            for tool in mounts:
                measure("small", tool.name, small, small_files(tool))
            _show(label, "small files/s", i, small)
    writes: dict[str, list[float]] = {"fusion": [], "boto3": []}
    for i in range(write_runs if "write" in cases else 0):
        measure("write", "fusion", writes, write_fusion(fusion, local, i))
        measure("write", "boto3", writes, write_boto3(port, local, i))
        _show(label, "write MiB/s", i, writes)
    SERVER_CPU_BY_SETTING[label] = {k: round(median(v), 2) for k, v in cpu.items()}
    MACHINE_CPU_BY_SETTING[label] = {k: round(median(v), 2) for k, v in busy.items()}
    store = S3ObjectStore(config(LOOPBACK_PORT))
    for i in range(write_runs):
        store.delete(BUCKET, f"written-{i}.bin")
        store.delete(BUCKET, f"uploaded-{i}.bin")
    out = {f"read_{k}_mibs": median(v) for k, v in reads.items()}
    out |= {f"random_{k}_mibs": median(v) for k, v in rand.items()}
    out |= {f"write_{k}_mibs": median(v) for k, v in writes.items()}
    out |= {f"small_{k}_files_per_s": median(v) for k, v in small.items()}
    out |= {f"smallpar_{k}_files_per_s": median(v) for k, v in par.items()}
    for case, res in (("read", reads), ("random", rand), ("small", small), ("smallpar", par)):
        ROUNDS[label][case] = res
    ROUNDS[label]["write"] = writes
    return out


#: Median S3-server CPU seconds per run: setting -> "<case>_<tool>" -> seconds.
SERVER_CPU_BY_SETTING: dict[str, dict[str, float]] = {}
MACHINE_CPU_BY_SETTING: dict[str, dict[str, float]] = {}

#: Every round's figure: setting -> case -> tool -> [per round], for the spread.
ROUNDS: dict[str, dict[str, dict[str, list[float]]]] = defaultdict(dict)


def spread(setting: str, case: str, tool: str, peers: tuple[str, ...]) -> list[float]:
    """[lowest, highest] of the per-round ratios of ``tool`` to the best of ``peers``."""
    res = ROUNDS.get(setting, {}).get(case, {})
    mine = res.get(tool, [])
    ratios = [
        x / best
        for i, x in enumerate(mine)
        if (best := max((res[p][i] for p in peers if i < len(res.get(p, []))), default=0.0))
    ]
    return [round(min(ratios), 3), round(max(ratios), 3)] if ratios else []


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--work", default=os.path.join(tempfile.gettempdir(), "fusion-bench"))
    p.add_argument("--rounds", type=int, default=3, help="rounds of every case, per setting")
    p.add_argument("--write-runs", type=int, default=2)
    p.add_argument("--quick", action="store_true", help="one round of every case")
    p.add_argument(
        "--cache-size",
        type=int,
        default=2 * GiB,
        help="Fusion's block cache, bytes (default: the mount's own default, 2 GiB; every"
        " tool runs with its defaults, and each mount starts with an empty cache)",
    )
    p.add_argument(
        "--cases",
        default=",".join(CASES),
        help="comma-separated subset of " + ", ".join(CASES) + " (ratios of cases not run are 0)",
    )
    p.add_argument(
        "--settings", default="loopback,emulated", help="loopback, emulated or both (default)"
    )
    a = p.parse_args()
    cases = frozenset(c.strip() for c in a.cases.split(",") if c.strip())
    settings = {x.strip() for x in a.settings.split(",") if x.strip()}
    if not cases <= set(CASES) or not settings <= {"loopback", "emulated"}:
        p.error("unknown case or setting")
    if a.quick:
        a.rounds, a.write_runs = 1, 1
    for tool in ("s3fs", "rclone", "fusermount3", "dd"):
        if shutil.which(tool) is None:
            sys.exit(f"{tool} is not installed (see scripts/services/s3rver.sh)")
    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    local = prepare(work)
    started = time.monotonic()
    fusion_lo = FusionMount(work, LOOPBACK_PORT, a.cache_size)
    fusion_em = FusionMount(work, PROXY_PORT, a.cache_size)
    loop: dict[str, float] = defaultdict(float)
    emu: dict[str, float] = defaultdict(float)
    if "loopback" in settings:
        loop.update(
            run_setting(
                "loopback", LOOPBACK_PORT, work, local, a.rounds, a.write_runs, fusion_lo, cases
            )
        )
    if "emulated" in settings:
        with throttle_proxy():
            emu.update(
                run_setting(
                    "emulated", PROXY_PORT, work, local, a.rounds, a.write_runs, fusion_em, cases
                )
            )
    for label, res in (("loopback", loop), ("emulated", emu)):
        print(f"== {label} ==")
        for k, v in res.items():
            print(f"  {k:28s} {v:10.1f}")

    def ratio(x: float, y: float) -> float:
        return round(x / y, 3) if y else 0.0

    peak = max(fusion_lo.peak_rss_kib, fusion_em.peak_rss_kib) / 1024
    result = {
        "read_vs_best_loopback": ratio(
            loop["read_fusion_mibs"], max(loop["read_boto3_mibs"], loop["read_s3fs_mibs"])
        ),
        "read_vs_s3fs_emulated": ratio(emu["read_fusion_mibs"], emu["read_s3fs_mibs"]),
        "read_vs_boto3_emulated": ratio(emu["read_fusion_mibs"], emu["read_boto3_mibs"]),
        "read_vs_rclone_emulated": ratio(emu["read_fusion_mibs"], emu["read_rclone_mibs"]),
        "smallpar_vs_s3fs_emulated": ratio(
            emu["smallpar_fusion_files_per_s"], emu["smallpar_s3fs_files_per_s"]
        ),
        "smallpar_vs_s3fs_loopback": ratio(
            loop["smallpar_fusion_files_per_s"], loop["smallpar_s3fs_files_per_s"]
        ),
        "small_vs_s3fs_emulated": ratio(
            emu["small_fusion_files_per_s"], emu["small_s3fs_files_per_s"]
        ),
        "small_vs_s3fs_loopback": ratio(
            loop["small_fusion_files_per_s"], loop["small_s3fs_files_per_s"]
        ),
        "random_vs_s3fs_emulated": ratio(emu["random_fusion_mibs"], emu["random_s3fs_mibs"]),
        "random_vs_s3fs_loopback": ratio(loop["random_fusion_mibs"], loop["random_s3fs_mibs"]),
        "write_vs_boto3": min(
            ratio(loop["write_fusion_mibs"], loop["write_boto3_mibs"]),
            ratio(emu["write_fusion_mibs"], emu["write_boto3_mibs"]),
        ),
        "write_vs_boto3_loopback": ratio(loop["write_fusion_mibs"], loop["write_boto3_mibs"]),
        "write_vs_boto3_emulated": ratio(emu["write_fusion_mibs"], emu["write_boto3_mibs"]),
        "spread": {
            "read_vs_best_loopback": spread("loopback", "read", "fusion", ("boto3", "s3fs")),
            "read_vs_s3fs_emulated": spread("emulated", "read", "fusion", ("s3fs",)),
            "read_vs_boto3_emulated": spread("emulated", "read", "fusion", ("boto3",)),
            "smallpar_vs_s3fs_emulated": spread("emulated", "smallpar", "fusion", ("s3fs",)),
            "smallpar_vs_s3fs_loopback": spread("loopback", "smallpar", "fusion", ("s3fs",)),
            "small_vs_s3fs_emulated": spread("emulated", "small", "fusion", ("s3fs",)),
            "random_vs_s3fs_emulated": spread("emulated", "random", "fusion", ("s3fs",)),
            "random_vs_s3fs_loopback": spread("loopback", "random", "fusion", ("s3fs",)),
            "write_vs_boto3_loopback": spread("loopback", "write", "fusion", ("boto3",)),
            "write_vs_boto3_emulated": spread("emulated", "write", "fusion", ("boto3",)),
        },
        "server_cpu_s": SERVER_CPU_BY_SETTING,
        "machine_cpu_s": MACHINE_CPU_BY_SETTING,
        "cores": os.cpu_count(),
        "peak_rss_mib": round(peak, 1),
        "cache_size_mib": a.cache_size // MiB,
        "rounds": a.rounds,
        "loopback": {k: round(v, 1) for k, v in loop.items()},
        "emulated": {k: round(v, 1) for k, v in emu.items()},
        "seconds": round(time.monotonic() - started),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
