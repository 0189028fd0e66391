"""The agent's side of built environments: the image replaced, the Spack view activated."""

from __future__ import annotations

import pytest

from bridge.agent.errors import TaskFileError
from bridge.agent.spack_env import (
    CONTAINER_PATH,
    environment_of,
    view_variables,
    with_image,
    with_view,
)
from bridge.agent.task import Executor

pytestmark = pytest.mark.envs

EX = Executor(
    image="debian:bookworm", command=("bzip2", "--help"), env={"LD_LIBRARY_PATH": "/mine"}
)


def test_a_container_build_replaces_the_image_and_nothing_else() -> None:
    env = environment_of({"environment": {"format": "container", "image": "r/e@sha256:1"}})
    ex = with_image(EX, env)
    assert ex.image == "r/e@sha256:1" and ex.command == EX.command and ex.env == EX.env
    assert with_view(ex, env, {"PATH": "/usr/bin"}, in_container=True) == ex


def test_a_view_is_activated_outside_and_inside_a_container() -> None:
    env = environment_of({"environment": {"format": "spack", "view": "/v/"}})
    host = with_view(EX, env, {"PATH": "/usr/bin", "CPATH": "/inc"}, in_container=False)
    assert host.image == EX.image
    assert host.env["PATH"] == "/v/bin:/usr/bin"
    assert host.env["CPATH"] == "/v/include:/inc"
    assert host.env["LD_LIBRARY_PATH"] == "/mine"  # the executor's own value wins
    assert host.env["SPACK_ENV_VIEW"] == "/v"
    inside = view_variables("/v", {"PATH": "/host/only"}, in_container=True)
    assert inside["PATH"] == f"/v/bin:{CONTAINER_PATH}"
    assert inside["LD_LIBRARY_PATH"] == "/v/lib:/v/lib64"


@pytest.mark.parametrize(
    "raw",
    [{"format": "tarball"}, {"format": "container"}, {"format": "spack"}, "x"],
)
def test_a_malformed_environment_is_a_task_file_error(raw: object) -> None:
    with pytest.raises(TaskFileError):
        environment_of({"environment": raw})
    assert environment_of({}) is None
