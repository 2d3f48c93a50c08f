"""Logs that say what happened: one JSON object per line in the log files, key=value on a TTY.

Every process (an agent, Mission Control, a supervisor) logs through the standard library's
``logging``; structlog renders each record. Code that wants fields writes
``log.info("turn ended", agent=..., cost_usd=...)`` on a logger from :func:`get_logger`; older
``logging.getLogger(...).info("%s", ...)`` calls come out in the same shape. Every line has
``timestamp`` (ISO 8601, UTC), ``level``, ``event`` and ``logger``, ``agent`` when known, then
its fields. Strings are redacted (:mod:`mcos.domain.redaction`) before anything is written.

``mcos logs NAME`` reads these files back: keep one object per line.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from pathlib import Path
from typing import Any, TextIO

import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

from mcos.domain.redaction import scrub

__all__ = ["configure", "file_handler", "formatter", "get_logger"]

KEYS = ("timestamp", "level", "event", "logger", "agent")
"""The keys every line starts with (``agent`` only when known), in this order."""
QUIET = ("httpx", "httpcore", "uvicorn.access")
"""Chatty libraries held to warnings (we write our own access log)."""

structlog.configure(
    processors=[
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.PositionalArgumentsFormatter(),
        # A stdlib record with the fields as ``extra``: any handler can take it; ours (the
        # formatter below) puts the fields back.
        structlog.stdlib.render_to_log_kwargs,
    ],
    logger_factory=structlog.stdlib.LoggerFactory(),
    wrapper_class=structlog.stdlib.BoundLogger,
    cache_logger_on_first_use=True,
)


def get_logger(name: str) -> structlog.stdlib.BoundLogger:
    """A logger taking fields: ``get_logger("mcos.runtime").info("turn ended", cost_usd=0.01)``."""
    logger: structlog.stdlib.BoundLogger = structlog.stdlib.get_logger(name)
    return logger


def _redacted(_: WrappedLogger, __: str, event: EventDict) -> EventDict:
    """Every string (keys too, tracebacks included) with secrets cut."""
    cleaned: EventDict = scrub(dict(event))
    return cleaned


def _agent(agent: str | None) -> Processor:
    """Stamp ``agent`` on lines that do not name one (the process runs one agent)."""

    def add(_: WrappedLogger, __: str, event: MutableMapping[str, Any]) -> EventDict:
        if agent is not None:
            event.setdefault("agent", agent)
        return event

    return add


def _ordered(_: WrappedLogger, __: str, event: EventDict) -> EventDict:
    """The agreed keys first, the fields after: lines read the same from one to the next
    (uvicorn's ``color_message``, the event again with terminal colours, dropped)."""
    event.pop("color_message", None)
    head = {k: event.pop(k) for k in KEYS if k in event}
    return {**head, **event}


def formatter(
    *, agent: str | None = None, json: bool = True
) -> structlog.stdlib.ProcessorFormatter:
    """The formatter for a handler: JSON lines (``json``) or key=value for a person."""
    pre_chain: list[Processor] = [
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.stdlib.ExtraAdder(),
        structlog.processors.TimeStamper(fmt="iso", utc=True, key="timestamp"),
        _agent(agent),
    ]
    renderer: Processor = (
        structlog.processors.JSONRenderer(default=str)
        if json
        else structlog.dev.ConsoleRenderer(colors=False, sort_keys=False)
    )
    return structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=pre_chain,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            _redacted,
            _ordered,
            renderer,
        ],
    )


def configure(
    *, agent: str | None = None, stream: TextIO | None = None, json: bool | None = None
) -> logging.Handler:
    """Route every log record of this process to ``stream`` (stderr: the process's log file):
    JSON lines, or key=value when ``stream`` is a terminal (``json`` overrides). Replaces the
    root logger's handlers; the handler it installed."""
    out = stream if stream is not None else sys.stderr
    as_json = json if json is not None else not out.isatty()
    # No line shows where it was logged from, nor thread or process names: the standard
    # library's documented switches spare each record a walk up the stack and those look-ups
    # (the access log writes a line per request; about a fifth of its cost).
    logging._srcfile = None  # the logging HOWTO, "Optimization"
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
    handler = logging.StreamHandler(out)
    handler.setFormatter(formatter(agent=agent, json=as_json))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    for name in QUIET:
        logging.getLogger(name).setLevel(logging.WARNING)
    return handler


def file_handler(path: Path, *, agent: str | None = None) -> logging.Handler:
    """A handler writing JSON lines to ``path`` (appended, created 0600): a component's own
    log file, for the caller to add to its logger and remove when done."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch(mode=0o600, exist_ok=True)
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(formatter(agent=agent, json=True))
    return handler
