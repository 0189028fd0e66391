"""Submission throughput of the Slurm backend against a plain ``sbatch`` loop.

For N short tasks (``true``) on the local test cluster (scripts/services/slurm.sh):

* ``sbatch loop``    — ``sbatch --parsable --wrap true`` N times, one after another;
* ``backend submit`` — ``SlurmBackend.submit`` N times, one after another;
* ``backend array``  — one ``SlurmBackend.submit_array`` call for the N tasks.

Submission rate is tasks/s from the first request until every task has a Slurm job
id; end-to-end is until every job has left the queue (one ``squeue`` poll every
0.2 s, the same for all three).  End-to-end time is mostly Slurm starting N jobs on
the test node's slots, so it moves with the machine's load.  The backend is driven
directly: no broker yet.
The last line printed is one JSON object.

    .venv/bin/python bench/slurm_submit.py [--tasks 200] [--runner local|ssh]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from schedulers.base import JobSpec  # noqa: E402
from schedulers.slurm import SlurmBackend  # noqa: E402
from schedulers.transport import CommandRunner, LocalRunner, SSHRunner  # noqa: E402


def read_env(name: str) -> dict[str, str]:
    path = REPO / ".services" / name / "env"
    if not path.exists():
        sys.exit(f"{path} missing: run scripts/services/{name}.sh first")
    return dict(line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)


def wait_gone(job_ids: list[str], env: dict[str, str], timeout: float = 900) -> None:
    """Poll squeue until none of the jobs is pending, running or completing."""
    bases = ",".join(sorted({j.split("_")[0] for j in job_ids}))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        out = subprocess.run(
            ["squeue", "-h", "--array", "-t", "PD,CF,R,CG", "-j", bases, "-o", "%i"],
            env=env,
            capture_output=True,
            text=True,
            check=False,
        ).stdout
        if not out.strip():
            return
        time.sleep(0.2)
    raise TimeoutError("jobs still queued")


def wait_idle(env: dict[str, str], timeout: float = 120) -> None:
    """Let jobs from earlier cases (or anyone else) drain before timing the next case."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        out = subprocess.run(
            ["squeue", "-h", "-t", "PD,CF,R,CG", "-o", "%i"],
            env=env,
            capture_output=True,
            text=True,
            check=False,
        ).stdout
        if not out.strip():
            return
        time.sleep(0.5)


def sbatch_loop(n: int, workdir: str, env: dict[str, str]) -> tuple[list[str], float]:
    started = time.monotonic()
    ids = []
    for i in range(n):
        argv = ["sbatch", "--parsable", f"--job-name=loop{i}", "--output=/dev/null"]
        argv += [f"--chdir={workdir}", "--wrap", "true"]
        out = subprocess.run(argv, env=env, capture_output=True, text=True, check=True).stdout
        ids.append(out.strip().split(";")[0])
    return ids, time.monotonic() - started


async def backend_submit(backend: SlurmBackend, specs: list[JobSpec]) -> tuple[list[str], float]:
    started = time.monotonic()
    ids = [await backend.submit(spec) for spec in specs]
    return ids, time.monotonic() - started


async def backend_array(backend: SlurmBackend, specs: list[JobSpec]) -> tuple[list[str], float]:
    started = time.monotonic()
    ids = await backend.submit_array(specs)
    return ids, time.monotonic() - started


def make_runner(kind: str, slurm_env: dict[str, str]) -> CommandRunner:
    if kind == "local":
        return LocalRunner(env=slurm_env)
    ssh = read_env("sshd")
    return SSHRunner(
        ssh["SSH_HOST"],
        port=int(ssh["SSH_PORT"]),
        user=ssh["SSH_USER"],
        key_filename=ssh["SSH_KEY"],
        known_hosts=ssh["SSH_KNOWN_HOSTS"],
        use_agent=False,
        env=slurm_env,
    )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=200)
    parser.add_argument("--runner", choices=["local", "ssh"], default="local")
    args = parser.parse_args()
    n = args.tasks
    slurm_env = read_env("slurm")
    env = {**os.environ, **slurm_env}
    backend = SlurmBackend(make_runner(args.runner, slurm_env), name="bench")
    await backend.config()  # one-time `scontrol show config`, outside the timings
    print(f"{n} tasks of `true` on the local single-node Slurm ({args.runner} runner).")
    print("The Slurm backend is driven directly here; the broker does not sit in front yet.")
    results: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-slurm-") as workdir:
        specs = [JobSpec(f"task{i}", ["true"], workdir, stdout_path="/dev/null") for i in range(n)]
        cases = {
            "sbatch_loop": lambda: asyncio.to_thread(sbatch_loop, n, workdir, env),
            "backend_submit": lambda: backend_submit(backend, specs),
            "backend_array": lambda: backend_array(backend, specs),
        }
        for name, run in cases.items():
            await asyncio.to_thread(wait_idle, env)
            started = time.monotonic()
            ids, submit_s = await run()
            assert len(ids) == n and all(ids)
            await asyncio.to_thread(wait_gone, ids, env)
            total = time.monotonic() - started
            states = await backend.status(ids)
            done = sum(1 for s in states.values() if s.state.value == "COMPLETED")
            results[name] = {
                "submit_s": round(submit_s, 3),
                "tasks_per_s": round(n / submit_s, 1),
                "end_to_end_s": round(total, 2),
                "completed": done,
            }
            print(
                f"{name:<15} submit {submit_s:7.2f} s  {n / submit_s:8.1f} tasks/s  "
                f"all finished after {total:6.2f} s  ({done}/{n} COMPLETED)"
            )
    await backend.close()
    loop = results["sbatch_loop"]
    summary = {
        "tasks": n,
        "runner": args.runner,
        "driver": "SlurmBackend called directly (no broker in front)",
        **results,
        "ratio_plain": round(results["backend_submit"]["tasks_per_s"] / loop["tasks_per_s"], 2),
        "ratio_arrays": round(results["backend_array"]["tasks_per_s"] / loop["tasks_per_s"], 2),
        "e2e_ratio_plain": round(
            loop["end_to_end_s"] / results["backend_submit"]["end_to_end_s"], 2
        ),
        "e2e_ratio_arrays": round(
            loop["end_to_end_s"] / results["backend_array"]["end_to_end_s"], 2
        ),
    }
    print(
        f"submission rate vs sbatch loop: backend submit x{summary['ratio_plain']}, "
        f"backend array x{summary['ratio_arrays']}; end-to-end speed-up: "
        f"x{summary['e2e_ratio_plain']} / x{summary['e2e_ratio_arrays']}"
    )
    print(json.dumps(summary))


if __name__ == "__main__":
    asyncio.run(main())
