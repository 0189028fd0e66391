"""AWS Batch job descriptions -> job states, on recorded describe_jobs entries
(``data/aws_batch/README.md`` says where each came from), and the other pure rules."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
from pathlib import Path
from typing import Any

import pytest

from schedulers.aws_batch_parse import (
    ELEMENT_SCRIPT,
    array_environment,
    estimate_wait,
    job_status,
    microarchitecture,
)
from schedulers.aws_batch_settings import INSTANCE_MICROARCHITECTURES
from schedulers.base import JobState

DATA = Path(__file__).parent / "data" / "aws_batch"


def load(name: str) -> dict[str, Any]:
    return json.loads((DATA / f"{name}.json").read_text())


@pytest.mark.parametrize(
    ("name", "state", "exit_code"),
    [
        ("succeeded", JobState.COMPLETED, 0),
        ("array_child_succeeded", JobState.COMPLETED, 0),
        ("array_parent_succeeded", JobState.COMPLETED, 0),
        ("running", JobState.RUNNING, None),
        ("runnable", JobState.PENDING, None),
        ("failed_exit_3", JobState.FAILED, None),  # moto's describe drops the exit code
        ("exit_code_2", JobState.FAILED, 2),
        ("terminated_by_broker", JobState.CANCELLED, None),
        ("host_terminated", JobState.PREEMPTED, None),
        ("cannot_pull_image", JobState.FAILED, None),
        ("attempt_timeout", JobState.TIMEOUT, 137),
        ("out_of_memory", JobState.FAILED, 137),
        ("failed_bad_image_moto", JobState.FAILED, None),
    ],
)
def test_recorded_descriptions_map_to_states(
    name: str, state: JobState, exit_code: int | None
) -> None:
    status = job_status(load(name), image="bridge-agent:test")
    assert status.state is state, status
    assert status.exit_code == exit_code
    assert status.native_state == load(name)["status"]


def test_a_reclaimed_host_names_the_instance() -> None:
    status = job_status(load("host_terminated"))
    assert "i-0123456789abcdef0" in status.reason
    assert status.reason.startswith("preempted")


def test_an_image_that_cannot_start_is_named() -> None:
    status = job_status(load("cannot_pull_image"), image="registry.example/bridge-agent:missing")
    assert "registry.example/bridge-agent:missing" in status.reason
    assert "CannotPullContainerError" in status.reason


def test_a_silent_failure_names_the_image() -> None:
    status = job_status(load("failed_bad_image_moto"), image="no-such-registry.invalid/none:1")
    assert "no-such-registry.invalid/none:1" in status.reason


def test_out_of_memory_keeps_the_reason() -> None:
    assert "OutOfMemoryError" in job_status(load("out_of_memory")).reason


def run_element(env: dict[str, str], index: int) -> str:
    result = subprocess.run(
        ["sh", "-c", ELEMENT_SCRIPT],
        env={"PATH": os.environ["PATH"], **env, "AWS_BATCH_JOB_ARRAY_INDEX": str(index)},
        capture_output=True,
        text=True,
        check=True,
    )
    return result.stdout


def test_each_array_element_runs_its_own_argv_with_awkward_arguments() -> None:
    argvs = [
        ["printf", "%s|", "s3://work/task-a", "it's", "$HOME `x`"],
        ["printf", "%s|", "s3://work/task-b", "two  spaces", ";rm -rf /"],
        ["printf", "%s|", "s3://work/task-c", "", "*"],
    ]
    array = array_environment(argvs, ["n0", "n1", "n2"])
    assert array.prefix  # the shared start is stored once
    for i, argv in enumerate(argvs):
        assert run_element(array.as_env(), i) == "".join(f"{a}|" for a in argv[2:])


def test_the_job_id_suffix_stands_in_for_a_missing_index() -> None:
    array = array_environment([["echo", "zero"], ["echo", "one"]], ["a", "b"])
    env = {**array.as_env(), "AWS_BATCH_JOB_ID": "3f2a:1"}
    out = subprocess.run(
        ["sh", "-c", ELEMENT_SCRIPT],
        env={"PATH": os.environ["PATH"], **env},
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout == "one\n"


def test_identical_command_lines_still_run() -> None:
    array = array_environment([["echo", "same"], ["echo", "same"]], ["a", "b"])
    assert run_element(array.as_env(), 1) == "same\n"


def test_a_newline_in_an_argument_cannot_be_an_element() -> None:
    with pytest.raises(ValueError, match="newline"):
        array_environment([["echo", "a\nb"]], ["a"])


def test_the_common_part_is_stored_once() -> None:
    argvs = [
        ["bridge-agent", "run", f"s3://bucket/work/{i:032x}", "--attempt", "1"] for i in range(100)
    ]
    array = array_environment(argvs, [f"bridge-{i:032x}-1" for i in range(100)])
    raw = sum(len(shlex.join(a)) for a in argvs)
    assert len(array.as_env()["BRIDGE_ARRAY_LINES"]) < raw / 2


@pytest.mark.parametrize(
    ("types", "expected"),
    [
        (["c6i.large"], "icelake"),
        (["c6i.large", "m6i.xlarge"], "icelake"),
        (["c5.large", "c6i.large"], "skylake_avx512"),
        (["optimal"], "haswell"),
        (["c6g.large"], "neoverse_n1"),
        (["x9z.large"], None),  # unknown family: the config must say
        (["c6g.large", "c6i.large"], None),  # no common target across ISAs
    ],
)
def test_instance_families_give_a_microarchitecture(types: list[str], expected: str | None) -> None:
    assert microarchitecture(types, INSTANCE_MICROARCHITECTURES) == expected


def test_the_wait_estimate_grows_with_the_queue() -> None:
    assert estimate_wait(0, 0, 16, 1, 300, 0) == 0
    assert estimate_wait(10, 5, 16, 1, 300, 30) == 30  # room left: start-up only
    assert estimate_wait(16, 16, 16, 1, 300, 0) == 600  # a full wave ahead, plus ours
    assert estimate_wait(100, 16, 16, 1, 300, 0) > estimate_wait(20, 16, 16, 1, 300, 0)
    assert estimate_wait(1, 0, 0, 1, 300, 0) == float("inf")
