"""An agent's workspace in Mission Control: content-addressed files that follow it to whichever
host runs it next.

After each turn the agent uploads the blobs Mission Control lacks, batched (``POST /blobs``:
up to 1,000 blobs and 4 MiB of file bytes a request, each hash checked against its bytes), and
then commits its manifest, path → hash (``PUT /v1/workspace``), as a new version. The commit
carries the instance's fence and is checked against the agent's lease in the same transaction:
an instance fenced out by another is refused (409 ``fenced``) and overwrites nothing. An
instance starting reads the latest manifest (``GET``) and the blobs it lacks, batched too
(``POST /blobs/fetch``). Paths are relative and stay in the workspace; sizes are held to the
agent's ``[workspace_sync]`` limits. ``PUT``/``GET /blobs/{sha256}`` move one blob.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from typing import Annotated

from fastapi import APIRouter, Header, Query

from mcos.api_workspace import (
    BlobIn,
    BlobOut,
    BlobsIn,
    BlobsOut,
    FetchIn,
    FetchOut,
    ManifestIn,
    ManifestOut,
)
from mcos.domain.tokens import Principal, PrincipalKind
from mcos.domain.workspace_sync import (
    MAX_BATCH_BYTES,
    SyncLimits,
    WorkspaceFile,
    hash_problem,
    path_problem,
)
from mcos.exceptions import Conflict, Forbidden, InvalidRequest, NotFound
from mcos.server.context import MissionControl
from mcos.server.routes.deps import FENCE_SCHEMA, MC, Caller
from mcos.server.routes.messages import ERRORS

router = APIRouter(prefix="/v1/workspace", tags=["workspace"])
PREFIX = "/v1/workspace"

Fence = Annotated[int | None, Header(ge=0, include_in_schema=False), FENCE_SCHEMA]


async def _agent(mc: MissionControl, caller: Principal, action: str) -> SyncLimits:
    """The caller's limits; only an agent pushes (403, audited), and only with sync on (409)."""
    if caller.kind is not PrincipalKind.AGENT:
        rule = "only an agent pushes its own workspace"
        await mc.refuse(caller, action, rule)
        raise Forbidden(rule, rule=rule)
    limits = mc.settings.workspace_sync.get(caller.name, SyncLimits())
    if not limits.enabled:
        msg = f"workspace sync is off for {caller.name} ([workspace_sync] enabled = false)"
        raise Conflict(msg, agent=caller.name)
    return limits


def _hash(sha256: str, field: str) -> str:
    problem = hash_problem(sha256)
    if problem is not None:
        raise InvalidRequest(f"{field} {sha256[:80]!r} {problem}", field=field)
    return sha256


@router.put("/blobs/{sha256}", response_model=BlobOut, responses=ERRORS)
async def put_blob(sha256: str, body: BlobIn, mc: MC, caller: Caller) -> BlobOut:
    """Keep a file's bytes under their sha256 (an upload already held changes nothing)."""
    limits = await _agent(mc, caller, "workspace.blob")
    _hash(sha256, "sha256")
    size = len(body.content)
    if size > limits.max_file_bytes:
        msg = (
            f"blob {sha256} is {size} bytes; {caller.name}'s [workspace_sync] max_file_bytes "
            f"is {limits.max_file_bytes}"
        )
        raise InvalidRequest(msg, field="content", size=size, limit=limits.max_file_bytes)
    actual = hashlib.sha256(body.content).hexdigest()
    if actual != sha256:
        msg = f"bad hash: the content's sha256 is {actual}, not {sha256} (named in the URL)"
        raise InvalidRequest(msg, field="sha256")
    new = await mc.store.put_workspace_blob(caller.name, sha256, body.content)
    return BlobOut(sha256=sha256, size=size, new=new)


@router.get("/blobs/{sha256}", response_model=BlobOut, responses=ERRORS)
async def get_blob(sha256: str, mc: MC, caller: Caller) -> BlobOut:
    """One of the caller's blobs, base64."""
    await _agent(mc, caller, "workspace.read")
    content = await mc.store.workspace_blob(caller.name, _hash(sha256, "sha256"))
    if content is None:
        raise NotFound(f"{caller.name} has no workspace blob {sha256}", sha256=sha256)
    return BlobOut(sha256=sha256, size=len(content), content=base64.b64encode(content).decode())


def _files(body: ManifestIn, limits: SyncLimits, agent: str) -> list[WorkspaceFile]:
    """The manifest's files, each path, hash and size checked (422 naming the first bad one)."""
    seen: set[str] = set()
    files = []
    for i, f in enumerate(body.files):
        problem = path_problem(f.path)
        if problem is not None:
            where = f"files[{i}].path"
            raise InvalidRequest(f"{where} {f.path[:200]!r} {problem}", field=where)
        _hash(f.sha256, f"files[{i}].sha256")
        if f.path in seen:
            where = f"files[{i}].path"
            raise InvalidRequest(f"{where} {f.path!r} is listed twice", field=where)
        if f.size > limits.max_file_bytes:
            where = f"files[{i}].size"
            msg = (
                f"{where}: {f.path} is {f.size} bytes; {agent}'s [workspace_sync] "
                f"max_file_bytes is {limits.max_file_bytes}"
            )
            raise InvalidRequest(msg, field=where, size=f.size, limit=limits.max_file_bytes)
        seen.add(f.path)
        files.append(WorkspaceFile(f.path, f.sha256, f.size))
    total = sum(f.size for f in files)
    if total > limits.max_total_bytes:
        msg = (
            f"files: the workspace is {total} bytes; {agent}'s [workspace_sync] "
            f"max_total_bytes is {limits.max_total_bytes}"
        )
        raise InvalidRequest(msg, field="files", size=total, limit=limits.max_total_bytes)
    return files


