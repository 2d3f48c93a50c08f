"""Hostile input at the edge: nothing a caller sends gets a 500 or stores what cannot be shown,
and a row that cannot be shown (stored by an older version) breaks no view, export or command.

Each test sends what an attacker with a token would (or writes the row straight into the store)
over real HTTP to a live Mission Control.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import secrets
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from openapi_spec_validator import validate
from typer.testing import CliRunner

from mcos.api_models import MAX_ID
from mcos.cli import app as cli
from mcos.client import Calls
from mcos.domain import bounded
from mcos.domain.audit import AuditEvent, audit_key, canonical
from mcos.store import make_store
from mcos.store.protocol import NewApproval
from tests.api.conftest import LiveServer, raw, serve_on
from tests.api.test_dashboard import _signed_in

runner = CliRunner()


def nested(levels: int) -> dict[str, Any]:
    """``{"a": {"a": … 1}}``, ``levels`` objects deep (built without recursion)."""
    value: Any = 1
    for _ in range(levels):
        value = {"a": value}
    return value


def nested_text(levels: int) -> str:
    return '{"a":' * levels + "1" + "}" * levels


TOKEN_KEY = secrets.token_bytes(32)
"""The live server's token key, so rows written "by an older version" join its keyed chain."""


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def server_and_url(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[tuple[LiveServer, str]]:
    """A live server and its store's URL, to write rows as an older version would have."""
    with serve_on(request.param, tmp_path, token_key=TOKEN_KEY) as served:
        yield served


@pytest.fixture(
    scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def live_server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveServer]:
    """One server per store for the tests below, which are all refused (they store nothing)."""
    with serve_on(request.param, tmp_path_factory.mktemp("hostile")) as (server, _):
        yield server


def _error(r: httpx.Response, status: int) -> dict[str, Any]:
    assert r.status_code == status, (r.status_code, r.text)
    error: dict[str, Any] = r.json()["error"]
    return error


# --- bounded free-form fields -------------------------------------------------------------------
@pytest.mark.parametrize("levels", [17, 40, 256, 300, 989, 5000])
def test_nested_detail_is_refused_naming_the_field_and_the_limit(
    live_server: LiveServer, levels: int
) -> None:
    """An agent's runtime event nested 17 … 5,000 levels deep: 422, and nothing is stored."""
    body = '{"action": "runtime.deep", "detail": ' + nested_text(levels) + "}"
    r = raw(
        live_server, "POST", "/v1/audit/events", live_server.tokens["jarvis"],
        headers={"Content-Type": "application/json"}, content=body,
    )  # fmt: skip
    error = _error(r, 422)
    if levels <= bounded.PARSE_DEPTH:
        assert error["message"] == (
            f"detail: nested {levels} levels deep; the limit is {bounded.LIMITS.depth}"
        )
    else:
        assert error["message"] == (
            f"body: JSON nested {levels + 1} levels; the limit is {bounded.PARSE_DEPTH}"
        )
    with live_server.client() as op:
        records = op.do(Calls.audit(action="runtime.deep"))
    assert records == []


def test_every_free_form_field_is_bounded(live_server: LiveServer) -> None:
    """Approval payloads, authorize payloads, agent state and message meta are held to the same
    limits (depth, keys in all, finite numbers), each error naming its field."""
    jarvis = live_server.tokens["jarvis"]
    deep = nested(bounded.LIMITS.depth + 1)
    many = {f"k{i}": {str(j): j for j in range(10)} for i in range(100)}  # 1,100 keys in all
    cases = [
        ("POST", "/v1/approvals", {"action": "production_deploy", "rationale": "r",
                                   "payload": deep}, "payload: nested 17 levels deep"),
        ("POST", "/v1/approvals", {"action": "production_deploy", "rationale": "r",
                                   "payload": many}, "payload: has 1100 keys in all; the limit"),
        ("POST", "/v1/approvals/authorize", {"action": "production_deploy", "payload": deep},
         "payload: nested 17 levels deep; the limit is 16"),
        ("PUT", "/v1/agents/jarvis/state", {"state": "running", "info": deep},
         "info: nested 17 levels deep; the limit is 16"),
    ]  # fmt: skip
    for method, path, body, message in cases:
        r = raw(live_server, method, path, jarvis, json=body)
        assert message in _error(r, 422)["message"], (path, r.text)
    # 1e999 parses as infinity, which JSON (and PostgreSQL) cannot carry back out.
    r = raw(
        live_server, "PUT", "/v1/agents/jarvis/state", jarvis,
        headers={"Content-Type": "application/json"},
        content='{"state": "running", "info": {"x": 1e999}}',
    )  # fmt: skip
    assert "info: holds a number JSON cannot carry" in _error(r, 422)["message"]
    with live_server.client() as op:
        assert op.do(Calls.approvals()) == []
        jarvis_out = next(a for a in op.do(Calls.agents()) if a.name == "jarvis")
        assert jarvis_out.state is None


def test_size_limit_of_a_free_form_field() -> None:
    """The size bound (64 KiB of JSON) holds where the body limit is larger (256 KiB default)."""
    with pytest.raises(ValueError, match=r"is 70\d{3} bytes as JSON; the limit is 65536"):
        bounded.check({"x": "y" * 70_000})
    assert bounded.check({"x": "y" * 60_000})


# --- rows already stored that cannot be shown --------------------------------------------------
async def _write_like_an_older_version(url: str, levels: int) -> str:
    """What an older Mission Control stored unchecked: an audit detail, an approval payload and
    an agent's state info nested ``levels`` deep. Returns the audit detail's stored text."""
    store = make_store(url, audit_key=audit_key(TOKEN_KEY))  # the server's key: a keyed chain
    await store.open()
    try:
        deep = nested(levels)
        await store.record(AuditEvent("agent:jarvis", "runtime.deep", detail=deep))
        await store.create_approval(
            NewApproval(
                action="production_deploy", payload=deep, payload_hash="0" * 64,
                requester="agent:jarvis", rationale="deep", quorum="human",
                executor=None, constraints="", expires_in=timedelta(hours=1),
            )
        )  # fmt: skip
        await store.set_agent_state("jarvis", "running", info=deep)
        return canonical(deep)
    finally:
        await store.close()


def test_rows_too_deep_to_show_break_no_view_export_or_command(
    server_and_url: tuple[LiveServer, str], tmp_path: Path
) -> None:
    """Rows nested 300 deep (past pydantic's 255): every API list, dashboard page and CLI
    command shows a placeholder, `mcos audit export` writes the exact stored text, and the
    chain still verifies."""
    server, url = server_and_url
    stored = asyncio.run(_write_like_an_older_version(url, 300))
    op = server.operator_token
    for path in ("/v1/audit?limit=1000", "/v1/approvals", "/v1/agents", "/v1/agents/jarvis"):
        r = raw(server, "GET", path, op)
        assert r.status_code == 200, (path, r.text)
        assert "more than 100 cannot be shown" in r.text, path
    detail = next(
        a["detail"]
        for a in raw(server, "GET", "/v1/audit?limit=1000", op).json()
        if a["action"] == "runtime.deep"
    )
    assert detail["json"] == stored
    assert raw(server, "GET", "/v1/audit/verify", op).json()["intact"] is True

    env = {"MCOS_URL": server.url, "MCOS_TOKEN": op, "COLUMNS": "200"}
    for args in (["audit", "list", "--limit", "1000"], ["approvals", "list"], ["status"],
                 ["audit", "verify"]):  # fmt: skip
        result = runner.invoke(cli, args, env=env)
        assert result.exit_code == 0, (args, result.output)
    assert "unrenderable" in runner.invoke(cli, ["status", "--json"], env=env).output

    out = tmp_path / "audit.csv"
    assert runner.invoke(cli, ["audit", "export", "--out", str(out)], env=env).exit_code == 0
    rows = list(csv.DictReader(io.StringIO(out.read_text())))
    assert next(r["detail"] for r in rows if r["action"] == "runtime.deep") == stored
    result = runner.invoke(cli, ["audit", "export", "--format", "json"], env=env)
    assert result.exit_code == 0, result.output
    exported = json.loads(result.output)
    assert next(r["detail"] for r in exported if r["action"] == "runtime.deep")["json"] == stored

    with _signed_in(server) as (web, _):
        for page in ("/", "/agents/jarvis", "/approvals", "/audit-log"):
            r = web.get(page)
            assert r.status_code == 200, (page, r.text[-500:])


# --- no 500 for bad input ----------------------------------------------------------------------
def test_unknown_action_is_a_422_listing_the_known_ones(live_server: LiveServer) -> None:
    jarvis = live_server.tokens["jarvis"]
    for path, body in (
        ("/v1/approvals", {"action": "launch_rockets", "rationale": "why not"}),
        ("/v1/approvals/authorize", {"action": "launch_rockets"}),
    ):
        error = _error(raw(live_server, "POST", path, jarvis, json=body), 422)
        assert error["message"].startswith("action: unknown action 'launch_rockets'; known")
        assert error["details"]["field"] == "action"
        assert "production_deploy" in error["details"]["known"]


@pytest.mark.parametrize("bad_id", [2**63, 2**64 + 5, 10**30, -1, 0])
def test_out_of_range_ids_are_a_422(live_server: LiveServer, bad_id: int) -> None:
    """Ids past a signed 64-bit integer (an OverflowError in the store before) or below 1."""
    op, jarvis = live_server.operator_token, live_server.tokens["jarvis"]
    requests: list[tuple[str, str, str, dict[str, Any] | None]] = [
        ("GET", f"/v1/messages/{bad_id}", op, None),
        ("GET", f"/v1/threads/{bad_id}", op, None),
        ("POST", f"/v1/deliveries/{bad_id}/ack", jarvis, {"receipt": "r"}),
        ("POST", f"/v1/incidents/{bad_id}/resolve", op, {"reason": "r"}),
        ("GET", f"/v1/approvals/{bad_id}", op, None),
        ("POST", f"/v1/tokens/{bad_id}/revoke", op, None),
        ("POST", "/v1/messages", jarvis, {"to": "gene", "reply_to": bad_id}),
        ("POST", "/v1/inbox/ack", jarvis, {"items": [{"id": bad_id, "receipt": "r"}]}),
        ("GET", f"/v1/audit?after={bad_id}", op, None),
    ]
    for method, path, token, body in requests:
        r = raw(live_server, method, path, token, json=body)
        if bad_id == 0 and path.startswith("/v1/audit"):
            assert r.status_code == 200  # after=0 means from the start
            continue
        assert _error(r, 422)["code"] == "invalid_request", (path, r.text)


def test_a_body_that_is_not_utf8_is_a_400(live_server: LiveServer) -> None:
    r = raw(
        live_server, "POST", "/v1/messages", live_server.tokens["jarvis"],
        headers={"Content-Type": "application/json"},
        content=b'{"to": "gene", "body": "caf\xe9"}',
    )  # fmt: skip
    error = _error(r, 400)
    assert error["code"] == "bad_encoding"
    assert error["message"] == (
        "request body is not UTF-8 (invalid byte at offset 27); send JSON as UTF-8"
    )


def test_an_oversize_body_is_a_413_however_it_is_sent(live_server: LiveServer) -> None:
    """Declared (Content-Length) or streamed (chunked, no length): 413 either way (400 before
    for chunked, from FastAPI's own handling of the error raised while reading)."""
    body = json.dumps({"to": "gene", "body": "x" * 100_000}).encode()

    def chunks() -> Iterator[bytes]:
        for i in range(0, len(body), 8192):
            yield body[i : i + 8192]

    jarvis = live_server.tokens["jarvis"]
    for content in (body, chunks()):
        r = raw(
            live_server, "POST", "/v1/messages", jarvis,
            headers={"Content-Type": "application/json"}, content=content,
        )  # fmt: skip
        error = _error(r, 413)
        assert error["code"] == "payload_too_large"
        assert error["details"] == {"limit": 64 * 1024}


# --- a valid OpenAPI document ------------------------------------------------------------------
def test_the_openapi_document_is_valid_and_says_what_the_server_accepts(
    live_server: LiveServer,
) -> None:
    document = httpx.get(live_server.url + "/openapi.json", timeout=10).json()
    validate(document)  # openapi-spec-validator: OpenAPI 3.1 and its JSON Schema dialect
    # Tuples come out as prefixItems, which tools read as `items: [...]` (invalid): none left.
    assert "prefixItems" not in json.dumps(document)
    verify = document["components"]["schemas"]["AuditVerifyResult"]["properties"]["findings"]
    assert verify["items"] == {"$ref": "#/components/schemas/AuditFinding"}
    # The fence header is an integer when sent; it was declared nullable but "null" was a 422.
    fence = next(
        p for p in document["paths"]["/v1/agents"]["get"]["parameters"]
        if p["name"] == "x-mcos-fence"
    )  # fmt: skip
    assert {k: fence["schema"][k] for k in ("type", "minimum", "maximum")} == {
        "type": "integer", "minimum": 0, "maximum": MAX_ID,
    }  # fmt: skip
    assert "anyOf" not in fence["schema"]
    jarvis = live_server.tokens["jarvis"]
    for value in ("0", str(MAX_ID)):
        r = raw(live_server, "GET", "/v1/agents", jarvis, headers={"x-mcos-fence": value})
        assert r.status_code == 200, r.text


def test_measuring_nesting_stays_linear_on_hostile_strings() -> None:
    """The guard's scan of a 256 KiB body of escaped quotes (no closing one) takes milliseconds:
    a string pattern that needs its closing quote retried from every quote (quadratic: minutes)."""
    import time

    for body in (b'"' + b'\\"' * 128_000, b'["' + b'\\"' * 128_000 + b"\\", b"[" * 256_000):
        started = time.perf_counter()
        bounded.text_depth(body)
        assert time.perf_counter() - started < 3, len(body)
    assert bounded.text_depth(b'["]", {"a\\"[": [[1]]}]') == 4
