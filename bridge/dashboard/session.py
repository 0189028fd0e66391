"""Dashboard log-in: a signed session cookie, and CSRF tokens for forms.

The session cookie carries the SHA-256 digest of the token the user logged in with,
an expiry and an HMAC over both (keyed by a secret kept in the data directory).
Each request resolves the digest again, so revoking the token ends its sessions at
once.  Forms use the double-submit pattern: a random ``bridge_csrf`` cookie
(``SameSite=Strict``) whose value each form repeats in a hidden field; a POST whose
field does not match the cookie is refused.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
import time
from pathlib import Path

SESSION_COOKIE = "bridge_session"
CSRF_COOKIE = "bridge_csrf"
SESSION_S = 12 * 3600


class SessionKeys:
    def __init__(self, data_dir: Path) -> None:
        self.secret = _load_secret(data_dir / "dashboard-secret")

    def _mac(self, payload: str) -> str:
        return hmac.new(self.secret, payload.encode(), hashlib.sha256).hexdigest()

    def issue(self, token_digest: str, now: float | None = None) -> str:
        expires = int((now or time.time()) + SESSION_S)
        payload = f"{token_digest}.{expires}"
        raw = f"{payload}.{self._mac(payload)}"
        return base64.urlsafe_b64encode(raw.encode()).decode()

    def digest_of(self, cookie: str | None, now: float | None = None) -> str | None:
        """The token digest a valid, unexpired cookie carries; else None."""
        if not cookie:
            return None
        try:
            raw = base64.urlsafe_b64decode(cookie.encode()).decode()
            digest, expires, mac = raw.split(".")
        except (ValueError, UnicodeDecodeError):
            return None
        if not hmac.compare_digest(mac, self._mac(f"{digest}.{expires}")):
            return None
        if not expires.isdigit() or int(expires) < (now or time.time()):
            return None
        return digest


def new_csrf() -> str:
    return secrets.token_urlsafe(24)


def csrf_ok(cookie: str | None, field: str | None) -> bool:
    return bool(cookie) and bool(field) and hmac.compare_digest(str(cookie), str(field))


def _load_secret(path: Path) -> bytes:
    try:
        return bytes.fromhex(path.read_text().strip())
    except (OSError, ValueError):
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    secret = secrets.token_bytes(32)
    # Written whole to a private temporary name, then linked into place: the link
    # fails if another process got there first, and then its complete file is used.
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(secret.hex())
    try:
        os.link(tmp, path)
    except FileExistsError:
        return bytes.fromhex(path.read_text().strip())
    finally:
        tmp.unlink()
    return secret
