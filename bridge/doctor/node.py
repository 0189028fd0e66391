"""What a compute node sees: one probe job through the target's own backend.

The probe job writes a small report into the work directory -- proving that a node can
write there -- with what the node offers: the agent's version, the FUSE device and
helper, and the container/sandbox runtimes on its ``PATH``.  :func:`node_report` is
the one place that asks a node; when the agent answers ``bridge-agent check`` (a JSON
description of the node), that answer is used, otherwise the plain shell probes.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from pathlib import Path
from typing import Any

from bridge.doctor.agent import AGENT, WORKDIR
from bridge.doctor.context import DoctorContext
from bridge.doctor.core import Check, CheckFailed, CheckSkipped
from bridge.doctor.remote import PARTITION, SSH
from schedulers.base import JobSpec, JobState, Resources
from schedulers.errors import SchedulerError

PROBE_JOB = "probe job writes the work directory from a node"
FUSE = "FUSE usable on a node (or the fallback)"
RUNTIME = "container runtime found on a node"
RUNTIMES = ("docker", "podman", "ch-run", "bwrap", "apptainer", "singularity")
PROBE_WAIT_S = 100.0

# A fixed script: the report path and the agent's argv arrive as arguments, never
# pasted into the script text.
PROBE_SCRIPT = r"""
out="$1"; shift
tmp="$out.tmp.$$"
{
  echo "node=$(uname -n)"
  if report=$("$@" check 2>/dev/null); then
    echo "agent_check=$(printf '%s' "$report" | tr '\n' ' ')"
  fi
  echo "agent_version=$("$@" --version 2>&1 | tail -n 1)"
  if [ -c /dev/fuse ] && [ -r /dev/fuse ] && [ -w /dev/fuse ]; then
    echo "fuse_device=yes"
  else
    echo "fuse_device=no"
  fi
  echo "fusermount=$(command -v fusermount3 || command -v fusermount || true)"
  for r in docker podman ch-run bwrap apptainer singularity; do
    echo "runtime.$r=$(command -v "$r" || true)"
  done
} > "$tmp" && mv "$tmp" "$out"
"""


def parse_report(text: str) -> dict[str, Any]:
    """``key=value`` lines -> a node description (the agent's own JSON when present)."""
    raw = dict(line.split("=", 1) for line in text.splitlines() if "=" in line)
    report: dict[str, Any] = {
        "node": raw.get("node", "?"),
        "agent_version": raw.get("agent_version", ""),
        "fuse": {
            "device": raw.get("fuse_device") == "yes",
            "fusermount": raw.get("fusermount") or None,
        },
        "runtimes": {r: raw[f"runtime.{r}"] for r in RUNTIMES if raw.get(f"runtime.{r}")},
        "source": "shell probes",
    }
    if raw.get("agent_check"):
        try:
            doc = json.loads(raw["agent_check"])
        except ValueError:
            doc = None
        if isinstance(doc, dict):
            report.update(_from_agent_check(doc))
    return report


def _from_agent_check(doc: dict[str, Any]) -> dict[str, Any]:
    """Read ``bridge-agent check`` JSON: a ``fuse`` object and a ``runtimes`` mapping
    or list.  Anything unrecognised keeps the shell probes' answer."""
    out: dict[str, Any] = {"source": "bridge-agent check"}
    fuse = doc.get("fuse")
    if isinstance(fuse, dict):
        usable = fuse.get("usable", fuse.get("ok"))
        out["fuse"] = {
            "device": bool(usable),
            "fusermount": fuse.get("fusermount") or ("yes" if usable else None),
            "detail": fuse.get("detail") or fuse.get("reason"),
        }
    runtimes = doc.get("runtimes")
    if isinstance(runtimes, dict):
        out["runtimes"] = {
            str(k): (v.get("path") or "yes") if isinstance(v, dict) else str(v)
            for k, v in runtimes.items()
            if v and (not isinstance(v, dict) or v.get("usable", v.get("ok", True)))
        }
    elif isinstance(runtimes, list):
        out["runtimes"] = {str(r): "yes" for r in runtimes}
    return out


def _report_location(ctx: DoctorContext, token: str) -> tuple[Path, Path]:
    """(report file, job directory) -- inside the work directory when it is a path."""
    url = ctx.work_url
    if url.startswith("file://"):
        url = url[len("file://") :]
    # object store: nodes report through the job's output directory (shared file system)
    job_dir = Path(url) / ".doctor" if "://" not in url else ctx.scratch_dir
    job_dir.mkdir(parents=True, exist_ok=True)
    return job_dir / f"node-{token}.txt", job_dir


async def node_report(ctx: DoctorContext) -> dict[str, Any]:
    """Run the probe job once per target; later checks read the cached answer."""
    if "node" in ctx.cache:
        return dict(ctx.cache["node"])
    token = uuid.uuid4().hex[:12]
    report_path, job_dir = _report_location(ctx, token)
    log_path = ctx.scratch_dir / f"probe-{token}.log"
    t = ctx.target
    spec = JobSpec(
        name=f"bridge-doctor-{token}",
        argv=["sh", "-c", PROBE_SCRIPT, "bridge-doctor", str(report_path), *ctx.agent],
        workdir=str(job_dir),
        resources=Resources(
            cpus=1,
            wall_time_s=300,
            partition=t.setting("partition"),
            account=t.setting("account"),
            qos=t.setting("qos"),
        ),
        env=dict(t.env),
        stdout_path=str(log_path),
        stderr_path=str(log_path),
    )
    backend = ctx.backend()
    try:
        job_id = await backend.submit(spec)
    except SchedulerError as err:
        raise CheckFailed(f"the probe job was refused: {err}") from err
    deadline = time.monotonic() + PROBE_WAIT_S
    state = JobState.UNKNOWN
    reason = ""
    while time.monotonic() < deadline:
        try:
            status = (await backend.status([job_id])).get(job_id)
        except SchedulerError:
            status = None
        if status is not None:
            state, reason = status.state, status.reason or ""
            if state.finished:
                break
        await asyncio.sleep(0.5)
    else:
        await backend.cancel([job_id])
        raise CheckFailed(
            f"probe job {job_id} did not finish within {PROBE_WAIT_S:.0f} s "
            f"(last state {state.value})",
            f"see why job {job_id} waits (squeue -j {job_id} -o %R) or pick a partition "
            f"with free nodes for target {t.name}",
        )
    try:
        text = report_path.read_text()
    except OSError as err:
        output = log_path.read_text()[-400:] if log_path.exists() else ""
        raise CheckFailed(
            f"probe job {job_id} ended {state.value} without writing {report_path}: "
            f"{reason} {output}".strip()
        ) from err
    finally:
        report_path.unlink(missing_ok=True)
        log_path.unlink(missing_ok=True)
    report = parse_report(text)
    report["job_id"] = job_id
    ctx.cache["node"] = report
    return dict(report)


async def probe_job(ctx: DoctorContext) -> str:
    report = await node_report(ctx)
    return f"job {report['job_id']} on {report['node']} wrote {ctx.work_url}"


async def fuse_on_node(ctx: DoctorContext) -> str:
    mode = ctx.target.fusion
    if mode == "off":
        raise CheckSkipped("fusion = off: no /fusion paths for tasks")
    report = await node_report(ctx)
    fuse = report["fuse"]
    usable = bool(fuse["device"] and fuse["fusermount"])
    if usable:
        how = "copy-staging (fusion = stage)" if mode == "stage" else "FUSE mounts"
        return f"/dev/fuse and {fuse['fusermount']} on {report['node']}: {how}"
    why = fuse.get("detail") or (
        "no usable /dev/fuse" if not fuse["device"] else "no fusermount3 on PATH"
    )
    if mode == "mount":
        raise CheckFailed(
            f"{why} on {report['node']}, and fusion = mount",
            f"set fusion = 'stage' (or 'auto') for target {ctx.target.name}, or have the "
            "centre allow FUSE on its nodes (/dev/fuse, fuse3 package)",
        )
    return f"{why} on {report['node']}: fallback copy-staging (fusion = {mode})"


async def runtime_on_node(ctx: DoctorContext) -> str:
    wanted = ctx.target.container_runtime
    if wanted == "none":
        raise CheckSkipped("container_runtime = none: tasks run on the node without a container")
    report = await node_report(ctx)
    found: dict[str, str] = report["runtimes"]
    listing = ", ".join(f"{k} ({v})" for k, v in found.items()) or "none"
    if wanted == "auto":
        if not found:
            return f"none on {report['node']}: tasks run without a container"
        return f"on {report['node']}: {listing}"
    binary = "ch-run" if wanted == "charliecloud" else wanted
    if binary not in found:
        raise CheckFailed(
            f"{binary} not found on {report['node']} (found: {listing})",
            f"install {wanted} on the nodes, or set container_runtime of target "
            f"{ctx.target.name} to one found ({listing}) or 'auto'",
        )
    return f"{binary} at {found[binary]} on {report['node']}"


CHECKS = [
    Check(
        PROBE_JOB,
        probe_job,
        "make {work_url} writable from the compute nodes (a shared file system the nodes "
        "mount at the same path), or set work_url of target {target} to where they see it",
        requires=(SSH, PARTITION, WORKDIR),
        timeout_s=PROBE_WAIT_S + 30,
    ),
    Check(FUSE, fuse_on_node, "see the probe job step", requires=(PROBE_JOB,), timeout_s=10),
    Check(RUNTIME, runtime_on_node, "see the probe job step", requires=(PROBE_JOB,), timeout_s=10),
]

__all__ = ["AGENT", "CHECKS", "node_report"]
