"""Requests, keys, recipes and the compatibility check: pure functions, no services."""

from __future__ import annotations

import pytest
import yaml

from spack_envs import targets
from spack_envs.containers import (
    KEY_LABEL,
    TARGET_LABEL,
    compatibility_problem,
    image_tag,
    render_apptainer_def,
    render_containerfile,
    target_flags,
)
from spack_envs.requests import BadEnvRequest, EnvRequest, request_from_parameters
from spack_envs.spack import render_spack_yaml

pytestmark = pytest.mark.envs


def test_the_key_ignores_order_and_duplicates_but_not_content() -> None:
    a = EnvRequest(target="zen2", pip=("numpy", "six"), apt=("jq",))
    b = EnvRequest(target="zen2", pip=("six", "numpy", "six"), apt=("jq",))
    assert a.key == b.key
    others = [
        EnvRequest(target="zen3", pip=("numpy", "six"), apt=("jq",)),
        EnvRequest(target="zen2", pip=("numpy",), apt=("jq",)),
        EnvRequest(target="zen2", pip=("numpy", "six"), apt=("jq",), base_image="other"),
        EnvRequest(target="zen2", format="spack", specs=("zlib",), spack_version="1.1.0"),
        EnvRequest(target="zen2", format="spack", specs=("zlib",), spack_version="1.0.0"),
    ]
    assert len({a.key, *(o.key for o in others)}) == 1 + len(others)


def test_parameters_become_a_request_and_arch_overrides_the_placement() -> None:
    params = {"bridge.pip": "six, numpy", "bridge.apt": ["jq"], "bridge.arch": "x86_64_v3"}
    req = request_from_parameters(params, placement_target="zen2", base_image="base")
    assert req is not None
    assert (req.target, req.format, req.pip, req.apt) == (
        "x86_64_v3",
        "container",
        ("six", "numpy"),
        ("jq",),
    )
    spack = request_from_parameters({"bridge.spack": "bzip2"}, placement_target="zen2")
    assert spack is not None and (spack.format, spack.specs, spack.target) == (
        "spack",
        ("bzip2",),
        "zen2",
    )
    assert request_from_parameters({"bridge.target": "hpc"}, placement_target="zen2") is None


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"bridge.pip": "six; rm -rf /"}, "bridge.pip"),
        ({"bridge.apt": 42}, "bridge.apt"),
        ({"bridge.spack": "zlib", "bridge.env_format": "tarball"}, "bridge.env_format"),
        ({"bridge.pip": "six", "bridge.env_format": "spack"}, "bridge.env_format"),
        ({"bridge.spack": "zlib $(id)"}, "bridge.spack"),
    ],
)
def test_bad_parameters_name_the_field(params: dict[str, object], field: str) -> None:
    with pytest.raises(BadEnvRequest) as err:
        request_from_parameters(params, placement_target="zen2")
    assert err.value.field == field


def test_spack_yaml_pins_every_package_to_the_target() -> None:
    req = EnvRequest(target="zen3", format="spack", specs=("zlib", "bzip2"))
    doc = yaml.safe_load(render_spack_yaml(req, "/v"))["spack"]
    assert doc["specs"] == ["bzip2", "zlib"]
    assert doc["packages"]["all"]["require"] == ["target=zen3"]
    assert doc["view"] == "/v"
    assert doc["concretizer"]["unify"] is True
    assert doc["concretizer"]["targets"]["host_compatible"] is False


def test_the_containerfile_carries_the_targets_flags_and_label() -> None:
    req = EnvRequest(target="x86_64_v3", pip=("six",), apt=("jq",))
    flags = target_flags("x86_64_v3")
    assert "-march=x86-64-v3" in flags
    text = render_containerfile(req, "bridge-base:bookworm")
    assert text.startswith("FROM bridge-base:bookworm\n")
    assert f'{TARGET_LABEL}="x86_64_v3"' in text and f'{KEY_LABEL}="{req.key}"' in text
    assert f'CFLAGS="{flags}"' in text
    assert "jq python3 python3-pip" in text and "pip install" in text
    assert req.key in image_tag(req) and image_tag(req).startswith("x86-64-v3-")
    definition = render_apptainer_def(req, "bridge-base:bookworm")
    assert "From: bridge-base:bookworm" in definition and flags in definition
    arm = EnvRequest(target="neoverse_v1", apt=("jq",))
    assert "-mcpu=neoverse-v1" in target_flags("neoverse_v1")
    assert "-mcpu=neoverse-v1" in render_containerfile(arm, "b")


def test_impossible_targets_are_refused_with_the_reason() -> None:
    arm = compatibility_problem("neoverse_v1", ["zen2"])
    assert arm is not None and "aarch64" in arm and "x86_64" in arm
    v4 = compatibility_problem("x86_64_v4", ["zen2"])
    assert v4 is not None and "zen2" in v4 and "avx512" in v4
    assert compatibility_problem("x86_64_v3", ["zen2"]) is None
    assert compatibility_problem("x86_64_v2", [targets.host_microarchitecture()]) is None
    unknown = compatibility_problem("pentium9000", ["zen2"])
    assert unknown is not None and "pentium9000" in unknown
