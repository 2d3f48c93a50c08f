"""Log lines: one JSON object per line with the agreed keys, secrets cut, readable on a TTY."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from mcos.domain.redaction import REDACTED
from mcos.logs import KEYS, formatter, get_logger

TOKEN = "mcos_abcdefabcdef_" + "A" * 43


@pytest.fixture
def captured() -> Iterator[tuple[io.StringIO, logging.Handler]]:
    """A handler with the JSON formatter on a test logger (not the root: nothing else sees it)."""
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(formatter(agent="atlas"))
    logger = logging.getLogger("mcos.test_logs")
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    yield out, handler
    logger.removeHandler(handler)
    logger.propagate = True


def lines(out: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in out.getvalue().splitlines()]


class TestJsonLines:
    """What a log file holds."""

    def test_fields_come_after_the_agreed_keys(self, captured: tuple[io.StringIO, object]) -> None:
        """A structured call: timestamp, level, event, logger, agent first, then its fields."""
        out, _ = captured
        get_logger("mcos.test_logs").info("turn ended", agent="gene", cost_usd=0.012, calls=2)
        (line,) = lines(out)
        assert list(line)[:5] == list(KEYS)
        assert line["event"] == "turn ended"
        assert line["level"] == "info"
        assert line["logger"] == "mcos.test_logs"
        assert line["agent"] == "gene"  # named in the call: not overridden by the process's
        assert (line["cost_usd"], line["calls"]) == (0.012, 2)
        stamp = datetime.fromisoformat(str(line["timestamp"]))
        assert stamp.utcoffset() == UTC.utcoffset(None)

    def test_stdlib_calls_come_out_the_same_once_with_the_process_agent(
        self, captured: tuple[io.StringIO, object]
    ) -> None:
        """``logging.getLogger(...).warning("%s", ...)``: formatted, the process's agent stamped,
        the agent named once (never ``atlas: atlas:``)."""
        out, _ = captured
        logging.getLogger("mcos.test_logs").warning("clock offset %+.3fs", 0.25)
        (line,) = lines(out)
        assert line["event"] == "clock offset +0.250s"
        assert line["agent"] == "atlas"
        assert line["level"] == "warning"

    def test_secrets_are_cut_from_the_event_fields_and_tracebacks(
        self, captured: tuple[io.StringIO, object]
    ) -> None:
        """A token in the message, in a field or in an exception never reaches the file."""
        out, _ = captured
        log = get_logger("mcos.test_logs")
        log.info(f"sent with {TOKEN}", header=f"Bearer {TOKEN}")
        try:
            raise ValueError(TOKEN)
        except ValueError:
            log.exception("failed")
        assert TOKEN not in out.getvalue()
        first, second = lines(out)
        assert first["event"] == f"sent with {REDACTED}"
        assert REDACTED in str(first["header"])
        assert "ValueError" in str(second["exception"])

    def test_a_terminal_gets_key_value_not_json(self) -> None:
        """The console rendering: event and fields as key=value."""
        out = io.StringIO()
        handler = logging.StreamHandler(out)
        handler.setFormatter(formatter(json=False))
        logger = logging.getLogger("mcos.test_logs.tty")
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False
        try:
            get_logger("mcos.test_logs.tty").info("turn ended", agent="gene", cost_usd=0.5)
        finally:
            logger.removeHandler(handler)
        text = out.getvalue()
        assert "turn ended" in text
        assert "agent=gene" in text
        assert "cost_usd=0.5" in text
        assert not text.startswith("{")
