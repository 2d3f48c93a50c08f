"""Text to vectors for semantic search: an OpenAI-compatible ``/v1/embeddings`` endpoint, or a
model that ships inside an installed Python package (nothing is downloaded at run time).

Vectors are returned L2-normalised as float32 rows, so a dot product is the cosine similarity.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import threading
from importlib import resources
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from mcos.exceptions import ConfigError, McosError

BATCH = 64
"""Texts per request or per forward pass: bounded memory, few round trips."""

Vectors = npt.NDArray[np.float32]


class EmbeddingError(McosError):
    """The embeddings endpoint or model failed; the search falls back to BM25 alone."""


class Embedder(Protocol):
    """What turns texts into vectors; ``name`` identifies the model (vectors of two models are
    never compared: a change of model re-embeds every chunk)."""

    name: str

    def embed(self, texts: list[str]) -> Vectors:
        """One normalised row per text, in order."""
        ...


def normalised(rows: Any) -> Vectors:
    """``rows`` as float32 with each row scaled to length 1 (a zero row stays zero)."""
    matrix = np.asarray(rows, dtype=np.float32)
    if matrix.ndim != 2:
        msg = f"expected a list of vectors, got an array of shape {matrix.shape}"
        raise EmbeddingError(msg)
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return (matrix / np.where(norms == 0, 1, norms)).astype(np.float32)


class OpenAIEmbedder:
    """An OpenAI-compatible embeddings endpoint (OpenAI, a local server, a gateway), through the
    official ``openai`` client (its retries and timeouts)."""

    def __init__(
        self, model: str, base_url: str | None, api_key: str | None, *, max_retries: int = 2
    ) -> None:
        from openai import OpenAI  # noqa: PLC0415 (the SDK loads only when configured)

        self.name = f"openai:{model}"
        self.model = model
        self._client = OpenAI(
            base_url=base_url, api_key=api_key or "unused", max_retries=max_retries
        )

    def embed(self, texts: list[str]) -> Vectors:
        from openai import OpenAIError  # noqa: PLC0415

        rows: list[list[float]] = []
        for start in range(0, len(texts), BATCH):
            batch = texts[start : start + BATCH]
            try:
                answer = self._client.embeddings.create(model=self.model, input=batch)
            except OpenAIError as error:
                msg = f"embeddings endpoint: {error.__class__.__name__}: {error}"
                raise EmbeddingError(msg) from None
            ordered = sorted(answer.data, key=lambda d: d.index)
            if len(ordered) != len(batch):
                msg = f"embeddings endpoint returned {len(ordered)} vectors for {len(batch)} texts"
                raise EmbeddingError(msg)
            rows.extend(d.embedding for d in ordered)
        return normalised(rows) if rows else np.zeros((0, 0), dtype=np.float32)


def packaged_model_dir(package: str) -> Path:
    """The folder of a sentence-transformers model shipped inside ``package`` (its ``model/``
    folder, or the package folder itself when it holds ``modules.json``)."""
    if importlib.util.find_spec(package) is None:
        raise ConfigError(
            "fleet.toml",
            "embeddings.package",
            f"the Python package {package!r} is not installed (pip install it; the model must "
            "ship inside it: nothing is downloaded at run time)",
        )
    root = Path(str(resources.files(package)))
    for candidate in (root / "model", root):
        if (candidate / "modules.json").is_file() or (candidate / "config.json").is_file():
            return candidate
    raise ConfigError(
        "fleet.toml",
        "embeddings.package",
        f"{package!r} holds no sentence-transformers model (no model/modules.json in {root})",
    )


class LocalEmbedder:
    """A sentence-transformers model loaded from an installed package, offline, on the CPU.

    The package is checked at once (a configuration error at start); the model is loaded at
    the first :meth:`embed` (seconds: in the search's worker thread, not at the agent's start).
    """

    def __init__(self, package: str) -> None:
        self.name = f"local:{package}"
        self.folder = packaged_model_dir(package)
        if importlib.util.find_spec("sentence_transformers") is None:
            raise ConfigError(
                "fleet.toml",
                "embeddings.package",
                "sentence-transformers is not installed (pip install it with the model package)",
            )
        self._model: Any = None
        self._lock = threading.Lock()

    def _loaded(self) -> Any:
        with self._lock:
            if self._model is None:
                os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach for a hub
                os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
                module = importlib.import_module("sentence_transformers")
                self._model = module.SentenceTransformer(str(self.folder), device="cpu")
            return self._model

    def embed(self, texts: list[str]) -> Vectors:
        if not texts:
            return np.zeros((0, 0), dtype=np.float32)
        rows = self._loaded().encode(texts, batch_size=BATCH, normalize_embeddings=True)
        return normalised(rows)
