"""An agent process that cannot start says why, shows as misconfigured, and exits 78."""

from __future__ import annotations

import pytest

from mcos.client import Calls
from mcos.config.models import Fleet
from mcos.exceptions import EX_CONFIG
from mcos.runtime.process import run_agent
from tests.runtime.conftest import RigFactory

DIRECT = 'model = { provider = "anthropic", id = "claude-sonnet-4-6", route = "direct" }\n'
"""Gene calls Anthropic itself, with its own key: it resolves the key at start."""


def _pointed_at(fleet: Fleet, url: str) -> Fleet:
    return fleet.model_copy(update={"server": fleet.server.model_copy(update={"url": url})})


async def test_a_missing_key_is_misconfigured_not_running(rig_factory: RigFactory) -> None:
    """Direct mode: the agent resolves its key at start, and stops there without it."""
    rig = rig_factory({"gene": DIRECT + 'key = "env:MCOS_TEST_GENE_KEY_THAT_IS_NOT_SET"'})
    fleet = _pointed_at(rig.fleet, rig.server.url)
    code = await run_agent(fleet, "gene", rig.server.tokens["gene"])
    assert code == EX_CONFIG
    shown = await rig.client().do(Calls.agent("gene"))
    assert shown.state == "misconfigured"
    assert "MCOS_TEST_GENE_KEY_THAT_IS_NOT_SET is not set" in shown.state_detail
    assert "agents.gene" in shown.state_detail


async def test_an_empty_key_is_misconfigured(
    rig_factory: RigFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MCOS_TEST_GENE_KEY", "   ")
    rig = rig_factory({"gene": DIRECT + 'key = "env:MCOS_TEST_GENE_KEY"'})
    code = await run_agent(
        _pointed_at(rig.fleet, rig.server.url), "gene", rig.server.tokens["gene"]
    )
    assert code == EX_CONFIG
    shown = await rig.client().do(Calls.agent("gene"))
    assert shown.state == "misconfigured"
    assert "env:MCOS_TEST_GENE_KEY is empty" in shown.state_detail


async def test_a_channel_without_its_secret_is_misconfigured(rig_factory: RigFactory) -> None:
    """A channel's token reference that resolves to nothing stops the agent with the reason
    (and no restart loop), never with a traceback."""
    rig = rig_factory(
        tail='[channels.tg]\nkind = "telegram"\nagent = "gene"\n'
        'token = "env:MCOS_TEST_TG_TOKEN_NOT_SET"\n'
    )
    code = await run_agent(
        _pointed_at(rig.fleet, rig.server.url), "gene", rig.server.tokens["gene"]
    )
    assert code == EX_CONFIG
    shown = await rig.client().do(Calls.agent("gene"))
    assert shown.state == "misconfigured"
    assert "channels.tg" in shown.state_detail
    assert "MCOS_TEST_TG_TOKEN_NOT_SET is not set" in shown.state_detail
