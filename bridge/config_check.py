"""``bridge config check``: a ``bridge.toml`` validated with the line and key named.

pydantic says *what* is wrong (``targets.1.hostt: extra inputs are not permitted``);
an administrator needs *where*.  :class:`LineIndex` maps a key path to the line that
sets it by reading the file's table headers and assignments (TOML's parser keeps no
positions).  Beyond the schema, the checks here catch what would only fail at the
first task: a path ``work_url`` for a cloud target (its nodes share no file system
with the broker), a key or known_hosts file that does not exist, and -- when the
target answers -- a partition Slurm does not know.  ``bridge serve`` runs the offline
part and refuses to start on an error, with the same messages.
"""

from __future__ import annotations

import asyncio
import re
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import ValidationError

from bridge.config import Settings, TargetConfig

CLOUD_KINDS = ("aws_batch",)
_HEADER = re.compile(r"^\s*(\[\[?)\s*([A-Za-z0-9_.\-\"' ]+?)\s*\]\]?\s*(#.*)?$")
_ASSIGN = re.compile(r"^\s*([A-Za-z0-9_\-\"'.]+)\s*=")


@dataclass(frozen=True)
class Problem:
    file: str
    line: int | None
    key: str
    text: str
    severity: Literal["error", "warning"] = "error"

    @property
    def message(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        return f"{where}: {self.key}: {self.text}" if self.key else f"{where}: {self.text}"

    def as_dict(self) -> dict[str, Any]:
        return {
            "file": self.file,
            "line": self.line,
            "key": self.key,
            "message": self.text,
            "severity": self.severity,
        }


class LineIndex:
    """Line numbers of tables and keys: ``("targets", 1, "host")`` -> 14."""

    def __init__(self, text: str) -> None:
        self.lines: dict[tuple[Any, ...], int] = {}
        counts: dict[str, int] = {}
        table: tuple[Any, ...] = ()
        for number, line in enumerate(text.splitlines(), start=1):
            header = _HEADER.match(line)
            if header and not _ASSIGN.match(line):
                name = header.group(2).replace('"', "").replace("'", "").strip()
                parts: tuple[Any, ...] = tuple(p.strip() for p in name.split("."))
                if header.group(1) == "[[":
                    index = counts.get(name, 0)
                    counts[name] = index + 1
                    parts = (*parts, index)
                table = parts
                self.lines.setdefault(table, number)
                continue
            assign = _ASSIGN.match(line)
            if assign:
                key = assign.group(1).replace('"', "").replace("'", "")
                self.lines.setdefault((*table, *key.split(".")), number)

    def line_of(self, loc: Sequence[Any]) -> int | None:
        """The line of ``loc``, or of its nearest enclosing table."""
        path = tuple(loc)
        while path:
            if path in self.lines:
                return self.lines[path]
            path = path[:-1]
        return None


def dotted(loc: Sequence[Any]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def check_file(path: Path, *, reach: bool = False) -> list[Problem]:
    """Every problem of ``path``; with ``reach``, also ask reachable targets."""
    name = str(path)
    try:
        text = path.read_text()
    except OSError as err:
        return [Problem(name, None, "", f"cannot read: {err.strerror or err}")]
    try:
        values = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        match = re.search(r"line (\d+)", str(err))
        return [Problem(name, int(match.group(1)) if match else None, "", f"not TOML: {err}")]
    index = LineIndex(text)
    try:
        settings = Settings.model_validate(values)
    except ValidationError as err:
        return [_schema_problem(name, index, e) for e in err.errors()]
    problems = offline_problems(name, index, settings)
    if reach and not any(p.severity == "error" for p in problems):
        problems += asyncio.run(_reachable_problems(name, index, settings))
    return problems


def _schema_problem(name: str, index: LineIndex, error: Any) -> Problem:
    loc = [p for p in error["loc"] if not (isinstance(p, str) and p in _UNION_TAGS)]
    if error["type"] == "extra_forbidden":
        text = "unknown key"
    elif error["type"] == "missing":
        text = "required key is missing"
    else:
        text = f"{error['msg']} (got {error.get('input')!r})"
    return Problem(name, index.line_of(loc), dotted(loc), text)


# discriminated unions put the tag in the error location; it is not a key of the file
_UNION_TAGS = {"local", "slurm", "dask", "aws_batch"}


def offline_problems(name: str, index: LineIndex, settings: Settings) -> list[Problem]:
    problems: list[Problem] = []
    names = [t.name for t in settings.targets]
    for i, target in enumerate(settings.targets):
        loc: tuple[Any, ...] = ("targets", i)
        if names.count(target.name) > 1:
            problems.append(
                Problem(
                    name,
                    index.line_of((*loc, "name")),
                    dotted((*loc, "name")),
                    f"target name {target.name!r} is used more than once",
                )
            )
        problems += _cloud_workdir(name, index, settings, target, loc)
        for key in ("key_file", "known_hosts"):
            value = target.setting(key)
            if value and not Path(value).expanduser().is_file():
                problems.append(
                    Problem(
                        name,
                        index.line_of((*loc, key)),
                        dotted((*loc, key)),
                        f"{value} does not exist",
                    )
                )
        if target.setting("runner") == "ssh":
            for key in ("host", "known_hosts"):
                if not target.setting(key):
                    problems.append(
                        Problem(
                            name,
                            index.line_of(loc),
                            dotted((*loc, key)),
                            "required when runner = 'ssh'",
                        )
                    )
    return problems


def _cloud_workdir(
    name: str, index: LineIndex, settings: Settings, target: TargetConfig, loc: tuple[Any, ...]
) -> list[Problem]:
    if target.kind not in CLOUD_KINDS:
        return []
    url = target.work_url or settings.effective_work_url
    if url.startswith("s3://"):
        return []
    key_loc = (*loc, "work_url") if target.work_url else ("work_url",)
    return [
        Problem(
            name,
            index.line_of(key_loc) or index.line_of(loc),
            dotted(key_loc),
            f"target {target.name} ({target.kind}) runs in the cloud and cannot see the path "
            f"{url}: use an s3:// work_url",
        )
    ]


async def _reachable_problems(name: str, index: LineIndex, settings: Settings) -> list[Problem]:
    from bridge.targets import make_runner

    problems: list[Problem] = []
    for i, target in enumerate(settings.targets):
        if target.kind != "slurm" or not target.setting("partition"):
            continue
        loc = ("targets", i, "partition")
        runner = make_runner(target)
        try:
            result = await asyncio.wait_for(
                runner.run(["sinfo", "-h", "-o", "%P"], check=False), 20
            )
        except Exception as err:  # unreachable: say so, do not fail the file for it
            problems.append(
                Problem(
                    name,
                    index.line_of(loc),
                    dotted(loc),
                    f"not checked: target {target.name} does not answer ({err})",
                    "warning",
                )
            )
            continue
        finally:
            await runner.close()
        if result.returncode != 0:
            problems.append(
                Problem(
                    name,
                    index.line_of(loc),
                    dotted(loc),
                    f"not checked: sinfo failed ({result.stderr.strip()[:160]})",
                    "warning",
                )
            )
            continue
        known = [p.rstrip("*") for p in result.stdout.split()]
        if target.setting("partition") not in known:
            problems.append(
                Problem(
                    name,
                    index.line_of(loc),
                    dotted(loc),
                    f"unknown partition {target.setting('partition')!r} (Slurm has: {', '.join(known)})",
                )
            )
    return problems


def refuse_message(path: Path) -> str | None:
    """The offline problems of ``path`` as one message, or ``None`` when it is valid."""
    errors = [p for p in check_file(path) if p.severity == "error"]
    if not errors:
        return None
    return "\n".join(p.message for p in errors)
