"""An agent's knowledge index as its fleet file configures it (folders, embeddings)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from mcos.config.models import EmbeddingsConfig, Fleet
from mcos.config.secrets import resolve_key

if TYPE_CHECKING:
    from mcos.knowledge.embeddings import Embedder
    from mcos.knowledge.index import KnowledgeIndex


def open_embedder(config: EmbeddingsConfig, fleet: Fleet) -> Embedder:
    """The embedder of ``[embeddings]``: its key resolved, a local model loaded from its package."""
    from mcos.knowledge.embeddings import LocalEmbedder, OpenAIEmbedder  # noqa: PLC0415

    if config.provider == "local":
        assert config.package is not None  # the model validator requires it
        return LocalEmbedder(config.package)
    assert config.model is not None
    key = None
    if config.key is not None:
        key = resolve_key(config.key, where=f"{fleet.path}: embeddings", base_dir=fleet.base_dir)
    return OpenAIEmbedder(config.model, config.base_url, key)


def open_knowledge(fleet: Fleet, agent: str, workspace: Path) -> KnowledgeIndex | None:
    """``agent``'s knowledge index in ``workspace/.mcos/knowledge.db``; None if it has no
    knowledge folders (then it is not offered ``knowledge_search`` at all)."""
    folders = fleet.knowledge_folders(agent)
    if not folders:
        return None
    from mcos.knowledge.index import KnowledgeIndex  # noqa: PLC0415 (numpy only when used)

    embedder = open_embedder(fleet.embeddings, fleet) if fleet.embeddings is not None else None
    # On a PostgreSQL fleet the chunks are synced to Mission Control and ranked there.
    remote = fleet.server.store.startswith(("postgresql:", "postgres:"))
    return KnowledgeIndex(
        folders, workspace / ".mcos" / "knowledge.db", embedder=embedder, remote=remote
    )
