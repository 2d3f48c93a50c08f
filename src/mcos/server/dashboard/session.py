"""Dashboard sessions: an operator token exchanged for a signed, HttpOnly cookie, and CSRF
tokens bound to it. Agents' tokens never open the dashboard."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from dataclasses import dataclass

COOKIE = "mcos_session"
LIFETIME = 12 * 3600


@dataclass(frozen=True)
class Session:
    """An operator signed in: who, with which token, until when."""

    name: str
    token_id: int
    expires: int
    cookie: str


def _sign(key: bytes, payload: bytes) -> str:
    return hmac.new(key, b"session|" + payload, hashlib.sha256).hexdigest()


def issue(key: bytes, name: str, token_id: int, now: float | None = None) -> str:
    """The cookie value for a new session."""
    expires = int((now or time.time()) + LIFETIME)
    payload = json.dumps({"n": name, "t": token_id, "e": expires}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(payload).decode().rstrip("=") + "." + _sign(key, payload)


def read(key: bytes, cookie: str | None, now: float | None = None) -> Session | None:
    """The session a cookie carries, or None if it is missing, forged or expired."""
    if not cookie or "." not in cookie:
        return None
    encoded, signature = cookie.rsplit(".", 1)
    try:
        payload = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4))
        data = json.loads(payload)
    except (ValueError, json.JSONDecodeError):
        return None
    if not hmac.compare_digest(_sign(key, payload), signature):
        return None
    if int(data.get("e", 0)) < (now or time.time()):
        return None
    return Session(str(data["n"]), int(data["t"]), int(data["e"]), cookie)


def csrf_token(key: bytes, session: Session) -> str:
    """The token every state-changing form of this session must carry."""
    return hmac.new(key, b"csrf|" + session.cookie.encode(), hashlib.sha256).hexdigest()[:40]


def csrf_ok(key: bytes, session: Session, presented: str | None) -> bool:
    """Whether a form carried this session's CSRF token."""
    return bool(presented) and hmac.compare_digest(csrf_token(key, session), presented or "")
