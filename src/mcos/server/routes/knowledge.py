"""An agent's knowledge chunks in Mission Control's store, searched with PostgreSQL full-text.

The agent converts and chunks its documents on its own host and syncs each changed file here
(``PUT``: replace, ``DELETE``: forget); ``GET /v1/knowledge/search`` ranks its chunks with
``ts_rank``. A path starts with the folder label the fleet file gives the agent; chunks are
kept under the folder's owner (``agent:NAME`` for its own folders, ``shared:NAME`` for a shared
folder naming it), so an agent reads and writes only its own folders and the shared ones it is
named in. Anything else is refused (403, audited). On a SQLite store every route answers 409:
there each agent searches its own FTS5 index.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from mcos.api_knowledge import (
    MAX_K,
    MAX_PATH,
    ChunksPut,
    ChunksPutOut,
    FileDeleted,
    KnowledgeHitOut,
    KnowledgeSearchOut,
)
from mcos.domain.redaction import redact
from mcos.domain.tokens import Principal, PrincipalKind
from mcos.exceptions import Forbidden
from mcos.server.context import MissionControl
from mcos.server.routes.deps import MC, Caller
from mcos.server.routes.messages import ERRORS
from mcos.store.protocol import KnowledgeChunk

router = APIRouter(prefix="/v1/knowledge", tags=["knowledge"])


def _folders(mc: MissionControl, caller: Principal) -> dict[str, str]:
    if caller.kind is not PrincipalKind.AGENT:
        return {}
    return mc.settings.knowledge.get(caller.name, {})


async def _owner(mc: MissionControl, caller: Principal, action: str, path: str) -> str:
    """The owner ``path``'s chunks are kept under, or 403 (audited) if not the caller's."""
    # The longest label the path starts with (a folder may be configured as "docs/legal").
    owner, rest = None, ""
    for label, who in sorted(_folders(mc, caller).items(), key=lambda f: -len(f[0])):
        if path.startswith(label + "/"):
            owner, rest = who, path[len(label) + 1 :]
            break
    if owner is None or not rest or ".." in rest.split("/"):
        rule = "an agent syncs only files of its own knowledge folders and shared ones naming it"
        await mc.refuse(caller, action, rule, path=path[:200])
        raise Forbidden(f"{path!r} is not in your knowledge folders: {rule}", rule=rule)
    return owner


@router.put("/chunks", response_model=ChunksPutOut, responses=ERRORS)
async def put_chunks(body: ChunksPut, mc: MC, caller: Caller) -> ChunksPutOut:
    """Replace a file's chunks from ``offset`` on (a secret pasted in a document is redacted)."""
    owner = await _owner(mc, caller, "knowledge.put", body.path)
    chunks = [
        KnowledgeChunk(c.page, redact(c.section), c.line, redact(c.text)) for c in body.chunks
    ]
    await mc.store.put_knowledge_chunks(owner, body.path, body.offset, chunks)
    return ChunksPutOut(path=body.path, stored=len(chunks))


@router.delete("/chunks", response_model=FileDeleted, responses=ERRORS)
async def delete_file(
    mc: MC, caller: Caller, path: Annotated[str, Query(min_length=3, max_length=MAX_PATH)]
) -> FileDeleted:
    """Forget a file the agent no longer has."""
    owner = await _owner(mc, caller, "knowledge.delete", path)
    return FileDeleted(path=path, deleted=await mc.store.delete_knowledge_file(owner, path))


@router.get("/search", response_model=KnowledgeSearchOut, responses=ERRORS)
async def search(
    mc: MC,
    caller: Caller,
    q: Annotated[str, Query(min_length=1, max_length=1_000)],
    k: Annotated[int, Query(ge=1, le=MAX_K)] = 5,
) -> KnowledgeSearchOut:
    """The caller's best ``k`` chunks for ``q`` (web-search syntax, never an error), searched
    over its own folders and the shared ones naming it; an agent without folders is refused."""
    owners = sorted(set(_folders(mc, caller).values()))
    if not owners:
        rule = "only an agent with knowledge folders searches knowledge"
        await mc.refuse(caller, "knowledge.search", rule)
        raise Forbidden(rule, rule=rule)
    hits = await mc.store.search_knowledge(owners, q, k)
    return KnowledgeSearchOut(
        hits=[
            KnowledgeHitOut(
                path=h.path, seq=h.seq, page=h.chunk.page, section=h.chunk.section,
                line=h.chunk.line, text=h.chunk.text, score=h.score,
            )
            for h in hits
        ]
    )  # fmt: skip
