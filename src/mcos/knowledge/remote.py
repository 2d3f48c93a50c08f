"""Knowledge search on PostgreSQL fleets: chunks synced to Mission Control, BM25 there.

The agent still converts and chunks its documents locally (incremental, in its
:class:`~mcos.knowledge.index.KnowledgeIndex`), then sends each changed file's chunks to
``/v1/knowledge`` and asks Mission Control to rank them with PostgreSQL full-text; that ranking
is fused with the local embeddings' (vectors stay on the agent). A file whose sync fails stays
pending and is sent at the next search. If Mission Control cannot answer, the local FTS5 index
answers instead, so a search never fails for a network blip.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from mcos.api_knowledge import ChunkIn
from mcos.client import AsyncClient, Calls
from mcos.exceptions import Forbidden, McosError
from mcos.knowledge.index import CANDIDATES, KnowledgeHit, KnowledgeIndex

log = logging.getLogger(__name__)

BATCH_CHARS = 40_000
"""Characters of chunk text per request: even escaped as ``\\uXXXX`` under the body limit."""
BATCH_CHUNKS = 200


def _batches(chunks: list[KnowledgeHit]) -> list[list[ChunkIn]]:
    batches: list[list[ChunkIn]] = [[]]
    size = 0
    for c in chunks:
        weight = len(c.text) + len(c.section)
        if batches[-1] and (size + weight > BATCH_CHARS or len(batches[-1]) >= BATCH_CHUNKS):
            batches.append([])
            size = 0
        batches[-1].append(ChunkIn(page=c.page, section=c.section, line=c.line, text=c.text))
        size += weight
    return batches


async def sync(index: KnowledgeIndex, client: AsyncClient) -> int:
    """Reindex, then send Mission Control every file changed since it last took them; how many
    files were sent. Raises :class:`~mcos.exceptions.McosError` if Mission Control refuses."""
    await asyncio.to_thread(index.reindex)
    pending = await asyncio.to_thread(index.pending_sync)
    for path, gen, chunks in pending:
        if chunks is None:
            # Forbidden: its folder is no longer ours (and its hits map to no local chunk).
            with contextlib.suppress(Forbidden):
                await client.do(Calls.delete_knowledge_file(path))
        else:
            offset = 0
            for batch in _batches(chunks):
                await client.do(Calls.put_knowledge_chunks(path, batch, offset))
                offset += len(batch)
        await asyncio.to_thread(index.synced, path, gen)
    return len(pending)


async def search(
    index: KnowledgeIndex, client: AsyncClient, query: str, k: int
) -> list[KnowledgeHit]:
    """The best ``k`` chunks for ``query``: Mission Control's full-text ranking fused with the
    local embeddings; the local FTS5 index if Mission Control cannot answer."""
    if k <= 0 or not query.strip():
        return []
    try:
        await sync(index, client)
        found = await client.do(Calls.search_knowledge(query[:1_000], CANDIDATES))
    except McosError as error:
        log.warning("knowledge search falls back to the local index: %s", error)
        return await asyncio.to_thread(index.search, query, k)
    ranking = [(h.path, h.seq) for h in found.hits]
    return await asyncio.to_thread(index.fuse, query, k, ranking)
