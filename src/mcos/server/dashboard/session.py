"""Dashboard sessions: an operator token exchanged for a server-side session.

The cookie carries only a random session id, signed with itsdangerous; the store keeps the id's
SHA-256, the operator token the session was opened with, when it expires and when it ended. Every
dashboard request looks the session up: signing out, the session's expiry, and the expiry or
revocation of its token each end it at once. CSRF tokens are bound to the session id. Agents'
tokens never open the dashboard.
"""

from __future__ import annotations

import hashlib
import secrets

from itsdangerous import BadSignature, Signer, URLSafeTimedSerializer
from itsdangerous.encoding import base64_decode, base64_encode

COOKIE = "mcos_session"
LIFETIME = 12 * 3600


def new_id() -> str:
    """A fresh session id: 256 random bits."""
    return secrets.token_urlsafe(32)


def id_hash(session_id: str) -> str:
    """What the store keeps of a session id (a stolen database opens no session)."""
    return hashlib.sha256(session_id.encode()).hexdigest()


def _cookies(key: bytes) -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(key, salt="mcos.dashboard.session")


def cookie(key: bytes, session_id: str) -> str:
    """The cookie value carrying ``session_id``."""
    return _cookies(key).dumps(session_id)


def session_id(key: bytes, value: str | None) -> str | None:
    """The session id a cookie carries, or None if it is missing, forged or too old."""
    if not value:
        return None
    try:
        found = _cookies(key).loads(value, max_age=LIFETIME)
    except BadSignature:  # also SignatureExpired
        return None
    return found if isinstance(found, str) else None


def _csrf_signer(key: bytes) -> Signer:
    return Signer(key, salt="mcos.dashboard.csrf")


def csrf_token(key: bytes, session_id: str) -> str:
    """The token every state-changing form of this session must carry (hex)."""
    return base64_decode(_csrf_signer(key).get_signature(session_id)).hex()


def csrf_ok(key: bytes, session_id: str, presented: str | None) -> bool:
    """Whether a form carried this session's CSRF token (compared in constant time)."""
    if not presented:
        return False
    try:
        signature = base64_encode(bytes.fromhex(presented))
    except ValueError:
        return False
    return _csrf_signer(key).verify_signature(session_id.encode(), signature)
