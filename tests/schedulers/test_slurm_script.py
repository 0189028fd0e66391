"""The batch script: directives from resources, one case per element, real bash runs it."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from schedulers.base import JobSpec, Resources
from schedulers.errors import SubmitError
from schedulers.slurm_script import format_time, render_script


def directives(script: str) -> list[str]:
    return [line for line in script.splitlines() if line.startswith("#SBATCH")]


def test_resources_become_directives() -> None:
    res = Resources(
        cpus=4,
        memory_mb=2048,
        wall_time_s=90061,
        gpus=2,
        partition="gpu",
        account="proj1",
        qos="high",
        constraint="x86_64_v3&ib",
    )
    spec = JobSpec(
        "my job/1", ["run"], "/scratch/w", resources=res, stdout_path="/o", stderr_path="/e"
    )
    assert directives(render_script([spec], res, array=False)) == [
        "#SBATCH --job-name=my-job-1",
        "#SBATCH --ntasks=1",
        "#SBATCH --cpus-per-task=4",
        "#SBATCH --chdir=/scratch/w",
        "#SBATCH --mem=2048M",
        "#SBATCH --time=1-01:01:01",
        "#SBATCH --partition=gpu",
        "#SBATCH --account=proj1",
        "#SBATCH --qos=high",
        "#SBATCH --gres=gpu:2",
        "#SBATCH --constraint=x86_64_v3&ib",
        "#SBATCH --output=/o",
        "#SBATCH --error=/e",
    ]


def test_defaults_leave_the_cluster_to_decide() -> None:
    spec = JobSpec("j", ["true"], "/w")
    lines = directives(render_script([spec], spec.resources, array=False))
    assert not any(d.split("=")[0].endswith(("mem", "time", "partition", "gres")) for d in lines)


def test_array_directive_and_output_redirection() -> None:
    specs = [JobSpec(f"e{i}", ["echo", str(i)], f"/w{i}", stdout_path=f"/o{i}") for i in range(3)]
    script = render_script(specs, Resources(), array=True)
    assert "#SBATCH --array=0-2" in directives(script)
    assert "#SBATCH --output=/dev/null" in directives(script)
    assert "exec >/o1 2>&1 || exit 98" in script
    separate = JobSpec("e", ["true"], "/w", stdout_path="/o", stderr_path="/e")
    assert "exec >/o 2>/e || exit 98" in render_script(
        [separate, separate], Resources(), array=True
    )


def test_paths_with_spaces_are_quoted() -> None:
    spec = JobSpec("j", ["true"], "/my work", stdout_path="/my work/out")
    lines = directives(render_script([spec], spec.resources, array=False))
    assert '#SBATCH --chdir="/my work"' in lines
    assert '#SBATCH --output="/my work/out"' in lines


@pytest.mark.parametrize(
    "spec",
    [
        JobSpec("j", ["true"], "/w", resources=Resources(partition="a\nb")),
        JobSpec("j", ["true"], '/w"x'),
        JobSpec("j", [], "/w"),
        JobSpec("j", ["true"], "/w", env={"BAD-NAME": "1"}),
    ],
)
def test_unsafe_jobs_are_refused_before_submission(spec: JobSpec) -> None:
    with pytest.raises(SubmitError):
        render_script([spec], spec.resources, array=False)


def test_time_format() -> None:
    assert format_time(59) == "0-00:00:59"
    assert format_time(3600) == "0-01:00:00"
    assert format_time(0) == "0-00:00:01"


def test_bash_runs_each_elements_own_argv_env_and_dir(tmp_path: Path) -> None:
    """Run the rendered array script with bash, as slurmstepd would, for each index."""
    specs = []
    for i in range(3):
        (tmp_path / f"d{i}").mkdir()
        specs.append(
            JobSpec(
                f"e{i}",
                ["sh", "-c", 'printf "%s|%s|%s\\n" "$0" "$V" "$(pwd)"', f"arg $(x) '{i}'"],
                str(tmp_path / f"d{i}"),
                env={"V": f"value; rm -rf {i} `x`"},
                stdout_path=str(tmp_path / f"out{i}"),
            )
        )
    script = tmp_path / "job.sh"
    script.write_text(render_script(specs, Resources(), array=True))
    for i in range(3):
        env = {"PATH": os.environ["PATH"], "SLURM_ARRAY_TASK_ID": str(i)}
        subprocess.run(["bash", str(script)], env=env, check=True)
        expected = f"arg $(x) '{i}'|value; rm -rf {i} `x`|{tmp_path / f'd{i}'}\n"
        assert (tmp_path / f"out{i}").read_text() == expected
    missing = subprocess.run(["bash", str(script)], env={"SLURM_ARRAY_TASK_ID": "7"}, check=False)
    assert missing.returncode == 97


def test_plain_job_is_index_zero_and_keeps_the_exit_code(tmp_path: Path) -> None:
    spec = JobSpec("j", ["sh", "-c", "exit 42"], str(tmp_path))
    script = tmp_path / "job.sh"
    script.write_text(render_script([spec], spec.resources, array=False))
    result = subprocess.run(["bash", str(script)], env={"PATH": os.environ["PATH"]}, check=False)
    assert result.returncode == 42
