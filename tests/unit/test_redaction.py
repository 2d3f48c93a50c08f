"""Secrets are cut from text and log records: by known shapes and by remembered values."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from pathlib import Path

import pytest

from mcos.domain.redaction import (
    MAX_DEPTH,
    REDACTED,
    SHAPE,
    TOO_DEEP,
    RedactingFilter,
    redact,
    remember,
    scrub,
)
from mcos.runtime.memory import MemoryIndex
from mcos.runtime.workspace import Workspace


@pytest.mark.parametrize(
    "secret",
    [
        "sk-ant-api03-AbCdEfGhIjKlMnOpQrStUv",
        "sk-proj-AbCdEfGhIjKlMnOpQrStUvWx",
        "123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw",
        "mcos_abcdef012345_" + "A" * 43,
        "AKIAABCDEFGHIJKLMNOP",
    ],
)
def test_known_shapes_are_cut(secret: str) -> None:
    text = f"request failed with key {secret} at 12:00"
    assert secret not in redact(text)
    assert REDACTED in redact(text)


def test_remembered_values_are_cut_and_ordinary_words_are_not() -> None:
    remember("hunter2-but-longer")
    assert redact("password=hunter2-but-longer") == f"password={REDACTED}"
    remember("short")  # too short to remember: it would cut ordinary words
    assert redact("a short note") == "a short note"


def test_the_shortest_remembered_value_is_cut_and_the_longest_first() -> None:
    """An eight-character value is cut even as a whole text (shorter texts skip the search);
    a remembered value holding another is cut whole, not around the shorter one."""
    remember("8chr-key")
    assert redact("8chr-key") == REDACTED
    assert redact("7chr-ke") == "7chr-ke"
    remember("prefix-8chr-key-suffix")
    assert redact("x prefix-8chr-key-suffix y") == f"x {REDACTED} y"


def test_bearer_headers_are_cut() -> None:
    assert "xyz" not in redact("Authorization: Bearer xyzxyzxyzxyzxyzxyz")


def test_log_records_are_redacted_with_their_arguments() -> None:
    record = logging.LogRecord(
        "t", logging.INFO, __file__, 1, "calling with %s", ("sk-ant-api03-SECRETSECRETSECRET",),
        None,
    )  # fmt: skip
    assert RedactingFilter().filter(record)
    assert "SECRET" not in record.getMessage()


def test_a_secret_glued_to_punctuation_is_cut_and_prose_is_left_alone() -> None:
    key = "sk-ant-api03-AbCdEfGhIjKlMnOpQrStUv"
    assert redact(f'config: key="{key}";') == f'config: key="{REDACTED}";'
    prose = "Disk at 71%; rotated the logs and restarted nginx at 12:00. " * 50
    assert redact(prose) is prose  # no word of 16+ characters: the regex is not even run


def test_scrub_cuts_every_string_of_a_nested_value_keys_too() -> None:
    key = "sk-proj-AbCdEfGhIjKlMnOpQrStUvWx"
    value = {"to": "a@example.com", key: [1, 2.5, True, None, {"deep": f"is {key}"}], "n": (key,)}
    assert scrub(value) == {
        "to": "a@example.com",
        REDACTED: [1, 2.5, True, None, {"deep": f"is {REDACTED}"}],
        "n": (REDACTED,),
    }
    deep: object = key
    for _ in range(MAX_DEPTH + 5):
        deep = [deep]
    assert key not in repr(scrub(deep))
    assert TOO_DEEP in repr(scrub(deep))


def test_workspace_writes_and_the_memory_index_never_hold_a_secret(tmp_path: Path) -> None:
    remember("a-remembered-secret-value-0042")
    workspace = Workspace(tmp_path)
    now = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    log = workspace.append_log(now, "noted a-remembered-secret-value-0042 in passing")
    workspace.write_atomic("MEMORY.md", "# MEMORY\n- key sk-ant-api03-AbCdEfGhIjKlMnOpQrStUv\n")
    assert log.read_text() == f"- 03:04:05 noted {REDACTED} in passing\n"
    assert (tmp_path / "MEMORY.md").read_text() == f"# MEMORY\n- key {REDACTED}\n"
    # A human pastes one into a file by hand: the index neither copies nor shows it.
    (tmp_path / "NOTES.md").write_text("# Notes\nstaging key a-remembered-secret-value-0042\n")
    with MemoryIndex(tmp_path) as index:
        [hit] = [h for h in index.search("staging key") if h.path == "NOTES.md"]
    assert "remembered-secret" not in hit.snippet
    assert REDACTED in hit.snippet
    assert b"remembered-secret" not in (tmp_path / ".mcos" / "memory.db").read_bytes()


def test_shapes_are_cut_word_by_word_as_the_whole_pattern_would() -> None:
    key = "sk-ant-api03-AbCdEfGhIjKlMnOpQrStUv"
    text = f"{key} then url=https://x.example/?k={key}&v=1 and again {key}\nend"
    assert redact(text) == SHAPE.sub(REDACTED, text)
    assert key not in redact(text)
    assert redact(f"curl -H 'Authorization: Bearer {'z' * 20}' {key}") == (
        f"curl -H 'Authorization: Bearer {REDACTED}' {REDACTED}"
    )
