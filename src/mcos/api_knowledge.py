"""Wire models of ``/v1/knowledge``: an agent's document chunks synced to Mission Control and
searched there with PostgreSQL full-text (PostgreSQL fleets only)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

MAX_PATH = 1_000
MAX_TEXT = 4_000
"""A chunk's cap in characters (the indexer cuts at 1,200; headroom for long lines)."""
MAX_CHUNKS = 500
"""Chunks one request may carry; a longer file is sent in batches (``offset``)."""
MAX_K = 100


class _Wire(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ChunkIn(_Wire):
    """One chunk: its PDF page, section heading, first line (text formats) and text."""

    page: int | None = Field(default=None, ge=1, le=1_000_000)
    section: str = Field(default="", max_length=MAX_TEXT)
    line: int | None = Field(default=None, ge=1, le=100_000_000)
    text: str = Field(max_length=MAX_TEXT)


class ChunksPut(_Wire):
    """Replace a file's chunks from place ``offset`` on (0: the whole file)."""

    path: str = Field(min_length=3, max_length=MAX_PATH, description="folder label/relative path")
    offset: int = Field(default=0, ge=0, le=10_000_000)
    chunks: list[ChunkIn] = Field(max_length=MAX_CHUNKS)


class ChunksPutOut(_Wire):
    path: str
    stored: int


class FileDeleted(_Wire):
    path: str
    deleted: int


class KnowledgeHitOut(_Wire):
    """A chunk found: its file, its place in the file (``seq``), where it is and its score."""

    path: str
    seq: int
    page: int | None
    section: str
    line: int | None
    text: str
    score: float


class KnowledgeSearchOut(_Wire):
    hits: list[KnowledgeHitOut]
