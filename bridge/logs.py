"""One logging set-up for the ``bridge`` CLI, the server and the node agent.

Quiet by default: INFO from the project, WARNING from the libraries that narrate
every request or migration step (``-v`` shows everything).
"""

from __future__ import annotations

import logging

NOISY = (
    "alembic",
    "botocore",
    "boto3",
    "s3transfer",
    "urllib3",
    "httpx",
    "httpcore",
    "paramiko",
    "uvicorn.access",
    "distributed",
)


def setup_logging(verbose: bool = False, program: str = "bridge") -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format=f"%(asctime)s {program} %(levelname)s %(name)s: %(message)s",
        force=True,
    )
    if not verbose:
        for name in NOISY:
            logging.getLogger(name).setLevel(logging.WARNING)
