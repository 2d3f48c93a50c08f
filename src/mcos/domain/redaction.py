"""A second line of defence for secrets: whatever looks like one is cut before it is written.

The first line is never to put a secret in a message, a log line or a prompt. This catches
what slips through — an SDK error echoing a key, a tool result quoting an environment — by the
shapes of known tokens and by the exact values this process resolved from its key references.
"""

from __future__ import annotations

import logging
import re
import threading
from typing import Any

REDACTED = "[redacted]"
SHAPES = (
    r"mcos_[a-z0-9]{12}_[A-Za-z0-9_-]{43}",  # mcos bearer tokens
    r"sk-ant-[A-Za-z0-9_-]{16,}",  # Anthropic keys
    r"\bsk-(?:proj-|svcacct-)?[A-Za-z0-9_-]{20,}",  # OpenAI-style keys
    r"\b\d{6,12}:[A-Za-z0-9_-]{30,}\b",  # Telegram bot tokens
    r"\b[MN][A-Za-z\d]{23,25}\.[\w-]{6}\.[\w-]{27,38}\b",  # Discord bot tokens
    r"\bAKIA[0-9A-Z]{16}\b",  # AWS access key ids
    r"(?<=(?i:bearer) )[A-Za-z0-9._~+/=-]{16,}",  # any bearer credential
)
SHAPE = re.compile("|".join(f"(?:{s})" for s in SHAPES))
"""Every known secret shape as one compiled pattern: one pass over the text."""
SHORTEST = 16
"""Every shape is a run of at least this many non-space characters, so only the words of a
text that are this long can hold one: ``str.split`` (C speed) finds them, the pattern runs
over them alone, and ordinary prose never reaches it."""
KNOWN_SHORTEST = 8
"""Remembered values shorter than this are not remembered (they would cut ordinary words): a
text shorter than this holds no secret of either kind, and is returned as it is."""
MAX_DEPTH = 64
"""How deep :func:`scrub` follows nested values; anything deeper is replaced, not walked."""
TOO_DEEP = "[too deeply nested]"
_known: tuple[str, ...] = ()
"""The remembered values, longest first; replaced whole (never changed in place) under
``_lock``, so :func:`redact` reads it without the lock and sorts nothing per call."""
_lock = threading.Lock()


def remember(secret: str) -> None:
    """Redact this exact value from now on (a key this process resolved)."""
    global _known  # noqa: PLW0603 (one process-wide set, replaced whole)
    value = secret.strip()
    if len(value) >= KNOWN_SHORTEST:
        with _lock:
            if value not in _known:
                _known = tuple(sorted({*_known, value}, key=len, reverse=True))


def redact(text: str) -> str:
    """``text`` with every known secret and secret-shaped string replaced.

    Called for every string of every log line and message (a log line has about twenty): the
    short strings most of them are cost one length check.
    """
    if len(text) < KNOWN_SHORTEST:
        return text
    for value in _known:
        if value in text:
            text = text.replace(value, REDACTED)
    long = {word for word in text.split() if len(word) >= SHORTEST}
    if not long:
        return text
    if "bearer" in text.casefold():  # the one shape that looks at the word before it
        return SHAPE.sub(REDACTED, text)
    # Each long word on its own: the pattern runs over a few words, not the whole text.
    for word in sorted(long, key=len, reverse=True):
        cut = SHAPE.sub(REDACTED, word)
        if cut != word:
            text = text.replace(word, cut)
    return text


def scrub(value: Any, _depth: int = 0) -> Any:
    """A JSON-like value (tool arguments, a payload, message meta) with every string in it —
    dictionary keys too — redacted; numbers, booleans and None pass as they are.

    Values nested deeper than :data:`MAX_DEPTH` are replaced by a marker (never walked: no
    recursion error, no secret let through unread).
    """
    if isinstance(value, str):
        return redact(value)
    if _depth >= MAX_DEPTH and isinstance(value, dict | list | tuple):
        return TOO_DEEP
    if isinstance(value, dict):
        deeper = _depth + 1
        return {_item(k, deeper): _item(v, deeper) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(scrub(v, _depth + 1) for v in value)
    return value


_PLAIN = frozenset({int, float, bool, type(None)})


def _item(value: Any, depth: int) -> Any:
    """:func:`scrub` of a key or value, with the common cases (a short string, a number)
    answered here: a log line's dictionary has about twenty of them."""
    kind = type(value)
    if kind is str:
        return value if len(value) < KNOWN_SHORTEST else redact(value)
    if kind in _PLAIN:
        return value
    return scrub(value, depth)


class RedactingFilter(logging.Filter):
    """A logging filter that redacts each record's formatted message and arguments."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Rewrite the record in place; never drops it."""
        message = record.getMessage()
        cleaned = redact(message)
        if cleaned != message or record.args:
            record.msg, record.args = cleaned, None
        if record.exc_info and record.exc_info[1] is not None:
            record.exc_text = redact(logging.Formatter().formatException(record.exc_info))
            record.exc_info = None
        return True


def install_log_redaction() -> None:
    """Redact every record that reaches the root logger's handlers (call after basicConfig)."""
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, RedactingFilter) for f in handler.filters):
            handler.addFilter(RedactingFilter())
