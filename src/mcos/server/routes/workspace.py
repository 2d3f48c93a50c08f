"""An agent's workspace in Mission Control: content-addressed files that follow it to whichever
host runs it next.

After each turn the agent uploads the blobs Mission Control lacks (``PUT /blobs/{sha256}``,
the hash checked against the bytes) and then commits its manifest, path → hash
(``PUT /v1/workspace``), as a new version. The commit carries the instance's fence and is
checked against the agent's lease in the same transaction: an instance fenced out by another
is refused (409 ``fenced``) and overwrites nothing. An instance starting reads the latest
manifest (``GET``) and the blobs it lacks (``GET /blobs/{sha256}``). Paths are relative and
stay in the workspace; sizes are held to the agent's ``[workspace_sync]`` limits.
"""

from __future__ import annotations

import base64
import hashlib
from typing import Annotated

from fastapi import APIRouter, Header, Query

from mcos.api_workspace import BlobIn, BlobOut, ManifestIn, ManifestOut
from mcos.domain.tokens import Principal, PrincipalKind
from mcos.domain.workspace_sync import SyncLimits, WorkspaceFile, hash_problem, path_problem
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
