"""`mcos run` with the business template, as a new user runs it: every agent up, a directive
from the orchestrator handled and logged, Ctrl-C stops everything and leaves nothing behind."""

from __future__ import annotations

import os
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest

from mcos.api_models import ApprovalOut
from mcos.client import Calls, Client
from mcos.domain.messages import MessageKind, Priority
from mcos.domain.tokens import PrincipalKind
from tests.e2e.cli_helpers import mcos, mcos_json
from tests.e2e.conftest import BusinessFleet
from tests.waiting import wait_until


def _wait(what: str, check: Callable[[], object], timeout: float = 60) -> None:
    wait_until(what, check, timeout=timeout, interval=0.2)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    status = Path(f"/proc/{pid}/stat")
    return not (status.exists() and status.read_text().split()[2] == "Z")


@pytest.mark.slow
@pytest.mark.xdist_group("business-fleet")  # one worker: the fleet is shared (e2e/conftest.py)
@pytest.mark.timeout(300)  # 23 agents on two hosts; every wait has its own deadline
def test_mcos_run_business_fleet_handles_a_directive_and_stops_cleanly(
    business_fleet_to_stop: BusinessFleet,
) -> None:
    fleet = business_fleet_to_stop  # every agent idle (tests/e2e/conftest.py)
    home, port = fleet.home, fleet.port
    env = {"MCOS_FLEET": str(fleet.fleet_file), "COLUMNS": "200"}
    today = datetime.now(UTC).strftime("%Y-%m-%d")
    elon_log = home / "agents" / "elon" / "memory" / f"{today}.md"
    try:
        agents = mcos_json("status", env=env)["agents"]
        assert len(agents) == 23, agents
        assert all(a["state"] == "idle" for a in agents), agents
        status = mcos("status", env=env).stdout
        assert "jarvis" in status
        assert "offline model" in status
        operator_token = fleet.operator_token()
        with Client(fleet.url, operator_token) as operator:
            jarvis_token = operator.do(Calls.create_token(PrincipalKind.AGENT, "jarvis")).token
            # Supervised, jarvis writes under its instance's fence (409 fenced without it).
            fence = next(x.fence for x in operator.do(Calls.leases()) if x.agent == "jarvis")
        with Client(fleet.url, jarvis_token, fence=fence) as jarvis:
            sent = jarvis.do(
                Calls.send("elon", "Ship the billing fix before Friday.",
                           subject="Billing fix", kind=MessageKind.DIRECTIVE)
            )  # fmt: skip

            def answered() -> bool:
                thread = jarvis.do(Calls.thread(sent.message.thread_id))
                return any(m.sender == "elon" for m in thread)

            _wait("elon's reply in the directive's thread", answered)
        log = elon_log.read_text()
        assert f"message {sent.message.id} from jarvis (directive): Billing fix" in log
        children = _descendants(fleet.run.pid)
        assert len(children) >= 26  # the server, a fork server per host (mini, vps), 23 agents
        _rehearse_revenue_team(home, port, operator_token)
    finally:
        # (The fleet may be shared with tests that ran before: judge what the stop added.)
        output_before = len(fleet.output())
        stops_before = elon_log.read_text().count("stopped") if elon_log.exists() else 0
        code = fleet.interrupt()
    output = fleet.output()
    assert code == 0, output
    assert "stopped" in output[output_before:], output[output_before:]
    for pid in children:
        assert not _alive(pid), f"process {pid} outlived mcos run"
    assert elon_log.read_text().count("stopped") > stops_before


def _descendants(pid: int) -> list[int]:
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            parents[int(entry.name)] = int(fields[1])
    found: list[int] = []
    frontier = [pid]
    while frontier:
        parent = frontier.pop()
        kids = [p for p, pp in parents.items() if pp == parent]
        found += kids
        frontier += kids
    return found


REVENUE_CHANNELS = {
    "leads": "vault",
    "community": "scout",
    "invoices": "ledger",
    "blog": "claw",
    "signups": "pulse",
}


def _posts(home: Path, channel: str) -> list[str]:
    outbox = home / "channels" / channel / "outbox" / "posts.jsonl"
    return outbox.read_text().splitlines() if outbox.exists() else []


def _rehearse_revenue_team(home: Path, port: int, operator_token: str) -> None:
    """The revenue team on its mock channels: a file in each inbox is answered in its outbox —
    from a turn holding the customer's untrusted text, only once the founder approved exactly
    that answer; an urgent message to the founder pages the founder's folder, acknowledged by
    a file."""
    for channel, agent in REVENUE_CHANNELS.items():
        inbox = home / "channels" / channel / "inbox"
        (inbox / "1.txt").write_text(f"From: customer-of-{agent}\nHello {agent}, a question.")
    with Client(f"http://127.0.0.1:{port}", operator_token) as operator:

        def asked() -> list[ApprovalOut]:
            pending = operator.do(Calls.approvals(state="pending"))
            return [a for a in pending if a.action == "post_to_channel"]

        _wait("each answer asked for", lambda: len(asked()) == len(REVENUE_CHANNELS), timeout=60)
        assert all(_posts(home, c) == [] for c in REVENUE_CHANNELS)  # nothing out unapproved
        for request in asked():
            assert request.requester == f"agent:{REVENUE_CHANNELS[request.payload['channel']]}"
            operator.do(Calls.vote(request.id, "approve", "a fine answer"))
    for channel, agent in REVENUE_CHANNELS.items():
        _wait(f"{agent}'s answer on {channel}", lambda c=channel: _posts(home, c), timeout=60)
        assert "Acknowledged" in _posts(home, channel)[0]
        assert f"customer-of-{agent}" in _posts(home, channel)[0]
    with Client(f"http://127.0.0.1:{port}", operator_token) as operator:
        for channel, agent in REVENUE_CHANNELS.items():  # the state shows who receives
            assert operator.do(Calls.agent(agent)).state_info["channels"] == {channel: True}
        vault = operator.do(Calls.create_token(PrincipalKind.AGENT, "vault")).token
        fence = next(x.fence for x in operator.do(Calls.leases()) if x.agent == "vault")
        with Client(f"http://127.0.0.1:{port}", vault, fence=fence) as client:
            client.do(
                Calls.send("founder", "A buyer wants a call today.", subject="hot lead",
                           priority=Priority.URGENT)
            )  # fmt: skip

        def paged() -> list[str]:  # (the answers' approval requests paged the founder too)
            return [p for p in _posts(home, "founder-pager") if "hot lead" in p]

        _wait("the founder's page", paged)
        (page,) = [p for p in operator.do(Calls.pages(human="founder")) if "hot lead" in p.subject]
        assert "[URGENT] from vault: hot lead" in paged()[0]
        pager_inbox = home / "channels" / "founder-pager" / "inbox"
        (pager_inbox / "ack.txt").write_text(f"From: founder\nack:{page.id}")
        _wait(
            "the page acknowledged",
            lambda: any(
                p.id == page.id and p.state == "acked"
                for p in operator.do(Calls.pages(human="founder"))
            ),
        )
