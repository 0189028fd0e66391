"""``bridge config check``: each problem with its line and key; ``bridge serve`` refuses
the same file with the same message."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bridge.config_check import LineIndex, check_file
from tests.conftest import service_env

BRIDGE = str(Path(sys.executable).with_name("bridge"))


def run(*args: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "BRIDGE_DATA_DIR": str(tmp_path)}
    return subprocess.run(
        [BRIDGE, *args], capture_output=True, text=True, timeout=120, env=env, check=False
    )


def test_an_unknown_key_is_named_with_its_line(tmp_path: Path) -> None:
    path = tmp_path / "bridge.toml"
    path.write_text(
        "port = 8765\n"  # 1
        "\n"  # 2
        "[[targets]]\n"  # 3
        'name = "a"\n'  # 4
        'kind = "local"\n'  # 5
        "\n"  # 6
        "[[targets]]\n"  # 7
        'name = "b"\n'  # 8
        'kind = "slurm"\n'  # 9
        'hostt = "login1"\n'  # 10
        "\n"  # 11
        "[broker]\n"  # 12
        "poll_interval = 1\n"  # 13
    )
    result = run("config", "check", str(path), "--offline", tmp_path=tmp_path)
    assert result.returncode == 1
    assert f"{path}:10: targets[1].hostt: unknown key" in result.stderr
    assert f"{path}:13: broker.poll_interval: unknown key" in result.stderr
    doc = json.loads(run("config", "check", str(path), "--json", tmp_path=tmp_path).stdout)
    assert doc["ok"] is False and doc["file"] == str(path)
    assert {(p["line"], p["key"]) for p in doc["problems"]} == {
        (10, "targets[1].hostt"),
        (13, "broker.poll_interval"),
    }


def test_a_wrong_value_names_the_key(tmp_path: Path) -> None:
    path = tmp_path / "bridge.toml"
    path.write_text('[[targets]]\nname = "a"\nkind = "local"\nfusion = "sometimes"\n')
    (problem,) = check_file(path)
    assert (problem.line, problem.key) == (4, "targets[0].fusion")
    assert "sometimes" in problem.text


def test_a_path_work_url_for_a_cloud_target(tmp_path: Path) -> None:
    path = tmp_path / "bridge.toml"
    path.write_text(
        'work_url = "/srv/work"\n\n[[targets]]\nname = "cloud"\nkind = "aws_batch"\n'
        'job_queue = "q"\n\n[[targets]]\nname = "cloud2"\nkind = "aws_batch"\n'
        'job_queue = "q"\nwork_url = "/scratch/work"\n\n[[targets]]\nname = "fine"\n'
        'kind = "aws_batch"\njob_queue = "q"\nwork_url = "s3://bucket/work"\n'
    )
    problems = {(p.line, p.key): p.text for p in check_file(path)}
    assert set(problems) == {(1, "work_url"), (12, "targets[1].work_url")}
    assert "s3://" in problems[(12, "targets[1].work_url")]


def test_a_missing_key_file(tmp_path: Path) -> None:
    path = tmp_path / "bridge.toml"
    known = tmp_path / "known_hosts"
    known.write_text("")
    path.write_text(
        '[[targets]]\nname = "hpc"\nkind = "slurm"\nrunner = "ssh"\nhost = "login"\n'
        f'key_file = "{tmp_path}/id_missing"\nknown_hosts = "{known}"\n'
    )
    (problem,) = check_file(path)
    assert (problem.line, problem.key) == (6, "targets[0].key_file")
    assert "id_missing does not exist" in problem.text


def test_not_toml_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "bridge.toml"
    path.write_text('port = 1\nname = "unterminated\n')
    (problem,) = check_file(path)
    assert problem.line == 2 and "not TOML" in problem.text


@pytest.mark.slurm
def test_an_unknown_partition_once_the_target_answers(tmp_path: Path) -> None:
    env = service_env("slurm")
    if not env:
        pytest.skip("the Slurm test cluster is not set up: run scripts/services/slurm.sh")
    path = tmp_path / "bridge.toml"
    path.write_text(
        '[[targets]]\nname = "hpc"\nkind = "slurm"\npartition = "gpu-huge"\n'
        f'env = {{ SLURM_CONF = "{env["SLURM_CONF"]}" }}\n'
    )
    offline = run("config", "check", str(path), "--offline", tmp_path=tmp_path)
    assert offline.returncode == 0, offline.stderr
    result = run("config", "check", str(path), tmp_path=tmp_path)
    assert result.returncode == 1
    assert f"{path}:4: targets[0].partition: unknown partition 'gpu-huge'" in result.stderr
    assert "debug" in result.stderr
    path.write_text(path.read_text().replace("gpu-huge", "debug"))
    assert run("config", "check", str(path), tmp_path=tmp_path).returncode == 0


def test_serve_refuses_an_invalid_file_with_the_same_message(tmp_path: Path) -> None:
    path = tmp_path / "bridge.toml"
    path.write_text('[[targets]]\nname = "a"\nkind = "local"\ncolour = "blue"\n')
    check = run("config", "check", str(path), tmp_path=tmp_path)
    served = run("serve", "--config", str(path), "--port", "1", tmp_path=tmp_path)
    assert served.returncode == 2
    message = f"{path}:4: targets[0].colour: unknown key"
    assert message in check.stderr and message in served.stderr
    assert "Traceback" not in served.stderr


def test_a_valid_file_is_ok(tmp_path: Path) -> None:
    path = tmp_path / "bridge.toml"
    path.write_text('work_url = "/srv/work"\n[[targets]]\nname = "a"\nkind = "local"\n')
    result = run("config", "check", str(path), tmp_path=tmp_path)
    assert result.returncode == 0 and result.stdout.strip() == f"{path}: ok"
    doc = json.loads(run("config", "check", str(path), "--json", tmp_path=tmp_path).stdout)
    assert doc == {"file": str(path), "ok": True, "problems": []}


def test_line_index_reads_tables_and_dotted_keys() -> None:
    index = LineIndex(
        'a = 1\n[broker]\nlease_s = 3\n[[users]]\nname = "x"\n[[users]]\nname = "y"\n'
    )
    assert index.line_of(("a",)) == 1
    assert index.line_of(("broker", "lease_s")) == 3
    assert index.line_of(("users", 1, "name")) == 7
    assert index.line_of(("users", 1, "admin")) == 6  # not set: the table's header
