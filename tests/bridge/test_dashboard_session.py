"""Session cookies: signed, expiring, shared by processes on one data directory."""

from __future__ import annotations

import time
from pathlib import Path

from bridge.dashboard.session import SESSION_S, SessionKeys, csrf_ok


def test_a_cookie_is_valid_only_as_issued_and_until_it_expires(tmp_path: Path) -> None:
    keys = SessionKeys(tmp_path)
    digest = "ab" * 32
    cookie = keys.issue(digest)
    assert keys.digest_of(cookie) == digest
    assert SessionKeys(tmp_path).digest_of(cookie) == digest  # same secret for the next process
    assert keys.digest_of(cookie[:-4] + "AAAA") is None
    assert keys.digest_of("not-base64!") is None
    assert keys.digest_of(None) is None
    assert keys.digest_of(cookie, now=time.time() + SESSION_S + 10) is None
    assert SessionKeys(tmp_path / "other").digest_of(cookie) is None  # another secret
    assert (tmp_path / "dashboard-secret").stat().st_mode & 0o777 == 0o600


def test_csrf_pairs() -> None:
    assert csrf_ok("abc", "abc")
    assert not csrf_ok("abc", "abd")
    assert not csrf_ok(None, "abc")
    assert not csrf_ok("", "")
