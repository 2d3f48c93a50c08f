"""The lean send, claim and ack routes (mcos.server.lean) answer exactly as the documented
FastAPI routes do: every request is sent twice, once as it comes and once with the lean routes
stepped aside, and the two answers must match — the hostile and malformed ones included, which
the lean routes hand to the documented route untouched."""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.types import Receive, Scope, Send

from mcos.domain.severity import SendLimits
from mcos.domain.tokens import PrincipalKind
from mcos.server import ServerSettings, create_app
from mcos.server.lean import DECLINED
from mcos.server.routes import messages, tokens
from mcos.store import make_store
from tests.store.conftest import DIRECTORY, FAST_POLICY, migrated_database

_VOLATILE = re.compile(r"\d{4}-\d\d-\d\dT[0-9:.]+(Z|[+-]\d\d:\d\d)?")


class Recorder:
    """The app, noting whether the last request was answered by a lean route."""

    def __init__(self, app: FastAPI, documented_only: bool) -> None:
        self.app = app
        self.documented_only = documented_only
        self.lean_answered = False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.documented_only:
            scope[DECLINED] = True
        await self.app(scope, receive, send)
        self.lean_answered = (
            scope.get("type") == "http"
            and scope.get("route") is not None
            and (not scope.get(DECLINED))
        )


@dataclass
class Pair:
    """Two clients of one Mission Control: through the lean routes, and around them."""

    lean: httpx.AsyncClient
    documented: httpx.AsyncClient
    recorder: Recorder
    tokens: dict[str, str]

    async def both(
        self, method: str, path: str, *, agent: str | None = "jarvis", **kw: Any
    ) -> tuple[httpx.Response, httpx.Response]:
        """The same request, once each way."""
        headers = dict(kw.pop("headers", {}))
        if agent is not None:
            headers.setdefault("authorization", f"Bearer {self.tokens[agent]}")
        first = await self.lean.request(method, path, headers=headers, **kw)
        second = await self.documented.request(method, path, headers=headers, **kw)
        return first, second


def normalised(response: httpx.Response) -> tuple[int, object]:
    """Status and body, with what differs between two sends (ids, times, receipts) masked."""
    if not response.content:
        return response.status_code, None

    def mask(value: object, key: str = "") -> object:
        if isinstance(value, dict):
            return {k: mask(v, k) for k, v in value.items()}
        if isinstance(value, list):
            return [mask(v) for v in value]
        if key in {"id", "thread_id", "receipt", "message_id"} or (
            isinstance(value, str) and _VOLATILE.fullmatch(value)
        ):
            return "*"
        return value

    try:
        body = response.json()
    except ValueError:
        return response.status_code, response.text
    return response.status_code, mask(body)


def same(pair: tuple[httpx.Response, httpx.Response]) -> None:
    lean, documented = pair
    assert normalised(lean) == normalised(documented)
    assert sorted(lean.headers.multi_items()) == sorted(documented.headers.multi_items())


@pytest.fixture
async def pair(tmp_path: Path) -> AsyncIterator[Pair]:
    url = migrated_database("sqlite", tmp_path)
    settings_ = ServerSettings(
        token_key=secrets.token_bytes(32),
        directory=DIRECTORY,
        state_dir=str(tmp_path / "state"),
        max_body_bytes=64 * 1024,
        human_roles={"founder": "founder"},
        # Every request is sent twice: the per-pair and fan-out limits would trip half-way.
        send_limits=SendLimits(fanout_max=10_000, pair_max=10_000),
    )
    app = create_app(make_store(url, FAST_POLICY), settings_)
    async with app.router.lifespan_context(app):
        mc = app.state.mc
        issued = {
            name: (await tokens.issue(mc, "system", PrincipalKind.AGENT, name, "test")).token
            for name in ("jarvis", "gene", "sentinel")
        }
        issued["host"] = (await tokens.issue(mc, "system", PrincipalKind.HOST, "mini")).token
        issued["founder"] = (
            await tokens.issue(mc, "system", PrincipalKind.OPERATOR, "founder")
        ).token
        recorder = Recorder(app, documented_only=False)
        base = "http://mc"
        async with (
            httpx.AsyncClient(transport=httpx.ASGITransport(app=recorder), base_url=base) as lean,
            httpx.AsyncClient(
                transport=httpx.ASGITransport(app=Recorder(app, documented_only=True)),
                base_url=base,
            ) as documented,
        ):
            yield Pair(lean, documented, recorder, issued)


