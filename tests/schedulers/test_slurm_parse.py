"""The Slurm parsers on output recorded from a real cluster (see data/README.md)."""

from __future__ import annotations

import logging
from datetime import datetime

import pytest

from schedulers.base import JobState
from schedulers.slurm_parse import (
    SLURM_STATES,
    SlurmJob,
    map_state,
    microarchitecture_from_cpuinfo,
    parse_config,
    parse_exit_code,
    parse_key_values,
    parse_pending,
    parse_sacct,
    parse_sbatch_id,
    parse_scontrol_jobs,
    parse_sinfo_nodes,
    parse_squeue,
    parse_version,
)

from .conftest import DATA


def data(name: str) -> str:
    return (DATA / name).read_text()


def test_every_state_in_the_man_pages_has_a_meaning() -> None:
    # squeue(1) "JOB STATE CODES", long forms
    squeue_states = [
        "BOOT_FAIL",
        "CANCELLED",
        "COMPLETED",
        "CONFIGURING",
        "COMPLETING",
        "DEADLINE",
        "FAILED",
        "NODE_FAIL",
        "OUT_OF_MEMORY",
        "PENDING",
        "PREEMPTED",
        "RUNNING",
        "RESV_DEL_HOLD",
        "REQUEUE_FED",
        "REQUEUE_HOLD",
        "REQUEUED",
        "RESIZING",
        "REVOKED",
        "SIGNALING",
        "SPECIAL_EXIT",
        "STAGE_OUT",
        "STOPPED",
        "SUSPENDED",
        "TIMEOUT",
    ]
    assert sorted(SLURM_STATES) == sorted(squeue_states)
    assert JobState.UNKNOWN not in SLURM_STATES.values()


def test_state_mapping_examples() -> None:
    assert map_state("CANCELLED by 1000") is JobState.CANCELLED
    assert map_state("COMPLETING") is JobState.RUNNING
    assert map_state("NODE_FAIL") is JobState.LOST
    assert map_state("DEADLINE") is JobState.TIMEOUT
    assert map_state("OUT_OF_MEMORY") is JobState.FAILED


def test_unknown_state_is_unknown_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="schedulers.slurm_parse"):
        assert map_state("WIBBLING") is JobState.UNKNOWN
    assert "WIBBLING" in caplog.text
    status = SlurmJob("9", "WIBBLING").to_status()
    assert status.state is JobState.UNKNOWN and status.native_state == "WIBBLING"


def test_sbatch_id() -> None:
    assert parse_sbatch_id("1234\n") == "1234"
    assert parse_sbatch_id("1234;cluster-a\n") == "1234"
    with pytest.raises(ValueError):
        parse_sbatch_id("")
    with pytest.raises(ValueError):
        parse_sbatch_id("Submitted batch job 12\n")


def test_squeue_recorded_states() -> None:
    jobs = parse_squeue(data("squeue_states.txt"))
    assert set(jobs) == {
        "17", "18", "19", "20_0", "20_1", "20_2", "20_3", "21_0", "21_1", "21_2",
        "22", "23", "24",
    }  # fmt: skip
    assert jobs["20_1"] == SlurmJob("20_1", "FAILED", "NonZeroExitCode", "26")
    assert jobs["20_3"].raw_id == "20"  # the last element keeps the array's own record
    assert jobs["21_1"].raw_id == "21"  # pending elements share it
    assert jobs["24"].to_status().state is JobState.TIMEOUT
    assert jobs["24"].to_status().reason == "TIMEOUT, TimeLimit"
    assert jobs["19"].to_status().reason == "PENDING, BeginTime"
    assert jobs["18"].to_status().state is JobState.PENDING
    assert jobs["17"].to_status().exit_code == 0  # COMPLETED implies 0
    running = parse_squeue(data("squeue_states_running.txt"))
    assert running["17"].to_status().state is JobState.RUNNING


def test_squeue_skips_compressed_array_lines_and_noise() -> None:
    text = "5_[0-9]|5|PENDING|None\n\ngarbage\n6|6|RUNNING|None\n"
    assert list(parse_squeue(text)) == ["6"]


def test_sacct_completion_is_keyed_by_raw_id() -> None:
    jobs = parse_sacct(data("sacct_completion.txt"))
    assert jobs["26"].native_state == "FAILED" and jobs["26"].exit_code == 1  # element 20_1
    assert jobs["22"].to_status().exit_code == 5
    assert jobs["23"].to_status().state is JobState.CANCELLED


