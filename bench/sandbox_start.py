"""Start-up cost of one executor: the ``sandbox`` runtime (bubblewrap) versus ``none``.

Two views, each run for both runtimes in the same process, same task:

* ``launch``: plan the executor's launch (for the sandbox: list the root, lay out the
  binds) and run it to completion with the agent's own :func:`run_launch`, ``N``
  times; the executor is ``true``, so the time is the runtime's overhead.  The task
  has the shape of a real one (two inputs, a file and a directory output, a volume,
  a workdir); the sandbox is measured on the host's root and, when a static busybox
  is there, on an image directory as ``/``;
* ``agent``: the real ``bridge-agent`` running a task of ``E`` executors (``true``),
  wall time per executor (the agent's fixed costs are paid once per task).

    .venv/bin/python bench/sandbox_start.py [--runs 200] [--executors 20]

The last line printed is one JSON object (milliseconds; ``ratio`` = sandbox / none).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bridge.agent.cancel import CancelToken  # noqa: E402
from bridge.agent.executor import Streams, run_launch  # noqa: E402
from bridge.agent.paths import PathMap, task_prefixes  # noqa: E402
from bridge.agent.runtime import RuntimeKind, plan_launch  # noqa: E402
from bridge.agent.task import parse_task  # noqa: E402
from bridge.agent.workdir import open_workdir, read_status, write_task  # noqa: E402

AGENT = str(Path(sys.executable).with_name("bridge-agent"))


def task_doc(image: str, executors: int = 1, outputs: bool = True) -> dict[str, Any]:
    """The benchmark task (outputs only where the executors are not run by the agent,
    since ``true`` creates none)."""
    return {
        "id": "bench",
        "inputs": [
            {"path": "/data/in.txt", "content": "x\n"},
            {"path": "/data/conf.ini", "content": "[a]\n"},
        ],
        "outputs": [
            {"path": "/out/result.txt", "url": "/dev/null"},
            {"path": "/out/dir", "url": "/dev/null", "type": "DIRECTORY"},
        ]
        if outputs
        else [],
        "volumes": ["/scratchvol"],
        "executors": [
            {"image": image, "command": ["true"], "workdir": "/data"} for _ in range(executors)
        ],
    }


def busybox_image(dest: Path) -> Path | None:
    busybox = shutil.which("busybox")
    if busybox is None or b"ld-linux" in Path(busybox).read_bytes()[:4096]:
        return None
    for sub in ("bin", "dev", "proc", "sys", "tmp", "etc"):
        (dest / sub).mkdir(parents=True, exist_ok=True)
    shutil.copy2(busybox, dest / "bin" / "busybox")
    (dest / "bin" / "true").symlink_to("busybox")
    return dest


def time_launches(kind: RuntimeKind, image: str, runs: int, base: Path) -> list[float]:
    """Milliseconds per plan + run of one ``true`` executor."""
    task = parse_task(task_doc(image))
    paths = PathMap(base / "root", task_prefixes(task))
    for sub in ("data", "out/dir", "scratchvol", "tmp"):
        paths.host("/" + sub).mkdir(parents=True, exist_ok=True)
    for name in ("in.txt", "conf.ini"):
        paths.host(f"/data/{name}").write_text("x\n")
    binds = paths.binds(task)
    env = dict(os.environ)
    streams = Streams(stdin=None, stdout=base / "out.txt", stderr=base / "err.txt")
    token = CancelToken()
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        launch = plan_launch(
            kind, task.executors[0], paths=paths, binds=binds, base_env=env, name="bench"
        )
        code = run_launch(launch, streams, token)
        times.append((time.perf_counter() - started) * 1000)
        if code != 0:
            raise SystemExit(f"{kind.value}: exit {code}: {(base / 'err.txt').read_text()}")
    return times


def time_agent(runtime: str, executors: int, base: Path) -> float:
    """Wall milliseconds per executor of one agent run with ``executors`` executors."""
    wd = base / f"wd-{runtime}"
    wd.mkdir()
    write_task(
        open_workdir(str(wd)),
        task_doc("alpine", executors, outputs=False),
        {"container_runtime": runtime},
    )
    env = {**os.environ, "BRIDGE_SCRATCH_DIR": str(base / "scratch")}
    started = time.perf_counter()
    done = subprocess.run([AGENT, "run", str(wd)], env=env, capture_output=True, check=False)
    elapsed = (time.perf_counter() - started) * 1000
    status = read_status(open_workdir(str(wd)), 1) or {}
    if done.returncode != 0 or status.get("state") != "COMPLETE":
        raise SystemExit(f"agent ({runtime}) failed: {done.stderr.decode()[-2000:]}")
    return elapsed / executors


def summary(times: list[float]) -> dict[str, float]:
    ordered = sorted(times)
    return {
        "median_ms": round(statistics.median(ordered), 2),
        "mean_ms": round(statistics.fmean(ordered), 2),
        "p90_ms": round(ordered[int(0.9 * (len(ordered) - 1))], 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--executors", type=int, default=20)
    args = parser.parse_args()
    if shutil.which("bwrap") is None:
        raise SystemExit("bwrap not found (Debian package bubblewrap)")
    result: dict[str, Any] = {"runs": args.runs, "agent_executors": args.executors}
    with tempfile.TemporaryDirectory(prefix="bench-sandbox-") as tmp:
        base = Path(tmp)
        cases = {"none": (RuntimeKind.NONE, "alpine"), "sandbox": (RuntimeKind.SANDBOX, "alpine")}
        image = busybox_image(base / "image")
        if image is not None:
            cases["sandbox_image"] = (RuntimeKind.SANDBOX, str(image))
        for label, (kind, img) in cases.items():
            (base / label).mkdir()
            time_launches(kind, img, 5, base / label)  # warm caches
            figures = summary(time_launches(kind, img, args.runs, base / label))
            result[f"launch_{label}"] = figures
            print(f"launch {label:14s} {figures}")
        none_ms = result["launch_none"]["median_ms"]
        result["launch_ratio"] = round(result["launch_sandbox"]["median_ms"] / none_ms, 2)
        result["launch_overhead_ms"] = round(result["launch_sandbox"]["median_ms"] - none_ms, 2)
        for runtime in ("none", "sandbox"):
            per = time_agent(runtime, args.executors, base)
            result[f"agent_{runtime}_ms_per_executor"] = round(per, 2)
            print(f"agent  {runtime:14s} {per:.2f} ms per executor")
        result["agent_ratio"] = round(
            result["agent_sandbox_ms_per_executor"] / result["agent_none_ms_per_executor"], 2
        )
    print(
        f"sandbox start-up: {result['launch_sandbox']['median_ms']} ms vs none "
        f"{none_ms} ms per executor (x{result['launch_ratio']}, "
        f"+{result['launch_overhead_ms']} ms)"
    )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