async def _claimed(pair: Pair, agent: str) -> list[dict[str, Any]]:
    r = await pair.lean.get(
        "/v1/inbox",
        params={"limit": 500},
        headers={"authorization": f"Bearer {pair.tokens[agent]}"},
    )
    assert r.status_code == 200, r.text
    deliveries: list[dict[str, Any]] = r.json()["deliveries"]
    return deliveries


class TestPlainRequests:
    """What agents send every time is answered by the lean routes, as the documented ones do."""

    async def test_send_claim_ack(self, pair: Pair) -> None:
        """A send, a batch, claims and both acks: the same answers, the lean route answering."""
        sent = await pair.both("POST", "/v1/messages", json={"to": "gene", "body": "hi"})
        assert pair.recorder.lean_answered
        same(sent)
        assert sent[0].status_code == 201
        batch = {"messages": [{"to": "gene", "body": "a"}, {"to": "sentinel", "body": "b"}]}
        same(await pair.both("POST", "/v1/messages/batch", json=batch))
        assert pair.recorder.lean_answered
        claims = await pair.both("GET", "/v1/inbox", agent="gene", params={"limit": 1})
        assert pair.recorder.lean_answered
        same(claims)
        [one], [two] = (c.json()["deliveries"] for c in claims)
        acks = await pair.both(
            "POST", "/v1/inbox/ack", agent="gene", json={"items": [{"id": 123456, "receipt": "x"}]}
        )
        same(acks)  # an unknown delivery: both 404
        assert acks[0].status_code == 404
        lean_ack = await pair.lean.post(
            "/v1/inbox/ack",
            json={"items": [{"id": one["id"], "receipt": one["receipt"]}]},
            headers={"authorization": f"Bearer {pair.tokens['gene']}"},
        )
        documented_ack = await pair.documented.post(
            "/v1/inbox/ack",
            json={"items": [{"id": two["id"], "receipt": two["receipt"]}]},
            headers={"authorization": f"Bearer {pair.tokens['gene']}"},
        )
        same((lean_ack, documented_ack))
        assert lean_ack.json() == {"acked": 1}
        [three, four] = await _claimed(pair, "gene")
        single = [
            await client.post(
                f"/v1/deliveries/{d['id']}/ack",
                json={"receipt": d["receipt"]},
                headers={"authorization": f"Bearer {pair.tokens['gene']}"},
            )
            for client, d in ((pair.lean, three), (pair.documented, four))
        ]
        same((single[0], single[1]))
        assert single[0].status_code == 204
        assert await _claimed(pair, "gene") == []

    async def test_repeat_of_an_idempotency_key(self, pair: Pair) -> None:
        """A repeat answers 200 with the original, a different body under the key 409."""
        first = {"to": "gene", "body": "once", "idempotency_key": "k1"}
        await pair.lean.post(
            "/v1/messages", json=first, headers={"authorization": f"Bearer {pair.tokens['jarvis']}"}
        )
        repeat = await pair.both("POST", "/v1/messages", json=first)
        same(repeat)
        assert repeat[0].status_code == 200
        conflict = await pair.both("POST", "/v1/messages", json=first | {"body": "other"})
        same(conflict)
        assert conflict[0].status_code == 409


def _nested(depth: int) -> object:
    """A JSON value nested ``depth`` levels (past the parse limit of 64)."""
    value: object = 1
    for _ in range(depth):
        value = {"a": value}
    return value