def test_sacct_with_slurmdbd() -> None:
    jobs = parse_sacct(data("sacct_slurmdbd.txt"))
    assert "1241.batch" not in jobs  # steps are ignored
    cancelled = jobs["1236"].to_status()
    assert cancelled.state is JobState.CANCELLED
    assert "by uid 1000" in cancelled.reason
    assert cancelled.native_state == "CANCELLED"
    assert jobs["1237_1"].to_status().state is JobState.TIMEOUT
    assert jobs["1239"].to_status().state is JobState.FAILED
    assert jobs["1240"].to_status().state is JobState.LOST
    assert jobs["1241"].to_status().state is JobState.PREEMPTED
    assert jobs["1235"].to_status().exit_code == 3


def test_exit_codes() -> None:
    assert parse_exit_code("2:0") == (2, 0)
    assert parse_exit_code("0:15") == (0, 15)
    assert parse_exit_code("") == (None, None)


def test_scontrol_jobs_recorded() -> None:
    jobs = parse_scontrol_jobs(data("scontrol_show_job.txt"))
    assert jobs["20_1"].raw_id == "26" and jobs["20_1"].exit_code == 1
    assert jobs["23"].native_state == "CANCELLED" and jobs["23"].signal == 15
    assert jobs["24"].reason == "TimeLimit"
    assert "21" in jobs  # the pending array's own record (tasks 0-2)


def test_key_values_keep_spaces_in_values() -> None:
    kv = parse_key_values("JobId=5 Reason=Held by admin WorkDir=/a b/c StdOut=/x")
    assert kv == {"JobId": "5", "Reason": "Held by admin", "WorkDir": "/a b/c", "StdOut": "/x"}


def test_config_recorded() -> None:
    config = parse_config(data("scontrol_show_config.txt"))
    assert config["MaxArraySize"] == "1001"
    assert config["AccountingStorageType"] == "accounting_storage/none"
    assert config["JobCompType"] == "jobcomp/filetxt"
    assert parse_version(config["SLURM_VERSION"]) == (22, 5, 8)


def test_versions() -> None:
    assert parse_version("slurm-wlm 22.05.8") == (22, 5, 8)
    assert parse_version("25.11") == (25, 11, 0)
    with pytest.raises(ValueError):
        parse_version("slurm")


def test_sinfo_recorded() -> None:
    shape = parse_sinfo_nodes(data("sinfo_nodes.txt"))
    assert shape.partitions == ("debug",)
    assert shape.default_partition == "debug"
    assert shape.cpus == 2 and shape.memory_mb == 21694
    assert shape.usable_nodes == 1
    assert "x86_64_v3" in shape.features


def test_sinfo_counts_each_node_once_and_skips_down_nodes() -> None:
    text = (
        "n1|cpu*|64|256000|avx2|idle\n"
        "n1|long|64|256000|avx2|idle\n"
        "n2|cpu*|64|512000|(null)|down*\n"
        "g1|gpu|32|128000|a100|drained\n"
    )
    shape = parse_sinfo_nodes(text)
    assert shape.partitions == ("cpu", "long", "gpu")
    assert shape.cpus == 160 and shape.memory_mb == 512000
    assert shape.usable_nodes == 1


def test_pending_recorded() -> None:
    count, wait = parse_pending(data("squeue_pending.txt"), datetime(2026, 11, 26, 19, 50, 49))
    assert count == 5
    assert wait == 3600.0  # only job 19 has an expected start time (its --begin)


def test_pending_empty_queue() -> None:
    assert parse_pending("", datetime.now()) == (0, 0.0)


@pytest.mark.parametrize(
    ("name", "machine", "expected"),
    [
        ("cpuinfo_znver3.txt", "x86_64", "zen3"),
        ("cpuinfo_graviton2.txt", "aarch64", "neoverse_n1"),
        ("cpuinfo_epyc_this_ci.txt", "x86_64", "x86_64_v4"),
    ],
)
def test_microarchitecture_from_recorded_cpuinfo(name: str, machine: str, expected: str) -> None:
    assert microarchitecture_from_cpuinfo(data(name), machine) == expected


def test_microarchitecture_without_avx512_drops_a_level() -> None:
    text = data("cpuinfo_epyc_this_ci.txt")
    stripped = " ".join(w for w in text.split(" ") if not w.startswith("avx512"))
    name = microarchitecture_from_cpuinfo(stripped, "x86_64")
    assert name not in {"x86_64_v4", "zen4"}
    assert name == "zen2"


def test_microarchitecture_of_other_families_is_generic() -> None:
    assert microarchitecture_from_cpuinfo("", "ppc64le") == "ppc64le"
    assert microarchitecture_from_cpuinfo("", "riscv64") == "riscv64"
