"""The pyslurm fast path: the choice (pure), the record conversion, and a real run.

The real run needs a pyslurm built for the cluster's own Slurm version.  PyPI's
pyslurm targets Slurm 25.11 and Debian 12 ships 22.05, so on CI it skips and says so;
the CLI path is exercised by every other Slurm test.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Mapping
from pathlib import Path
from types import SimpleNamespace

import pytest

from schedulers.base import JobSpec, JobState
from schedulers.pyslurm_path import (
    choose_path,
    expand_task_ids,
    installed_pyslurm_version,
    jobs_from_pyslurm,
)
from schedulers.slurm import SlurmBackend
from schedulers.transport import LocalRunner

from .conftest import wait_until


def test_no_pyslurm_means_cli() -> None:
    choice = choose_path(pyslurm_version=None, slurm_version="22.05.8", runner_is_local=True)
    assert not choice.use_pyslurm
    assert choice.description == "CLI: pyslurm is not installed (cluster runs Slurm 22.05.8)"


def test_version_mismatch_means_cli() -> None:
    choice = choose_path(pyslurm_version="25.11.0", slurm_version="22.05.8", runner_is_local=True)
    assert not choice.use_pyslurm
    assert "pyslurm 25.11.0 does not match the cluster's Slurm 22.05.8" in choice.description


def test_remote_runner_means_cli() -> None:
    choice = choose_path(pyslurm_version="22.5.0", slurm_version="22.05.8", runner_is_local=False)
    assert not choice.use_pyslurm and "SSH" in choice.description


def test_other_slurm_conf_means_cli() -> None:
    choice = choose_path(
        pyslurm_version="25.11.1",
        slurm_version="25.11.0",
        runner_is_local=True,
        cluster_conf="/etc/slurm/slurm.conf",
        process_conf="/elsewhere/slurm.conf",
    )
    assert not choice.use_pyslurm and "SLURM_CONF" in choice.description


def test_matching_version_uses_pyslurm() -> None:
    choice = choose_path(pyslurm_version="25.11.1", slurm_version="25.11.0", runner_is_local=True)
    assert choice.use_pyslurm
    assert choice.description == "pyslurm 25.11.1 (matches Slurm 25.11.0)"


def test_task_ranges() -> None:
    assert expand_task_ids("0-3,7,9-13:2%4") == [0, 1, 2, 3, 7, 9, 11, 13]
    assert expand_task_ids("") == []


def _job(**kw: object) -> SimpleNamespace:
    base = {
        "id": 10,
        "state": "RUNNING",
        "state_reason": "None",
        "array_id": None,
        "array_task_id": None,
        "array_tasks_waiting": None,
        "exit_code": 0,
        "exit_code_signal": 0,
    }
    return SimpleNamespace(**{**base, **kw})


def test_pyslurm_records_become_the_parsers_records() -> None:
    jobs = jobs_from_pyslurm(
        [
            _job(id=10, state="FAILED", exit_code=3),
            _job(id=12, array_id=11, array_task_id=0, state="COMPLETED"),
            _job(
                id=11,
                array_id=11,
                state="PENDING",
                array_tasks_waiting="1-2",
                state_reason="Priority",
            ),
        ]
    )
    assert jobs["10"].to_status().exit_code == 3
    assert jobs["11_0"].raw_id == "12"
    assert jobs["11_2"].to_status().state is JobState.PENDING
    assert jobs["11_1"].reason == "Priority"


@pytest.mark.slurm
@pytest.mark.anyio
async def test_status_through_pyslurm_on_the_real_cluster(
    slurm_env: Mapping[str, str], tmp_path: Path
) -> None:
    version = subprocess.run(
        ["scontrol", "--version"], env={**os.environ, **slurm_env}, capture_output=True, text=True
    ).stdout.strip()
    choice = choose_path(
        pyslurm_version=installed_pyslurm_version(),
        slurm_version=version,
        runner_is_local=True,
        cluster_conf=slurm_env.get("SLURM_CONF"),
        process_conf=os.environ.get("SLURM_CONF"),
    )
    if not choice.use_pyslurm:
        pytest.skip(
            f"needs a pyslurm built for this cluster's Slurm ({version}); PyPI's pyslurm "
            f"targets Slurm 25.11 only. Backend reports: {choice.description}"
        )
    backend = SlurmBackend(LocalRunner(env=slurm_env), use_pyslurm=True)
    job = await backend.submit(JobSpec("py", ["sh", "-c", "exit 4"], str(tmp_path)))
    status = (await wait_until(backend, [job]))[job]
    assert backend.status_path.startswith("pyslurm")
    assert status.state is JobState.FAILED and status.exit_code == 4
