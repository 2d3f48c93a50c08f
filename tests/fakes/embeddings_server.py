"""A local OpenAI-compatible ``/v1/embeddings`` endpoint computing real vectors.

It speaks the wire format the official ``openai`` client uses (``input`` a string or a list,
``encoding_format`` ``float`` or ``base64`` of little-endian float32, ``data[].index``, usage,
OpenAI-shaped errors), computing each vector with a function it is given: a real model in the
benchmark (all-MiniLM-L6-v2 from its package), :func:`hashed_words` in tests. ``failing``
makes it answer 503, as an endpoint that is down; ``requests`` counts the texts it embedded.
"""

from __future__ import annotations

import base64
import re
import threading
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from tests.api.conftest import free_port
from tests.fakes.serving import wait_serving

EmbedFn = Callable[[list[str]], Any]

_WORD = re.compile(r"\w+")


def hashed_words(texts: list[str], width: int = 256) -> np.ndarray[Any, np.dtype[np.float32]]:
    """A real (if simple) embedding: counts of each text's lowercased words, hashed (CRC-32)
    into ``width`` buckets. Texts sharing words point the same way; deterministic."""
    rows = np.zeros((len(texts), width), dtype=np.float32)
    for i, text in enumerate(texts):
        for word in _WORD.findall(text.casefold()):
            rows[i, zlib.crc32(word.encode()) % width] += 1.0
    return rows


class EmbeddingsServer:
    """The endpoint's state: the model id it serves, its function, what it was asked."""

    def __init__(self, embed: EmbedFn, model: str, key: str | None = None) -> None:
        self.embed = embed
        self.model = model
        self.key = key
        self.failing = False
        self.texts: list[str] = []
        self._lock = threading.Lock()

    def app(self) -> FastAPI:
        app = FastAPI()

        @app.post("/v1/embeddings")
        async def embeddings(request: Request) -> JSONResponse:
            if (
                self.key is not None
                and request.headers.get("authorization") != f"Bearer {self.key}"
            ):
                return _error(401, "Incorrect API key provided.", "invalid_api_key")
            if self.failing:
                return _error(503, "The server is overloaded.", "server_error")
            body = await request.json()
            if body.get("model") != self.model:
                return _error(
                    404, f"The model `{body.get('model')}` does not exist", "model_not_found"
                )
            texts = body.get("input")
            if isinstance(texts, str):
                texts = [texts]
            if (
                not isinstance(texts, list)
                or not texts
                or not all(isinstance(t, str) for t in texts)
            ):
                return _error(400, "'input' must be a string or a non-empty list of strings", None)
            with self._lock:
                self.texts.extend(texts)
            rows = np.asarray(self.embed(texts), dtype=np.float32)
            base64_wanted = body.get("encoding_format") == "base64"
            data = [
                {
                    "object": "embedding",
                    "index": i,
                    "embedding": base64.b64encode(row.astype("<f4").tobytes()).decode()
                    if base64_wanted
                    else row.tolist(),
                }
                for i, row in enumerate(rows)
            ]
            tokens = sum(len(_WORD.findall(t)) for t in texts)
            return JSONResponse(
                {
                    "object": "list",
                    "data": data,
                    "model": self.model,
                    "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
                }
            )

        return app


def _error(status: int, message: str, code: str | None) -> JSONResponse:
    return JSONResponse(
        {
            "error": {
                "message": message,
                "type": "invalid_request_error",
                "param": None,
                "code": code,
            }
        },
        status_code=status,
    )


@contextmanager
def running(server: EmbeddingsServer) -> Iterator[str]:
    """Serve ``server`` on a loopback port; yields the base URL (``…/v1``)."""
    port = free_port()
    uv = uvicorn.Server(
        uvicorn.Config(
            server.app(), host="127.0.0.1", port=port, log_level="warning", access_log=False,
            lifespan="off",
        )
    )  # fmt: skip
    thread = threading.Thread(target=uv.run, name="fake-embeddings", daemon=True)
    thread.start()
    try:
        wait_serving(uv, thread, f"fake embeddings on port {port}")
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        uv.should_exit = True
        thread.join(15)


@contextmanager
def serve_embeddings(embed: EmbedFn, model: str) -> Iterator[str]:
    """A server computing with ``embed`` for ``model``; yields its base URL."""
    with running(EmbeddingsServer(embed, model)) as url:
        yield url