JSON = {"content-type": "application/json"}
SEND = {"to": "gene", "body": "x"}
RAW = json.dumps(SEND).encode()
JSON_UTF8 = "application/json; charset=utf-8"
ITEM = {"id": 1, "receipt": "r"}
HOSTILE: list[tuple[str, str, dict[str, Any]]] = [
    ("POST", "/v1/messages", {"content": b"{", "headers": JSON}),
    ("POST", "/v1/messages", {"content": b"", "headers": JSON}),
    ("POST", "/v1/messages", {"content": b"\xff\xfe", "headers": JSON}),
    ("POST", "/v1/messages", {"content": RAW}),
    ("POST", "/v1/messages", {"content": RAW, "headers": {"content-type": "text/plain"}}),
    ("POST", "/v1/messages", {"content": RAW, "headers": {"content-type": JSON_UTF8}}),
    ("POST", "/v1/messages", {"json": [1, 2]}),
    ("POST", "/v1/messages", {"json": None}),
    ("POST", "/v1/messages", {"json": {"to": "gene"}}),
    ("POST", "/v1/messages", {"json": SEND | {"extra": 1}}),
    ("POST", "/v1/messages", {"json": SEND | {"to": "nobody"}}),
    ("POST", "/v1/messages", {"json": SEND | {"sender": "gene"}}),
    ("POST", "/v1/messages", {"json": SEND, "headers": {"x-mcos-fence": "abc"}}),
    ("POST", "/v1/messages", {"json": SEND, "headers": {"x-mcos-fence": "-1"}}),
    ("POST", "/v1/messages", {"json": SEND, "headers": {"x-mcos-fence": "9" * 20}}),
    ("POST", "/v1/messages", {"json": SEND, "headers": {"x-mcos-fence": "007"}}),
    ("POST", "/v1/messages", {"json": SEND, "headers": {"x-mcos-fence": "5"}}),
    ("POST", "/v1/messages", {"json": SEND, "headers": {"authorization": "Bearer nope"}}),
    ("POST", "/v1/messages", {"json": SEND, "headers": {"authorization": "Basic abc"}}),
    ("POST", "/v1/messages", {"json": {"to": "gene"}, "headers": {"authorization": "Bearer x"}}),
    ("PUT", "/v1/messages", {"json": SEND}),
    ("POST", "/v1/messages/batch", {"json": {"messages": []}}),
    ("POST", "/v1/messages/batch", {"json": {"messages": [SEND, SEND | {"to": "nobody"}]}}),
    ("GET", "/v1/inbox", {"params": {"limit": "0"}}),
    ("GET", "/v1/inbox", {"params": {"limit": "501"}}),
    ("GET", "/v1/inbox", {"params": {"limit": "abc"}}),
    ("GET", "/v1/inbox", {"params": [("limit", "1"), ("limit", "2")]}),
    ("GET", "/v1/inbox", {"params": {"wait": "-1"}}),
    ("GET", "/v1/inbox", {"params": {"wait": "31"}}),
    ("GET", "/v1/inbox", {"params": {"wait": "1e-1"}}),
    ("GET", "/v1/inbox", {"params": {"visibility": "0.5"}}),
    ("GET", "/v1/inbox", {"params": {"gather": "6"}}),
    ("GET", "/v1/inbox", {"params": {"gather": "0.05", "limit": "2"}}),
    ("GET", "/v1/inbox", {"params": {"inbox": "gene"}}),
    ("GET", "/v1/inbox", {"params": {"inbox": "jarvis", "limit": "3", "wait": "0"}}),
    ("GET", "/v1/inbox", {"headers": {"x-mcos-fence": "x"}}),
    ("HEAD", "/v1/inbox", {}),
    ("POST", "/v1/inbox/ack", {"json": {"items": []}}),
    ("POST", "/v1/inbox/ack", {"json": {"items": [{"id": 1}]}}),
    ("POST", "/v1/inbox/ack", {"json": {"items": [ITEM]}, "params": {"inbox": "gene"}}),
    ("POST", "/v1/deliveries/0/ack", {"json": {"receipt": "r"}}),
    ("POST", "/v1/deliveries/abc/ack", {"json": {"receipt": "r"}}),
    ("POST", "/v1/deliveries/99999999999999999999/ack", {"json": {"receipt": "r"}}),
    ("POST", "/v1/deliveries/123/ack", {"json": {"receipt": "r"}}),
    ("POST", "/v1/deliveries/123/ack", {"json": {}}),
    # What the body limit and the JSON guard refuse, which the door must leave to them:
    ("POST", "/v1/messages", {"json": SEND | {"body": "x" * 70_000}}),
    ("POST", "/v1/messages", {"content": RAW, "headers": JSON | {"content-length": "9" * 12}}),
    ("POST", "/v1/messages", {"json": SEND | {"meta": _nested(80)}}),
    ("POST", "/v1/messages", {"content": RAW.decode().encode("utf-16"), "headers": JSON}),
    ("POST", "/v1/inbox/ack", {"json": {"items": [ITEM], "pad": _nested(80)}}),
]  # fmt: skip


