"""Secrets are cut from text and log records: by known shapes and by remembered values."""

from __future__ import annotations

import logging

import pytest

from mcos.domain.redaction import REDACTED, RedactingFilter, redact, remember


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


def test_bearer_headers_are_cut() -> None:
    assert "xyz" not in redact("Authorization: Bearer xyzxyzxyzxyzxyzxyz")


def test_log_records_are_redacted_with_their_arguments() -> None:
    record = logging.LogRecord(
        "t", logging.INFO, __file__, 1, "calling with %s", ("sk-ant-api03-SECRETSECRETSECRET",),
        None,
    )  # fmt: skip
    assert RedactingFilter().filter(record)
    assert "SECRET" not in record.getMessage()
