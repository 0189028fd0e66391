"""CPU microarchitecture targets (archspec names), for building and placing software.

A binary built for target ``T`` runs on a host whose microarchitecture is ``T`` or a
descendant of ``T`` in archspec's DAG (``haswell`` code runs on ``skylake``; ``zen3``
code does not run on ``haswell``).  That one relation answers both questions the
broker asks: *can this host run that build?* (:func:`runs_on`) and *which single build
serves all these hosts?* (:func:`best_common_target`, the most specific target every
host descends from).  :func:`compiler_flags` gives the ``-march``/``-mtune`` flags
archspec knows for a compiler version.

Names are archspec's (``x86_64_v3``, ``zen3``, ``neoverse_v1``...).  A name archspec
does not know raises :class:`UnknownTarget`; a compiler too old for a target raises
:class:`UnsupportedTarget` (both are ``ValueError``).
"""

from __future__ import annotations

from collections.abc import Iterable

import archspec.cpu
from archspec.cpu import Microarchitecture, UnsupportedMicroarchitecture


class UnknownTarget(ValueError):
    """archspec has no microarchitecture of that name."""


class UnsupportedTarget(ValueError):
    """The compiler cannot produce code for that target (too old, per archspec)."""


def target(name: str) -> Microarchitecture:
    """The archspec microarchitecture called ``name``."""
    try:
        return archspec.cpu.TARGETS[name]
    except KeyError:
        raise UnknownTarget(f"unknown CPU microarchitecture {name!r}") from None


def host_microarchitecture() -> str:
    """The microarchitecture of the machine this runs on."""
    return str(archspec.cpu.host().name)


def runs_on(binary_target: str, host_target: str) -> bool:
    """Whether code built for ``binary_target`` runs on a ``host_target`` CPU."""
    binary, host = target(binary_target), target(host_target)
    return binary == host or binary in host.ancestors


def compatible_targets(host_target: str) -> list[str]:
    """Every target whose code runs on ``host_target``, most specific first."""
    host = target(host_target)
    return [host.name, *(t.name for t in _by_specificity(host.ancestors))]


def best_common_target(host_targets: Iterable[str]) -> str:
    """The most specific target whose code runs on every one of ``host_targets``."""
    hosts = [target(name) for name in host_targets]
    if not hosts:
        raise ValueError("no host targets given")
    common = set.intersection(*({h, *h.ancestors} for h in hosts))
    if not common:
        families = sorted({str(h.family) for h in hosts})
        raise UnsupportedTarget(f"no target runs on all of {families}")
    return str(_by_specificity(common)[0].name)


def compiler_flags(target_name: str, compiler: str, version: str) -> str:
    """``-march``/``-mtune`` style flags for ``compiler@version``, per archspec.

    An empty string means archspec has no flags for that compiler.
    """
    try:
        return str(target(target_name).optimization_flags(compiler, version))
    except UnsupportedMicroarchitecture as err:
        raise UnsupportedTarget(str(err)) from err


def _by_specificity(targets: Iterable[Microarchitecture]) -> list[Microarchitecture]:
    """Deepest in the DAG first; ties broken by feature count, then name."""
    return sorted(targets, key=lambda t: (-len(t.ancestors), -len(t.features), t.name))
