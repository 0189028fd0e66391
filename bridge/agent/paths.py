"""Container paths and where they live on the node.

A TES task names *container* paths (``/data/in.txt``).  The agent keeps one host
directory per attempt, ``<scratch>/root``, that stands for the container's ``/``: the
container path ``P`` lives at ``<scratch>/root/P`` whatever the runtime.  With a
container runtime the directories holding those files are bind-mounted at ``P``
(:meth:`PathMap.binds`); without one (runtime ``none``) the executor runs on the host,
so its arguments must be rewritten to the host paths.

The rewrite rule (runtime ``none``)
-----------------------------------
The *mapped prefixes* are the task's input paths, output paths (for a wildcard output,
the directory part before the first wildcard), volumes, and each executor's
``workdir``, ``stdin``, ``stdout`` and ``stderr``.  In every argv element and every
``env`` value, an occurrence of a mapped prefix is replaced by its host path when

* it starts the string or follows whitespace or one of ``= : , ; ' " ` ( ) { } < > | &``,
  and
* it ends the string or is followed by ``/``, whitespace, ``]`` or one of those same
  characters.

So ``/data/in.txt``, ``--in=/data/in.txt``, ``PATH=/opt/bin:/data/bin`` and the script
``sh -c "wc -l /data/in.txt > /data/out.txt; echo $(cat /data/in.txt)"`` are all
rewritten, while ``/data/in.txt.gz`` (another file), ``/database``,
``s3://b/data/in.txt`` and ``-I/data/include`` (a letter or ``-`` before the path) are
left alone.  Longer prefixes win.  Paths outside the mapped prefixes (``/usr/bin/wc``,
``/tmp/x`` unless declared) are the host's own.  ``workdir``, ``stdin``, ``stdout`` and
``stderr`` are always container paths, so they are mapped whole.  This is a
best-effort translation, not a sandbox: a script that builds paths at run time
(``d=/da; cat ${d}ta/x``) escapes it, which is why the attempt records
``image_used: false`` and says so in its system logs.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from bridge.agent.task import WILDCARD_CHARS, Task

_BEFORE = r"\s=:,;'\"`(){}<>|&"  # may precede a path
_AFTER = _BEFORE + r"\]"  # may follow one (besides "/")


def literal_dir(pattern: str) -> str:
    """The directory part of a wildcard path before its first wildcard component."""
    parts = pattern.split("/")
    keep: list[str] = []
    for part in parts:
        if any(c in WILDCARD_CHARS for c in part):
            break
        keep.append(part)
    return "/".join(keep) or "/"


FUSION_ROOT = "/fusion"
# A Fusion path named in a command or a variable: /fusion/s3/<bucket>[/<key>], ending where
# a shell word would.
FUSION_REF = re.compile(
    r"(?<![\w/])/fusion/s3/[A-Za-z0-9][A-Za-z0-9.\-_]*(?:/[^\s'\"`;|&<>()$,:]*)?"
)


def fusion_refs(task: Task) -> list[str]:
    """Every ``/fusion/s3/...`` path the task's executors name, in order, once each."""
    texts: list[str] = []
    for ex in task.executors:
        texts += list(ex.command) + list((ex.env or {}).values())
        texts += [p for p in (ex.workdir, ex.stdin, ex.stdout, ex.stderr) if p]
    texts += [i.path for i in task.inputs] + [o.path for o in task.outputs] + list(task.volumes)
    found: dict[str, None] = {}
    for text in texts:
        for match in FUSION_REF.finditer(text):
            found.setdefault(match.group(0), None)
    return list(found)


def uses_fusion(task: Task) -> bool:
    """Whether the task names a path under ``/fusion``."""
    return bool(fusion_refs(task))


def task_prefixes(task: Task) -> list[str]:
    """The container paths a task declares (see the module docstring); ``/fusion``
    too when the task names Fusion paths."""
    found: list[str] = [FUSION_ROOT] if uses_fusion(task) else []
    found += [i.path for i in task.inputs]
    found += [literal_dir(o.path) if o.wildcard else o.path for o in task.outputs]
    found += list(task.volumes)
    for ex in task.executors:
        found += [p for p in (ex.workdir, ex.stdin, ex.stdout, ex.stderr) if p]
    return found


@dataclass(frozen=True)
class Bind:
    """One bind mount: host path → container path."""

    host: str
    container: str


class PathMap:
    """Maps container paths under one host root and rewrites strings that name them."""

    def __init__(self, root: Path, prefixes: Iterable[str] = ()) -> None:
        self.root = root
        cleaned = {posixpath.normpath(p) for p in prefixes}
        cleaned.discard("/")
        self.prefixes = tuple(sorted(cleaned, key=len, reverse=True))
        if self.prefixes:
            alternatives = "|".join(re.escape(p) for p in self.prefixes)
            self._pattern: re.Pattern[str] | None = re.compile(
                rf"(?<![^{_BEFORE}])({alternatives})(?=$|[/{_AFTER}])"
            )
        else:
            self._pattern = None

    def host(self, container_path: str) -> Path:
        """The host path standing for ``container_path`` (absolute, normalised)."""
        norm = posixpath.normpath("/" + container_path.lstrip("/"))
        if norm == "/":
            return self.root
        return self.root / norm.lstrip("/")

    def container(self, host_path: str | Path) -> str:
        """The container path of a host path under :attr:`root`."""
        rel = Path(host_path).relative_to(self.root).as_posix()
        return "/" if rel == "." else "/" + rel

    def rewrite(self, value: str) -> str:
        """``value`` with each mapped container path replaced by its host path."""
        if self._pattern is None:
            return value
        return self._pattern.sub(lambda m: str(self.host(m.group(1))), value)

    def binds(self, task: Task) -> list[Bind]:
        """The fewest bind mounts that expose every declared path inside a container.

        Inputs bind as themselves (file or directory); a file output binds its parent
        directory, so the executor can create it; a wildcard output binds its literal
        directory; volumes bind as themselves.  A bind nested under another is dropped
        (the host tree mirrors the container tree, so the outer one already shows it).
        A bind of ``/`` would hide the whole image, so outputs directly under ``/``
        (``/out.txt``, ``/*.txt``) are not bound: inside a container they stay in the
        container and are then reported as not created.
        """
        wanted: set[str] = {i.path for i in task.inputs}
        for out in task.outputs:
            if out.wildcard:
                wanted.add(literal_dir(out.path))
            elif out.directory:
                wanted.add(out.path)
            else:
                wanted.add(posixpath.dirname(out.path))
        wanted.update(task.volumes)
        if uses_fusion(task):
            wanted.add(FUSION_ROOT)
        return self.collapse(wanted)

    def collapse(self, container_paths: Iterable[str]) -> list[Bind]:
        """Binds for ``container_paths`` without ``/`` and without nested duplicates."""
        kept: list[str] = []
        for path in sorted(set(container_paths) - {"/"}):
            if not any(path == k or path.startswith(k + "/") for k in kept):
                kept.append(path)
        return [Bind(str(self.host(p)), p) for p in kept]
