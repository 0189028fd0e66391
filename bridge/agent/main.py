"""``bridge-agent``: the command a backend runs on a compute node.

::

    bridge-agent run <work-url> [--attempt N] [--keep-scratch]
    bridge-agent check

``check`` prints one JSON object saying which container runtimes (docker, podman,
charliecloud, sandbox, none) and whether FUSE work on this node, and the agent version
(see :mod:`bridge.agent.check`); it always exits 0.

``<work-url>`` is the task's work directory (a local path, ``file://`` URL or
``s3://bucket/prefix/``; see ``docs/workdir.md``).  The agent's own log goes to stderr,
which the backend keeps as ``attempts/<N>/agent.log``; with a remote (S3) work
directory, where a batch system cannot put that file, the agent also uploads its log
there itself when it ends (the last :data:`REMOTE_LOG_LINES` lines).  Exit status: 0 ``COMPLETE``,
1 ``EXECUTOR_ERROR``, 2 ``SYSTEM_ERROR`` (also: the work directory is unreadable, or
the final ``status.json`` could not be written),
143 ``CANCELED`` — the authoritative result is always ``status.json``.
"""

from __future__ import annotations

import argparse
import collections
import json
import logging
import sys
from collections.abc import Sequence

from bridge import __version__
from bridge.agent.attempt import EXIT_CODES, run_attempt
from bridge.agent.cancel import CancelToken
from bridge.agent.check import node_report
from bridge.agent.errors import WorkDirError
from bridge.agent.workdir import WorkDir, agent_log_name, open_workdir
from bridge.logs import setup_logging

log = logging.getLogger("bridge.agent")
LOG_FORMAT = "%(asctime)s bridge-agent %(levelname)s %(message)s"
REMOTE_LOG_LINES = 10_000


class _RingHandler(logging.Handler):
    """Keeps the last formatted log lines in memory."""

    def __init__(self, capacity: int) -> None:
        super().__init__()
        self.lines: collections.deque[str] = collections.deque(maxlen=capacity)
        self.setFormatter(logging.Formatter(LOG_FORMAT))

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


def _upload_log(wd: WorkDir, attempt: int, ring: _RingHandler) -> None:
    try:
        wd.write_bytes(agent_log_name(attempt), ("\n".join(ring.lines) + "\n").encode())
    except OSError as err:
        log.warning("could not upload the agent log: %s", err)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bridge-agent", description=__doc__.splitlines()[0])
    # `bridge doctor` compares this with the broker's version
    parser.add_argument("--version", action="version", version=f"bridge-agent {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the task in a work directory")
    run.add_argument("work_url", help="work directory: path, file:// URL or s3://bucket/prefix/")
    run.add_argument(
        "--attempt", type=int, default=None, help="attempt number (default: task.json)"
    )
    run.add_argument(
        "--keep-scratch", action="store_true", help="keep the attempt's scratch directory"
    )
    run.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub.add_parser("check", help="print which runtimes and whether FUSE work here (JSON)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "check":
        print(json.dumps(node_report(), indent=2, sort_keys=True))
        return 0
    setup_logging(args.verbose, program="bridge-agent")
    token = CancelToken()
    token.install()
    try:
        wd = open_workdir(args.work_url)
    except (WorkDirError, ValueError) as err:
        log.error("%s", err)
        return EXIT_CODES["SYSTEM_ERROR"]
    ring: _RingHandler | None = None
    if wd.local_path(agent_log_name(1)) is None:
        ring = _RingHandler(REMOTE_LOG_LINES)
        logging.getLogger().addHandler(ring)
    result = run_attempt(wd, attempt=args.attempt, token=token, keep_scratch=args.keep_scratch)
    log.info("attempt %d finished: %s", result.attempt, result.state)
    if ring is not None:
        _upload_log(wd, result.attempt, ring)
    return result.exit_code


if __name__ == "__main__":
    sys.exit(main())
