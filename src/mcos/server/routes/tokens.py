"""Creating, listing, rotating and revoking bearer tokens."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Query

from mcos.api_models import MAX_ID, TokenCreated, TokenCreateRequest, TokenOut
from mcos.domain import tokens
from mcos.domain.audit import AuditEvent
from mcos.domain.tokens import Principal, PrincipalKind
from mcos.exceptions import Forbidden, InvalidRequest, LastOperatorToken
from mcos.server.context import MissionControl
from mcos.server.routes.deps import MC, Caller, RowId, require_operator, require_supervisor
from mcos.server.routes.messages import ERRORS

router = APIRouter(prefix="/v1", tags=["tokens"])


async def issue(
    mc: MissionControl,
    actor: str,
    kind: PrincipalKind,
    name: str,
    label: str = "",
    expires_in: timedelta | None = None,
    action: str = "token.create",
) -> TokenCreated:
    """Create a token and audit it; the clear token is returned this once."""
    clear, prefix = tokens.new_token()
    expires_at = None if expires_in is None else (await mc.store.now()) + expires_in
    record = await mc.store.create_token(
        prefix=prefix,
        digest=tokens.digest(mc.settings.token_key, clear),
        kind=kind,
        name=name,
        label=label,
        expires_at=expires_at,
        audit=AuditEvent(actor, action, {"principal": f"{kind}:{name}"}, {"label": label}),
    )
    return TokenCreated(token=clear, record=TokenOut.of(record))


@router.post("/tokens", status_code=201, response_model=TokenCreated, responses=ERRORS)
async def create(request: TokenCreateRequest, mc: MC, caller: Caller) -> TokenCreated:
    """Create a token for an agent, an operator or a host (operators only). Shown once.

    A host principal (a supervisor) may create only agent tokens, only for agents it may run;
    each replaces the agent's previous token from the same host (revoked at once), so tokens
    minted at every supervisor start do not pile up."""
    if caller.kind is PrincipalKind.HOST:
        if request.kind is not PrincipalKind.AGENT:
            rule = "a host may create only its agents' tokens"
            asked = f"{request.kind}:{request.name}"
            await mc.refuse(caller, "token.create", rule, requested=asked)
            raise Forbidden(rule, rule=rule)
        await require_supervisor(mc, caller, "token.create", request.name)
    else:
        await require_operator(mc, caller, "token.create")
    if request.kind is PrincipalKind.AGENT:
        agents = {a.name for a in await mc.store.list_agents()}
        if request.name not in agents:
            raise InvalidRequest(f"name: no agent {request.name!r} in the fleet file", field="name")
    if request.kind is PrincipalKind.HOST and request.name not in mc.settings.host_agents:
        known = ", ".join(sorted(mc.settings.host_agents)) or "none"
        raise InvalidRequest(
            f"name: no host {request.name!r} in the fleet file (hosts: {known})", field="name"
        )
    expires = (
        None
        if request.expires_in_seconds is None
        else timedelta(seconds=request.expires_in_seconds)
    )
    if caller.kind is PrincipalKind.HOST:
        return await _replace_agent_token(mc, caller, request.name, request.label, expires)
    return await issue(mc, caller.actor, request.kind, request.name, request.label, expires)


async def _replace_agent_token(
    mc: MissionControl, host: Principal, agent: str, label: str, expires: timedelta | None
) -> TokenCreated:
    """A host's new token for ``agent``; the agent's earlier tokens from this host are revoked."""
    tag = f"{tokens.HOST_LABEL}{host.name}"
    created = await issue(
        mc, host.actor, PrincipalKind.AGENT, agent, f"{tag} {label}".strip()[:200], expires
    )
    now = await mc.store.now()
    for old in await mc.store.list_tokens(agent):
        if (
            old.kind is PrincipalKind.AGENT
            and old.id != created.record.id
            and old.usable(now)
            and tokens.minted_by_host(old.label, host.name)
        ):
            await mc.store.revoke_token(
                old.id,
                audit=AuditEvent(
                    host.actor,
                    "token.revoke",
                    {"token": old.id},
                    {"replaced_by": created.record.id},
                ),
            )
            mc.auth.forget(old.prefix)
    return created


@router.get("/tokens", response_model=list[TokenOut], responses=ERRORS)
async def list_tokens(mc: MC, caller: Caller, name: str | None = None) -> list[TokenOut]:
    """Tokens (never their secrets): operators see all, an agent its own."""
    if caller.kind is PrincipalKind.AGENT:
        name = caller.name
    return [TokenOut.of(t) for t in await mc.store.list_tokens(name)]


async def _approved_revocation(
    mc: MissionControl, caller: Principal, token_id: int, approval: int | None
) -> None:
    """No single agent revokes a token: it takes an approved request naming the token."""
    quorum = mc.settings.matrix.rule("revoke_token").approve
    needs = quorum.describe() if quorum else "a human"
    request = None if approval is None else await mc.store.approval(approval)
    ok = (
        request is not None
        and request.action == "revoke_token"
        and request.state.value == "approved"
        and request.payload.get("token_id") == token_id
        and caller.actor in (request.requester, f"agent:{request.executor}")
    )
    if not ok:
        rule = f"revoke_token needs an approved request naming token {token_id} ({needs})"
        await mc.refuse(caller, "token.revoke", rule, token=str(token_id))
        raise Forbidden(rule, rule=rule)


async def _owned(mc: MissionControl, caller: Principal, token_id: int, action: str) -> None:
    """Operators may act on any token; an agent only on its own."""
    record = await mc.store.get_token(token_id)
    if caller.kind is PrincipalKind.OPERATOR:
        return
    if record.kind is PrincipalKind.AGENT and record.name == caller.name:
        return
    rule = "an agent may act only on its own tokens"
    await mc.refuse(caller, action, rule, token=str(token_id))
    raise Forbidden(rule, rule=rule)


@router.post("/tokens/{token_id}/revoke", response_model=TokenOut, responses=ERRORS)
async def revoke(
    token_id: RowId,
    mc: MC,
    caller: Caller,
    approval: Annotated[
        int | None,
        Query(ge=1, le=MAX_ID, description="An approved revoke_token request naming this token."),
    ] = None,
) -> TokenOut:
    """Revoke a token from now on: a human operator always may; an agent only with an approved
    ``revoke_token`` request (its committee's quorum) whose payload names this token; a host
    only its agents' tokens. The last active operator token is never revoked (409
    ``last_operator_token``, audited), whoever asks and whatever approved it."""
    if caller.kind is PrincipalKind.HOST:
        target = await mc.store.get_token(token_id)
        if target.kind is not PrincipalKind.AGENT:
            rule = "a host may revoke only its agents' tokens"
            await mc.refuse(caller, "token.revoke", rule, token=str(token_id))
            raise Forbidden(rule, rule=rule)
        await require_supervisor(mc, caller, "token.revoke", target.name)
    elif caller.kind is not PrincipalKind.OPERATOR:
        await _approved_revocation(mc, caller, token_id, approval)
    try:
        record = await mc.store.revoke_token(
            token_id, audit=AuditEvent(caller.actor, "token.revoke", {"token": token_id})
        )
    except LastOperatorToken as e:
        await mc.refuse(caller, "token.revoke", e.message, token=str(token_id))
        raise
    mc.auth.forget(record.prefix)
    return TokenOut.of(record)


@router.post(
    "/tokens/{token_id}/rotate", status_code=201, response_model=TokenCreated, responses=ERRORS
)
async def rotate(token_id: RowId, mc: MC, caller: Caller) -> TokenCreated:
    """Issue a new token for the same principal and revoke this one."""
    await _owned(mc, caller, token_id, "token.rotate")
    old = await mc.store.get_token(token_id)
    if old.revoked_at is not None:
        raise InvalidRequest(f"token {token_id} is revoked; create a new one instead")
    created = await issue(mc, caller.actor, old.kind, old.name, old.label, action="token.rotate")
    await mc.store.revoke_token(
        token_id,
        audit=AuditEvent(
            caller.actor, "token.revoke", {"token": token_id}, {"replaced_by": created.record.id}
        ),
    )
    mc.auth.forget(old.prefix)
    return created
