"""The batch script the Slurm backend submits, rendered from ``slurm_job.sh.tmpl``.

Resources become ``#SBATCH`` directives (so ``scontrol write batch_script`` shows
exactly what was asked); the commands become a ``case`` on ``SLURM_ARRAY_TASK_ID``,
one branch per array element (a plain job is element 0), each with its own
directory, environment, argv and, for arrays, output files.  Every value in the
shell part is quoted with :mod:`shlex`; directive values may not contain a newline
or a double quote (sbatch's directive parser has no escapes), and such a job is
refused before anything is submitted.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Sequence
from importlib.resources import files

from schedulers.base import JobSpec, Resources
from schedulers.errors import SubmitError

TEMPLATE = files("schedulers").joinpath("slurm_job.sh.tmpl").read_text()
_SAFE_NAME = re.compile(r"[^A-Za-z0-9_.-]+")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
JOB_NAME_ENV = "BRIDGE_JOB_NAME"  # each element's own job name, read back by adopt


def format_time(seconds: int) -> str:
    """Seconds as Slurm's ``days-hours:minutes:seconds``."""
    minutes, secs = divmod(max(1, int(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    days, hours = divmod(hours, 24)
    return f"{days}-{hours:02d}:{minutes:02d}:{secs:02d}"


def _directive(option: str, value: object) -> str:
    text = str(value)
    if "\n" in text or '"' in text:
        raise SubmitError(f"{option} value {text!r} cannot go into a batch script")
    return f'#SBATCH --{option}="{text}"' if " " in text else f"#SBATCH --{option}={text}"


def render_script(specs: Sequence[JobSpec], resources: Resources, *, array: bool) -> str:
    """The batch script for one job (``array=False``, one spec) or one array."""
    first = specs[0]
    res = resources
    opts: list[tuple[str, object]] = [("job-name", _SAFE_NAME.sub("-", first.name)[:64] or "job")]
    opts += [("ntasks", 1), ("cpus-per-task", max(1, res.cpus)), ("chdir", first.workdir)]
    optional = {
        "mem": f"{res.memory_mb}M" if res.memory_mb else None,
        "time": format_time(res.wall_time_s) if res.wall_time_s else None,
        "partition": res.partition,
        "account": res.account,
        "qos": res.qos,
        "gres": f"gpu:{res.gpus}" if res.gpus else None,
        "constraint": res.constraint,
    }
    opts += [(k, v) for k, v in optional.items() if v]
    if array:
        opts.append(("array", f"0-{len(specs) - 1}"))
        if all(s.stdout_path for s in specs):
            opts.append(("output", "/dev/null"))
        if all(s.stderr_path or s.stdout_path for s in specs):
            opts.append(("error", "/dev/null"))
    else:
        opts += [
            (k, v) for k, v in (("output", first.stdout_path), ("error", first.stderr_path)) if v
        ]
    cases = [_case(i, spec, redirect=array) for i, spec in enumerate(specs)]
    directives = "\n".join(_directive(k, v) for k, v in opts)
    return TEMPLATE.replace("@DIRECTIVES@", directives).replace("@COMMANDS@", "\n".join(cases))


def _case(index: int, spec: JobSpec, *, redirect: bool) -> str:
    if not spec.argv:
        raise SubmitError(f"job {spec.name!r} has an empty argv")
    lines = [f"cd {shlex.quote(spec.workdir)} || exit 98"]
    out, err = spec.stdout_path, spec.stderr_path
    streams = [f">{shlex.quote(out)}"] if out else []
    if err and err != out:
        streams.append(f"2>{shlex.quote(err)}")
    elif out:  # like sbatch: without its own file, stderr goes with stdout
        streams.append("2>&1")
    if redirect and streams:
        lines.append(f"exec {' '.join(streams)} || exit 98")
    lines.append(f"export {JOB_NAME_ENV}={shlex.quote(spec.name)}")
    for key, value in spec.env.items():
        if not _ENV_NAME.match(key):
            raise SubmitError(f"invalid environment variable name {key!r} in job {spec.name!r}")
        lines.append(f"export {key}={shlex.quote(value)}")
    lines.append(f"exec {shlex.join(spec.argv)}")
    body = "".join(f"        {line}\n" for line in lines)
    return f"    {index})\n{body}        ;;"


# Submits every job script read from stdin (scripts separated by the line given as $1)
# with one sbatch each, and answers one line per script: "ok <job id>" or "err <message>".
# A fixed program of ours: job scripts travel on stdin, never in the command line.
SUBMIT_MANY = r"""sep="$1"; buf=""
while IFS= read -r line || [ -n "$line" ]; do
  if [ "$line" = "$sep" ]; then
    if out=$(printf '%s' "$buf" | sbatch --parsable 2>&1); then
      printf 'ok %s\n' "$(printf '%s\n' "$out" | tail -n 1)"
    else
      printf 'err %s\n' "$(printf '%s' "$out" | tr '\n' ' ')"
    fi
    buf=""
  else
    buf="$buf$line
"
  fi
done
"""


def submit_many_input(scripts: Sequence[str], separator: str) -> str:
    """The stdin of :data:`SUBMIT_MANY`: each script followed by the separator line."""
    return "".join(f"{script.rstrip(chr(10))}\n{separator}\n" for script in scripts)