@router.put("", response_model=ManifestOut, responses=ERRORS)
async def commit(
    body: ManifestIn, mc: MC, caller: Caller, x_mcos_fence: Fence = None
) -> ManifestOut:
    """Make these files the caller's latest version — refused (409 ``fenced``) when the
    instance's fence is not the current lease's, so a fenced-out instance never overwrites."""
    limits = await _agent(mc, caller, "workspace.push")
    files = _files(body, limits, caller.name)
    manifest = await mc.store.commit_workspace(caller.name, x_mcos_fence, files)
    return ManifestOut.of(manifest)


@router.get("", response_model=ManifestOut, responses=ERRORS)
async def latest(
    mc: MC,
    caller: Caller,
    agent: Annotated[str | None, Query(max_length=200, description="operators: whose")] = None,
) -> ManifestOut:
    """The latest version of the caller's workspace (an operator names the agent)."""
    if caller.kind is PrincipalKind.OPERATOR:
        if agent is None:
            raise Forbidden("operators must name the agent (?agent=NAME)", rule="agent")
        return ManifestOut.of(await mc.store.workspace_manifest(agent))
    await _agent(mc, caller, "workspace.read")
    if agent is not None and agent != caller.name:
        rule = "an agent reads only its own workspace"
        await mc.refuse(caller, "workspace.read", rule, agent=agent)
        raise Forbidden(rule, rule=rule)
    return ManifestOut.of(await mc.store.workspace_manifest(caller.name))


# --- batched blob transfer ---------------------------------------------------------------------
def _decode(text: str, where: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as e:
        msg = f"{where}.content is not base64 (standard alphabet, padded): {e}"
        raise InvalidRequest(msg, field=f"{where}.content") from None


@router.post("/blobs", response_model=BlobsOut, responses=ERRORS)
async def put_blobs(body: BlobsIn, mc: MC, caller: Caller) -> BlobsOut:
    """Keep many files' bytes under their sha256 in one request: all of them, or none when one
    is refused (422 naming it, ``blobs[i]`` and its path): a hash that is no sha256 or does not
    match the bytes, bytes that are not base64, a file over ``max_file_bytes``, or more than
    4 MiB of file bytes in a batch of several."""
    limits = await _agent(mc, caller, "workspace.blob")
    blobs: list[tuple[str, bytes]] = []
    total = 0
    for i, item in enumerate(body.blobs):
        where = f"blobs[{i}]"
        named = where + (f" ({item.path})" if item.path else "")
        _hash(item.sha256, f"{where}.sha256")
        content = _decode(item.content, where)
        size = len(content)
        if size > limits.max_file_bytes:
            msg = (
                f"{named} is {size} bytes; {caller.name}'s [workspace_sync] max_file_bytes is "
                f"{limits.max_file_bytes}"
            )
            raise InvalidRequest(
                msg, field=f"{where}.content", size=size, limit=limits.max_file_bytes
            )
        total += size
        if total > MAX_BATCH_BYTES and len(body.blobs) > 1:
            msg = (
                f"blobs: the batch carries over {MAX_BATCH_BYTES} bytes of files by {named}; "
                "send fewer at once (a larger file alone)"
            )
            raise InvalidRequest(msg, field="blobs", limit=MAX_BATCH_BYTES)
        actual = hashlib.sha256(content).hexdigest()
        if actual != item.sha256:
            msg = f"bad hash: {named}: the content's sha256 is {actual}, not {item.sha256}"
            raise InvalidRequest(msg, field=f"{where}.sha256", path=item.path)
        blobs.append((item.sha256, content))
    new = await mc.store.put_workspace_blobs(caller.name, blobs)
    return BlobsOut(
        blobs=[
            BlobOut(sha256=sha, size=len(content), new=added)
            for (sha, content), added in zip(blobs, new, strict=True)
        ]
    )


@router.post("/blobs/fetch", response_model=FetchOut, responses=ERRORS)
async def fetch_blobs(body: FetchIn, mc: MC, caller: Caller) -> FetchOut:
    """Many of the caller's blobs, base64, in one answer: the first asked that fit 4 MiB (a
    larger one alone), in the order asked, and ``left``, the hashes to ask for next. A hash that
    is no sha256 is refused (422 naming ``sha256[i]``), one the agent holds no blob for too
    (404 naming it)."""
    await _agent(mc, caller, "workspace.read")
    hashes = list(dict.fromkeys(_hash(h, f"sha256[{i}]") for i, h in enumerate(body.sha256)))
    batch = await mc.store.workspace_blobs(caller.name, hashes, MAX_BATCH_BYTES)
    if batch.unknown:
        first = batch.unknown[0]
        where = f"sha256[{body.sha256.index(first)}]"
        msg = (
            f"{where}: {caller.name} has no workspace blob {first} ({len(batch.unknown)} of the "
            f"{len(hashes)} asked are unknown; read the latest manifest again)"
        )
        raise NotFound(msg, field=where, sha256=first, unknown=batch.unknown)
    return FetchOut(
        blobs=[
            BlobOut(sha256=h, size=len(c), content=base64.b64encode(c).decode())
            for h, c in batch.found.items()
        ],
        left=batch.left,
    )
