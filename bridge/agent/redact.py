"""Keep credentials out of logs and ``status.json``.

Three rules, applied wherever the agent writes a message:

* An environment variable whose *name* contains ``SECRET``, ``TOKEN``, ``PASSWORD``,
  ``KEY`` or ``CREDENTIAL`` (any case) is secret.  Its value is never written; the agent
  also never puts environment *values* on a command line (containers get ``-e NAME``
  and read the value from the runtime client's environment), so they do not show in
  ``ps`` either.
* URLs lose their user-info (``https://user:pw@host`` → ``https://***@host``) and the
  values of query parameters that look like signatures or tokens (pre-signed S3 URLs).
* Text that may quote such values (an exception message) is scrubbed of every secret
  value present in the environment given.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

_SECRET_NAME = re.compile(r"SECRET|TOKEN|PASSWORD|PASSWD|KEY|CREDENTIAL|SIGNATURE|AUTH", re.I)
MASK = "***"


def is_secret_name(name: str) -> bool:
    """True when a variable or parameter called ``name`` must not be shown."""
    return bool(_SECRET_NAME.search(name))


def redact_url(url: str) -> str:
    """``url`` without user-info and without secret-looking query values."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return url
    netloc = parts.netloc
    if "@" in netloc:
        netloc = MASK + "@" + netloc.rsplit("@", 1)[1]
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        query = urlencode([(k, MASK if is_secret_name(k) else v) for k, v in pairs], safe="*")
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def secret_values(env: Mapping[str, str]) -> list[str]:
    """The values of the secret-named variables in ``env`` (long enough to matter)."""
    return [v for k, v in env.items() if is_secret_name(k) and len(v) >= 4]


def scrub(text: str, secrets: Iterable[str]) -> str:
    """``text`` with every occurrence of each secret replaced by ``***``."""
    for value in sorted(set(secrets), key=len, reverse=True):
        text = text.replace(value, MASK)
    return text
