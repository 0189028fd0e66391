"""Running an executor inside the software environment the broker built for its task.

The broker puts the build's artifact in ``task.json`` as ``runtime.environment``:

- ``{"format": "container", "image": "<registry>/<repo>@sha256:…", ...}``: every
  executor runs in that image (built for the target's CPU) instead of its own;
- ``{"format": "spack", "view": "/path/to/view", ...}``: the Spack environment's view
  is activated for every executor -- ``PATH``, ``LD_LIBRARY_PATH``, ``CPATH``,
  ``LIBRARY_PATH``, ``PKG_CONFIG_PATH``, ``MANPATH`` and ``CMAKE_PREFIX_PATH`` gain the
  view's directories, which is what ``spack env activate`` does for a view.  Outside a
  container they are prepended to the agent's own values; inside one, to the
  container's defaults (the view must then exist at that path in the image).

Pure functions; the attempt applies them while planning its launches.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from bridge.agent.errors import TaskFileError
from bridge.agent.task import Executor

CONTAINER_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

# variable -> subdirectories of the view, most important first
VIEW_DIRS: dict[str, tuple[str, ...]] = {
    "PATH": ("bin",),
    "LD_LIBRARY_PATH": ("lib", "lib64"),
    "LIBRARY_PATH": ("lib", "lib64"),
    "CPATH": ("include",),
    "PKG_CONFIG_PATH": ("lib/pkgconfig", "lib64/pkgconfig", "share/pkgconfig"),
    "MANPATH": ("share/man",),
    "CMAKE_PREFIX_PATH": ("",),
}


def environment_of(extra: Mapping[str, Any]) -> dict[str, Any] | None:
    """``runtime.environment`` from ``task.json``, checked; None when there is none."""
    env = extra.get("environment")
    if env in (None, {}):
        return None
    if not isinstance(env, dict) or env.get("format") not in ("container", "spack"):
        raise TaskFileError("runtime.environment must be an object with format container|spack")
    if env["format"] == "container" and not env.get("image"):
        raise TaskFileError("runtime.environment.image is missing")
    if env["format"] == "spack" and not env.get("view"):
        raise TaskFileError("runtime.environment.view is missing")
    return dict(env)


def with_image(ex: Executor, environment: Mapping[str, Any] | None) -> Executor:
    """The executor with the built image, for the container format."""
    if environment is None or environment["format"] != "container":
        return ex
    return dataclasses.replace(ex, image=str(environment["image"]))


def view_variables(view: str, base: Mapping[str, str], in_container: bool) -> dict[str, str]:
    """The variables that activate ``view``, prepended to ``base`` (or the container's)."""
    view = view.rstrip("/")
    out: dict[str, str] = {"SPACK_ENV_VIEW": view}
    for name, subdirs in VIEW_DIRS.items():
        dirs = [f"{view}/{sub}".rstrip("/") for sub in subdirs]
        defaults = {"PATH": CONTAINER_PATH} if in_container else base
        current = defaults.get(name, "")
        out[name] = ":".join([*dirs, current] if current else dirs)
    return out


def with_view(
    ex: Executor,
    environment: Mapping[str, Any] | None,
    base: Mapping[str, str],
    in_container: bool,
) -> Executor:
    """The executor with the Spack view activated (its own env values still win)."""
    if environment is None or environment["format"] != "spack":
        return ex
    activated = view_variables(str(environment["view"]), base, in_container)
    return dataclasses.replace(ex, env={**activated, **ex.env})