class TestEveryOtherRequest:
    """Malformed, invalid and refused requests get the documented routes' answers."""

    @pytest.mark.parametrize(("method", "path", "kw"), HOSTILE)
    async def test_same_answer(
        self, pair: Pair, method: str, path: str, kw: dict[str, Any]
    ) -> None:
        """Status, body and content type equal the documented route's."""
        same(await pair.both(method, path, **kw))

    @pytest.mark.parametrize("who", ["host", "founder"])
    @pytest.mark.parametrize(
        ("method", "path", "kw"),
        [
            ("POST", "/v1/messages", {"json": SEND}),
            ("GET", "/v1/inbox", {}),
            ("GET", "/v1/inbox", {"params": {"inbox": "gene"}}),
            ("POST", "/v1/inbox/ack", {"json": {"items": [ITEM]}}),
            ("POST", "/v1/deliveries/5/ack", {"json": {"receipt": "r"}}),
        ],
    )
    async def test_hosts_and_operators(
        self, pair: Pair, who: str, method: str, path: str, kw: dict[str, Any]
    ) -> None:
        """A host token is refused off its routes, an operator must name the inbox: the same
        answers either way."""
        same(await pair.both(method, path, agent=who, **kw))

    async def test_an_unexpected_error(
        self, pair: Pair, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
    ) -> None:
        """A failure nobody expected answers the same 500 (with the security headers) either
        way, is logged, and is raised on to the server, as Starlette's error page does."""

        async def broken(*args: object) -> object:
            raise RuntimeError("a bug in the send")

        monkeypatch.setattr(messages, "send_message", broken)
        answers = []
        for recorder in (pair.recorder, Recorder(pair.recorder.app, documented_only=True)):
            transport = httpx.ASGITransport(app=recorder, raise_app_exceptions=False)
            async with httpx.AsyncClient(transport=transport, base_url="http://mc") as client:
                answers.append(
                    await client.post(
                        "/v1/messages",
                        json=SEND,
                        headers={"authorization": f"Bearer {pair.tokens['jarvis']}"},
                    )
                )
        same((answers[0], answers[1]))
        assert answers[0].status_code == 500
        assert answers[0].json()["error"]["code"] == "internal"
        assert "x-content-type-options" in answers[0].headers
        assert caplog.text.count("a bug in the send") == 2  # one log line per request

    async def test_no_token(self, pair: Pair) -> None:
        """Without a token, 401 either way."""
        answers = await pair.both(
            "POST", "/v1/messages", agent=None, json={"to": "gene", "body": "x"}
        )
        same(answers)
        assert answers[0].status_code == 401

    @settings(
        max_examples=60,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture],
    )
    @given(
        body=st.dictionaries(
            st.sampled_from(
                ["to", "body", "subject", "kind", "priority", "reply_to", "meta", "ttl_seconds",
                 "expires_at", "sender", "extra"]
            ),
            st.one_of(
                st.none(),
                st.booleans(),
                st.integers(min_value=-(2**64), max_value=2**64),
                st.floats(allow_nan=False),
                st.text(max_size=12),
                st.sampled_from(["gene", "jarvis", "ops", "founder", "note", "urgent", "high",
                                 "normal", "directive", "2030-01-01T00:00:00Z"]),
                st.dictionaries(st.text(max_size=4), st.text(max_size=4), max_size=2),
            ),
            max_size=6,
        )
    )  # fmt: skip
    async def test_any_send_body(self, pair: Pair, body: dict[str, object]) -> None:
        """Any JSON object as a send: the same status and answer either way."""
        content = json.dumps(body)
        lean, documented = await pair.both("POST", "/v1/messages", content=content, headers=JSON)
        same((lean, documented))
