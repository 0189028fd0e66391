"""Microarchitecture helpers over archspec's real target database."""

from __future__ import annotations

import pytest

from spack_envs.targets import (
    UnknownTarget,
    UnsupportedTarget,
    best_common_target,
    compatible_targets,
    compiler_flags,
    host_microarchitecture,
    runs_on,
)


@pytest.mark.parametrize(
    ("binary", "host", "expected"),
    [
        ("x86_64_v3", "zen3", True),
        ("haswell", "skylake", True),
        ("x86_64", "x86_64_v4", True),
        ("zen3", "zen3", True),
        ("zen3", "haswell", False),
        ("x86_64_v4", "zen3", False),  # zen3 has no AVX-512
        ("skylake_avx512", "zen4", False),  # different vendors' lines
        ("aarch64", "x86_64", False),
        ("neoverse_n1", "neoverse_v1", True),
    ],
)
def test_runs_on(binary: str, host: str, expected: bool) -> None:
    assert runs_on(binary, host) is expected


def test_host_is_a_known_target_that_runs_its_own_family() -> None:
    host = host_microarchitecture()
    assert host in compatible_targets(host)
    family = compatible_targets(host)[-1]
    assert family in {"x86_64", "aarch64", "ppc64le", "riscv64"}
    assert runs_on(family, host)


def test_compatible_targets_most_specific_first() -> None:
    chain = compatible_targets("x86_64_v3")
    assert chain == ["x86_64_v3", "x86_64_v2", "x86_64"]


def test_best_common_target() -> None:
    assert best_common_target(["zen3", "skylake"]) == "x86_64_v3"
    assert best_common_target(["zen3", "zen4"]) == "zen3"
    assert best_common_target(["icelake"]) == "icelake"
    assert best_common_target(["neoverse_v1", "neoverse_n1"]) == "neoverse_n1"
    for host in ("zen3", "skylake", "cascadelake"):
        assert runs_on(best_common_target(["zen3", "skylake", "cascadelake"]), host)


def test_best_common_target_across_families_is_an_error() -> None:
    with pytest.raises(UnsupportedTarget, match="aarch64"):
        best_common_target(["zen3", "neoverse_n1"])
    with pytest.raises(ValueError):
        best_common_target([])


def test_compiler_flags() -> None:
    assert compiler_flags("x86_64_v4", "gcc", "12.2.0") == "-march=x86-64-v4 -mtune=generic"
    assert compiler_flags("zen3", "gcc", "12.2.0") == "-march=znver3 -mtune=znver3"
    with pytest.raises(UnsupportedTarget, match=r"gcc@4\.8\.5"):
        compiler_flags("zen3", "gcc", "4.8.5")


def test_unknown_names() -> None:
    with pytest.raises(UnknownTarget, match="pentium9000"):
        runs_on("pentium9000", "zen3")
    with pytest.raises(ValueError):
        compiler_flags("nope", "gcc", "12")
