"""The process's one verifying TLS context, shared by Mission Control's clients (agent start-up
parsed the CA bundle twice, ~60 ms of CPU an agent)."""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from typing import Any

import pytest

from mcos.client import AsyncClient, Client
from mcos.tls import verified_context


@pytest.fixture
def parses(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[dict[str, Any]]]:
    """Every CA bundle load (``ssl.create_default_context`` call), with its arguments; the
    shared context is rebuilt for the test and dropped after it."""
    seen: list[dict[str, Any]] = []
    real = ssl.create_default_context

    def counting(*args: Any, **kwargs: Any) -> ssl.SSLContext:
        seen.append(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(ssl, "create_default_context", counting)
    verified_context.cache_clear()
    yield seen
    verified_context.cache_clear()


class TestVerifiedContext:
    """One CA bundle parse per process, with httpx's own defaults."""

    async def test_clients_share_one_context(self, parses: list[dict[str, Any]]) -> None:
        """Several sync and async clients (an agent makes two before it is healthy) load the
        CA bundle once between them."""
        async with AsyncClient("http://127.0.0.1:9"), AsyncClient("http://127.0.0.1:9"):
            with Client("http://127.0.0.1:9"):
                pass
        assert len(parses) == 1

    def test_it_verifies_servers(self, parses: list[dict[str, Any]]) -> None:
        """The shared context checks certificates and host names, as httpx's default does."""
        context = verified_context()
        assert context.verify_mode is ssl.CERT_REQUIRED
        assert context.check_hostname
        assert verified_context() is context
        assert len(parses) == 1

    def test_the_environment_names_the_bundle(
        self, parses: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """``SSL_CERT_FILE`` is honoured as httpx honours it (a private CA for the whole host)."""
        bundle = ssl.get_default_verify_paths().openssl_cafile
        monkeypatch.setenv("SSL_CERT_FILE", bundle)
        verified_context()
        assert parses == [{"cafile": bundle}]
