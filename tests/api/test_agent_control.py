"""Pause, resume and restart over /v1: operators only; restart requests as supervisors read them."""

from __future__ import annotations

from pathlib import Path
from unittest.mock import ANY

import pytest

from mcos.client import Calls
from mcos.domain.agent_state import AgentStatus
from mcos.domain.tokens import PrincipalKind
from mcos.exceptions import McosError
from tests.api.conftest import serve_on


def test_only_operators_act_and_a_host_reads_only_its_agents_requests(tmp_path: Path) -> None:
    hosts = {"mini": frozenset({"gene"}), "vps": frozenset({"sentinel"})}
    with serve_on("sqlite", tmp_path, host_agents=hosts) as (server, _):
        with server.client() as op:
            mini = op.do(Calls.create_token(PrincipalKind.HOST, "mini")).token
        with server.client(token=mini) as host:
            start = host.do(Calls.restart_requests())
            assert start.requests == []
        with server.client("gene") as gene:
            for call in (Calls.pause_agent("sentinel"), Calls.restart_agent("sentinel")):
                with pytest.raises(McosError, match="for operators only"):
                    gene.do(call)
        with server.client() as op:
            asked = op.do(Calls.restart_agent("gene", "new SOUL.md"))
            op.do(Calls.restart_agent("sentinel"))
            with pytest.raises(McosError, match="no agent 'nobody'"):
                op.do(Calls.restart_agent("nobody"))
            with pytest.raises(McosError, match="gene is not paused"):
                op.do(Calls.resume_agent("gene"))
            paused = op.do(Calls.pause_agent("gene", "loops"))
            assert paused.state == AgentStatus.PAUSED.value
            assert paused.state_detail == "paused by founder: loops"
        with server.client(token=mini) as host:
            seen = host.do(Calls.restart_requests(start.cursor))
            assert [(r.id, r.agent, r.by, r.reason) for r in seen.requests] == [
                (asked.id, "gene", "founder", "new SOUL.md")
            ]  # not sentinel's: host vps runs it
            assert host.do(Calls.restart_requests(seen.cursor)).requests == []
            host.do(Calls.restart_done(asked.id, "gene", 4242))
            with pytest.raises(McosError, match="host mini may act only"):
                host.do(Calls.restart_done(asked.id, "sentinel", 1))
            # The supervisor's own report does not lift the pause.
            still = host.do(Calls.report_state("gene", AgentStatus.IDLE, "started"))
            assert still.state == AgentStatus.PAUSED.value
        with server.client() as op:
            done = op.do(Calls.audit(action="agent.restarted"))
            assert [(r.actor, r.outcome, r.targets, r.detail) for r in done] == [
                ("host:mini", "ok", {"agent": "gene", "request": asked.id}, {"pid": 4242}),
                ("host:mini", "refused", {"agent": "sentinel"}, {"rule": ANY}),
            ]
            assert op.do(Calls.resume_agent("gene")).state == AgentStatus.IDLE.value
