"""Many independent jobs in a few runner calls (``SlurmBackend.submit_many``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from schedulers.base import JobSpec, JobState, Resources
from schedulers.errors import SubmitError
from schedulers.slurm import SlurmBackend
from schedulers.slurm_parse import parse_submit_many
from tests.schedulers.conftest import wait_until


def test_answers_are_parsed_in_order_and_missing_ones_are_errors() -> None:
    answers = parse_submit_many("ok 101\nerr sbatch: error: invalid partition\nok 103;cluster\n", 4)
    assert answers[0] == "101" and answers[2] == "103"
    assert isinstance(answers[1], ValueError) and "invalid partition" in str(answers[1])
    assert isinstance(answers[3], ValueError) and "no answer" in str(answers[3])


@pytest.mark.slurm
@pytest.mark.anyio
async def test_submit_many_runs_each_job_and_names_each_refusal(
    slurm: SlurmBackend, workdir: Path
) -> None:
    specs = [
        JobSpec(
            f"many{i}",
            ["sh", "-c", f"echo {i} > {workdir}/m{i}"],
            str(workdir),
            stdout_path=str(workdir / f"m{i}.log"),
        )
        for i in range(5)
    ]
    specs.insert(
        2,
        JobSpec(
            "refused", ["true"], str(workdir), resources=Resources(partition="no-such-partition")
        ),
    )
    answers = await slurm.submit_many(specs, streams=2)
    assert isinstance(answers[2], SubmitError) and "refused" in str(answers[2])
    ids = [a for a in answers if isinstance(a, str)]
    assert len(ids) == 5 and all(i.isdigit() for i in ids)
    states = await wait_until(slurm, ids)
    assert {s.state for s in states.values()} == {JobState.COMPLETED}
    assert [(workdir / f"m{i}").read_text() for i in range(5)] == [f"{i}\n" for i in range(5)]
