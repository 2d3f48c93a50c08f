"""GET /v1/messages: filters, text search, states, paging and who may search — on each store."""

from __future__ import annotations

import pytest

from mcos.client import Calls
from mcos.domain.messages import Priority
from mcos.exceptions import McosError
from tests.api.conftest import LiveServer, raw


def test_filters_text_and_paging(live_server: LiveServer) -> None:
    with live_server.client("jarvis") as jarvis:
        first = jarvis.do(Calls.send("gene", "rotate the 50% of keys", subject="Keys_1"))
        jarvis.do(Calls.send("sentinel", "watch the disk", subject="disk", priority=Priority.HIGH))
        jarvis.do(Calls.send("gene", "SHIP it today", subject="ship"))
    with live_server.client("gene") as gene:
        got = gene.do(Calls.inbox(limit=1))
        gene.do(Calls.ack(got.deliveries[0].id, got.deliveries[0].receipt))
    with live_server.client() as op:
        everything = op.do(Calls.search_messages(sender="jarvis"))
        assert [m.subject for m in everything.messages] == ["ship", "disk", "Keys_1"]
        assert everything.next_before is None
        # Case-insensitive substring, % and _ taken literally.
        assert [m.subject for m in op.do(Calls.search_messages(q="ship")).messages] == ["ship"]
        assert [m.id for m in op.do(Calls.search_messages(q="50%")).messages] == [first.message.id]
        assert op.do(Calls.search_messages(q="5_%")).messages == []
        assert [m.subject for m in op.do(Calls.search_messages(q="s_1")).messages] == ["Keys_1"]
        high = op.do(Calls.search_messages(priority="high"))
        assert [m.to for m in high.messages] == ["sentinel"]
        to_gene = op.do(Calls.search_messages(to="gene"))
        states = {m.subject: m.state.value for m in to_gene.messages}
        assert states == {"Keys_1": "acked", "ship": "queued"}
        acked = op.do(Calls.search_messages(state="acked"))
        assert [m.subject for m in acked.messages] == ["Keys_1"]
        # Pages: newest first, next_before carries on where the page ended.
        page1 = op.do(Calls.search_messages(sender="jarvis", limit=2))
        assert [m.subject for m in page1.messages] == ["ship", "disk"]
        assert page1.next_before == page1.messages[-1].id
        page2 = op.do(Calls.search_messages(sender="jarvis", limit=2, before=page1.next_before))
        assert [m.subject for m in page2.messages] == ["Keys_1"]
        assert page2.next_before is None
        # Time range: bounds are inclusive, a time without a zone is UTC.
        at = first.message.created_at
        from_first = op.do(Calls.search_messages(sender="jarvis", since=at.isoformat()))
        assert len(from_first.messages) == 3
        upto = op.do(Calls.search_messages(until=at.replace(tzinfo=None).isoformat()))
        assert [m.id for m in upto.messages] == [first.message.id]
        assert op.do(Calls.search_messages(until="2000-01-01T00:00:00")).messages == []
        thread = op.do(Calls.search_messages(thread=first.message.thread_id))
        assert [m.id for m in thread.messages] == [first.message.id]
        kinds = op.do(Calls.search_messages(kind="directive"))
        assert kinds.messages == []


def test_bad_filters_are_refused_with_the_field_named(live_server: LiveServer) -> None:
    for bad in ({"kind": "shout"}, {"state": "lost"}, {"limit": 0}, {"since": "yesterday"}):
        r = raw(live_server, "GET", "/v1/messages", live_server.operator_token, params=bad)
        assert r.status_code == 422, bad
        assert next(iter(bad)) in r.text
    window = {"since": "2026-01-02T00:00:00Z", "until": "2026-01-01T00:00:00Z"}
    r = raw(live_server, "GET", "/v1/messages", live_server.operator_token, params=window)
    assert r.status_code == 422
    assert "since is after until" in r.text


def test_an_agent_searches_only_its_own_messages(live_server: LiveServer) -> None:
    with live_server.client("jarvis") as jarvis:
        jarvis.do(Calls.send("gene", "private", subject="p"))
    with live_server.client("sentinel") as sentinel:
        with pytest.raises(McosError, match="searches only its own"):
            sentinel.do(Calls.search_messages(q="private"))
        assert sentinel.do(Calls.search_messages(to="sentinel")).messages == []
    with live_server.client("gene") as gene:
        mine = gene.do(Calls.search_messages(to="gene"))
        assert [m.subject for m in mine.messages] == ["p"]
    with live_server.client() as op:
        refused = op.do(Calls.audit(action="message.search"))
    assert [r.outcome for r in refused] == ["refused"]
