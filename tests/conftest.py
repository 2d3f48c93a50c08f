"""Fixtures shared by every tier."""

from __future__ import annotations

import os

import pytest

IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}
PG_URL = os.environ.get("MCOS_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")


def pg_unreachable(reason: str) -> None:
    """Fail under CI (PostgreSQL tests must run there), skip elsewhere with the reason."""
    message = f"PostgreSQL at {PG_URL} is unreachable: {reason}"
    if IN_CI:
        pytest.fail(message + " (CI=true: PostgreSQL tests never skip)")
    pytest.skip(message)
