"""Fault tests of the supervisor: real processes, real PostgreSQL, each bounded in time."""

from __future__ import annotations

import os
import signal
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from mcos.api_models import LeaseOut
from mcos.client import Calls
from tests.fakes.telegram_server import FakeTelegram
from tests.supervisor.conftest import FleetRig, RigFactory, agent_pids, wait_for
from tests.waiting import stays

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

AGENTS = """
[agents.jarvis]
role = "orchestrator"
host = "mini"
reports_to = "founder"

[agents.gene]
role = "ops"
host = "mini"
reports_to = "jarvis"
failover_hosts = ["vps"]

[agents.sentinel]
role = "security"
host = "mini"
reports_to = "jarvis"
"""


def _all_running(rig: FleetRig, names: tuple[str, ...] = ("jarvis", "gene", "sentinel")) -> bool:
    pids = agent_pids(rig.fleet)
    return all(len(pids.get(n, [])) == 1 for n in names)


def test_sigkill_of_the_supervisor_leaves_no_agent_behind(fleet_rig_factory: RigFactory) -> None:
    rig = fleet_rig_factory(AGENTS)
    sup = rig.up("mini")
    wait_for("three agents", lambda: _all_running(rig))
    sup.process.send_signal(signal.SIGKILL)
    sup.process.wait(5)
    killed_at = time.monotonic()
    wait_for("no agent process left", lambda: not agent_pids(rig.fleet), timeout=2)
    assert time.monotonic() - killed_at <= 2


def test_two_supervisors_never_run_one_agent_twice(fleet_rig_factory: RigFactory) -> None:
    rig = fleet_rig_factory(AGENTS)
    first = rig.up("mini")
    second = rig.up("mini")
    wait_for("three agents", lambda: _all_running(rig))
    # Both supervisors contend for every agent's lease; sample /proc across five lease TTLs.
    stays(
        "one live instance per agent",
        lambda: all(len(p) == 1 for p in agent_pids(rig.fleet).values()),
        duration=30,
        interval=0.15,
    )
    wait_for(
        "the second supervisor to say it stands back",
        lambda: "not running gene:" in first.output() + second.output(),
    )
    said = first.output() + second.output()
    assert "not running gene:" in said
    assert "gene is held by mini/" in said
    assert "not starting it here" in said


def test_a_killed_agent_comes_back_and_a_crash_loop_fails_with_a_p2(
    fleet_rig_factory: RigFactory,
) -> None:
    rig = fleet_rig_factory(AGENTS)
    sup = rig.up("mini")
    wait_for("three agents", lambda: _all_running(rig))
    for crash in range(6):
        pids = agent_pids(rig.fleet, "gene").get("gene", [])
        assert len(pids) == 1, f"crash {crash}: gene should be running once"
        os.kill(pids[0], signal.SIGKILL)
        if crash < 5:
            wait_for(
                f"gene restarted after crash {crash + 1}",
                lambda old=pids[0]: (
                    agent_pids(rig.fleet, "gene").get("gene", [old]) != [old]
                    and len(agent_pids(rig.fleet, "gene").get("gene", [])) == 1
                ),
                timeout=10,
            )
    wait_for("gene marked failed", lambda: rig.state("gene")[0] == "failed", timeout=10)
    assert "crashes" in rig.state("gene")[1]
    # No restart after failed: watch twice the restart backoff (1 s) plus an agent's start-up.
    stays("gene not restarted", lambda: agent_pids(rig.fleet, "gene") == {}, duration=3)
    assert "restart 5 in" in sup.output()
    # The P2 report reaches jarvis (gene reports to it), whose runtime takes it in.
    log = rig.fleet.parent / "agents" / "jarvis" / "memory" / f"{datetime.now(UTC):%Y-%m-%d}.md"
    wait_for(
        "jarvis to take in the P2 report",
        lambda: log.exists() and "(report): P2: gene failed (crash loop)" in log.read_text(),
        timeout=60,
    )


def test_a_paused_supervisor_is_fenced_out_by_the_failover_host(
    fleet_rig_factory: RigFactory,
) -> None:
    rig = fleet_rig_factory(AGENTS)
    mini = rig.up("mini")
    wait_for("three agents", lambda: _all_running(rig))
    vps = rig.up("vps")
    # The CLI alone takes seconds to start on a loaded machine: wait for vps to have tried.
    wait_for("vps to find gene held", lambda: "not running gene" in vps.output())

    def gene_lease() -> LeaseOut:
        with rig.client() as c:
            return next(x for x in c.do(Calls.leases()) if x.agent == "gene")

    # (Under load mini may have lost and retaken its lease meanwhile: compare with now.)
    (old_gene,) = agent_pids(rig.fleet, "gene")["gene"]
    held = gene_lease()
    assert held.holder.startswith("mini/")
    mini.process.send_signal(signal.SIGSTOP)  # mini stalls past the lease TTL (6 s)
    try:
        lease = wait_for(
            "vps to hold gene's lease",
            lambda: (lease := gene_lease()).holder.startswith("vps/") and lease,
            timeout=30,
        )
        assert lease.fence > held.fence  # a new token: the old instance is fenced out
        wait_for(
            "vps to run gene",
            lambda: any(p != old_gene for p in agent_pids(rig.fleet, "gene").get("gene", [])),
            timeout=30,
        )
    finally:
        mini.process.send_signal(signal.SIGCONT)
    # The old instance's next call is refused by fencing, or mini, finding its lease lost,
    # kills it: either way it is gone, and the new one remains.
    wait_for("the old gene to stop", lambda: not _alive(old_gene), timeout=40)
    assert len(agent_pids(rig.fleet, "gene")["gene"]) == 1
    # mini says so once it has seen it (the old gene may end itself first, fenced on its next
    # call, before the resumed mini has read its exit or renewed):
    wait_for(
        "mini to say its gene was fenced out or lost its lease",
        lambda: "lease lost" in mini.output() or "fenced" in mini.output(),
        timeout=30,
    )
    assert len(agent_pids(rig.fleet, "gene")["gene"]) == 1


def test_an_agent_stops_itself_when_its_stalled_supervisor_cannot_renew(
    fleet_rig_factory: RigFactory,
) -> None:
    """A supervisor starved (here: stopped) past its kill deadline cannot kill its agents: each
    stops itself at that deadline, before the lease can pass, so the failover host's instance
    never runs beside the old one (sampled every 100 ms)."""
    rig = fleet_rig_factory(AGENTS)
    mini = rig.up("mini")
    wait_for("three agents", lambda: _all_running(rig))
    vps = rig.up("vps")
    wait_for("vps to find gene held", lambda: "not running gene" in vps.output())
    (old_gene,) = agent_pids(rig.fleet, "gene")["gene"]
    seen: list[list[int]] = []

    def new_gene() -> bool:
        pids = agent_pids(rig.fleet, "gene").get("gene", [])
        seen.append(pids)
        return any(p != old_gene for p in pids)

    mini.process.send_signal(signal.SIGSTOP)  # it can neither renew (6 s TTL) nor kill
    try:
        wait_for("the old gene to stop itself", lambda: [new_gene()] and not _alive(old_gene))
        wait_for(
            "mini's other agents to stop themselves",
            lambda: not {"jarvis", "sentinel"} & set(agent_pids(rig.fleet)),
        )
        wait_for("vps to run gene", new_gene, timeout=40)
    finally:
        mini.process.send_signal(signal.SIGCONT)
    assert max(len(p) for p in seen) == 1, "two instances of gene ran at once"
    assert (
        "no renewal confirmed by the supervisor"
        in (rig.fleet.parent / "state" / "logs" / "gene.log").read_text()
    )
    # Back, mini finds gene held by vps and leaves it there; its own agents come back.
    wait_for("mini to restart jarvis and sentinel", lambda: _all_running(rig), timeout=60)
    assert len(agent_pids(rig.fleet, "gene")["gene"]) == 1


def test_an_empty_key_is_misconfigured_without_a_restart_loop(
    fleet_rig_factory,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MCOS_TEST_EMPTY_KEY", "")
    agents = AGENTS.replace(
        'role = "ops"\nhost = "mini"',
        'role = "ops"\nhost = "mini"\nmodel = { provider = "anthropic", id = "claude-sonnet-4-6", '
        'route = "direct" }\nkey = "env:MCOS_TEST_EMPTY_KEY"',
    )
    rig = fleet_rig_factory(agents)
    sup = rig.up("mini")
    # (An agent's start takes over 20 s on a 2-core machine beside a CPU-heavy process.)
    wait_for("gene misconfigured", lambda: rig.state("gene")[0] == "misconfigured", timeout=60)
    assert "env:MCOS_TEST_EMPTY_KEY is empty" in rig.state("gene")[1]
    wait_for(
        "the supervisor to say so",
        lambda: "gene is misconfigured (exit 78): not restarting it" in sup.output(),
    )
    # No restart: watch longer than the restart backoff (1 s) plus an agent's start-up.
    stays("gene not restarted", lambda: agent_pids(rig.fleet, "gene") == {}, duration=3)
    assert "gene is misconfigured (exit 78): not restarting it" in sup.output()
    assert "restart 1" not in sup.output()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_a_hung_agent_is_killed_and_restarted(fleet_rig_factory: RigFactory) -> None:
    rig = fleet_rig_factory(AGENTS)
    sup = rig.up("mini")
    wait_for("three agents", lambda: _all_running(rig))
    hung = agent_pids(rig.fleet, "gene")["gene"][0]
    os.kill(hung, signal.SIGSTOP)  # alive to the kernel, silent to its supervisor
    wait_for("the hung gene replaced", lambda: not _alive(hung), timeout=15)
    wait_for("a new gene", lambda: len(agent_pids(rig.fleet, "gene").get("gene", [])) == 1)
    assert "no liveness for 0:00:08: killing it (hung)" in sup.output()


def test_an_agent_cooling_down_is_restarted_only_after_its_cooldown(
    fleet_rig_factory: RigFactory,
) -> None:
    rig = fleet_rig_factory(AGENTS)
    sup = rig.up("mini")
    wait_for("three agents", lambda: _all_running(rig))
    # The runtime reports itself idle once started; set the cooldown after that, as a 429 would.
    wait_for("gene idle", lambda: rig.state("gene")[0] == "idle")
    (pid,) = wait_for("gene running", lambda: agent_pids(rig.fleet, "gene").get("gene"))
    from mcos.domain.agent_state import AgentStatus

    with rig.client() as c:
        # What the runtime reports after a 429 with retry-after: 6 s; then gene dies at once.
        until = c.do(Calls.time()).now + timedelta(seconds=6)
        c.do(Calls.report_state("gene", AgentStatus.COOLING_DOWN, "429", until=until))
    os.kill(pid, signal.SIGKILL)
    assert time.time() < until.timestamp() - 1  # killed well inside the cooldown

    def others() -> list[int]:
        return [p for p in agent_pids(rig.fleet, "gene").get("gene", []) if p != pid]

    # Not the 1 s backoff: no new instance while the cooldown lasts (watched, not read back from
    # psutil's create_time, which rests on the boot time in whole seconds: up to 1 s early).
    stays("no new gene inside its cooldown", lambda: not others(),
          duration=until.timestamp() - 0.3 - time.time())  # fmt: skip
    wait_for("gene back after its cooldown", others)
    assert "restart 1 in" in sup.output()


POLLER = """
import json, os, sys, time, urllib.error, urllib.request
url = sys.argv[1]
offset = 0
while True:
    try:
        with urllib.request.urlopen(f"{url}/getUpdates?timeout=1&offset={offset}", timeout=5) as r:
            for update in json.load(r)["result"]:
                offset = update["update_id"] + 1
    except urllib.error.HTTPError as e:
        print("poller got", e.code, flush=True)
    except OSError:
        time.sleep(0.2)
"""


def test_a_restarted_agent_leaves_no_old_child_poller(
    fleet_rig_factory: RigFactory, tmp_path: Path
) -> None:
    """The field report's incident: a restart must not leave the old child polling beside
    the new one (Telegram answers the overlap with 409)."""
    token = "123456:TEST-token"
    with FakeTelegram({token: "gene_bot"}) as telegram:
        script = tmp_path / "poller.py"
        script.write_text(POLLER)
        sidecar = (
            f'sidecars = [{{ name = "telegram", command = ["{sys.executable}", "{script}", '
            f'"{telegram.url}/bot{token}"] }}]'
        )
        rig = fleet_rig_factory(
            AGENTS.replace('role = "ops"\nhost = "mini"', f'role = "ops"\nhost = "mini"\n{sidecar}')
        )
        rig.up("mini")
        wait_for("three agents", lambda: _all_running(rig))
        wait_for("the poller polling", lambda: telegram.polls >= 2)
        for _ in range(3):
            old = agent_pids(rig.fleet, "gene")["gene"][0]
            os.kill(old, signal.SIGKILL)  # the agent only: its child poller is orphaned
            wait_for(
                "a new gene",
                lambda old=old: [p for p in agent_pids(rig.fleet, "gene").get("gene", [])
                                 if p != old] != [],
            )  # fmt: skip
            polls = telegram.polls
            wait_for("the new poller polling", lambda polls=polls: telegram.polls >= polls + 3)
        assert telegram.conflicts == 0, "two pollers of one bot token overlapped"


def test_one_telegram_poller_per_token_across_two_supervisors_and_restarts(
    fleet_rig_factory: RigFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """gene's Telegram channel under two supervisors, the agent SIGKILLed mid-poll: the token's
    lease keeps one poller at a time (no 409), and every message is taken into the bus. (More
    restarts and contenders: tests/channels/test_telegram.py, in-process.)"""
    token = "123456789:AAH-supervised_channel_token_0000000001"
    monkeypatch.setenv("MCOS_TEST_TG_TOKEN", token)
    with FakeTelegram({token: "gene_bot"}) as telegram:
        channel = (
            f'\n[channels.tg]\nkind = "telegram"\nagent = "gene"\n'
            f'token = "env:MCOS_TEST_TG_TOKEN"\napi_url = "{telegram.url}"\n'
        )
        rig = fleet_rig_factory(AGENTS + channel)
        rig.up("mini")
        rig.up("mini")
        wait_for("three agents", lambda: _all_running(rig))
        for round_ in range(2):
            telegram.push(token, f"message {round_}", chat_id=77)
            wait_for("the message taken", lambda: not telegram.bots[token].updates, timeout=60)
            if round_ == 1:
                break
            old = agent_pids(rig.fleet, "gene")["gene"][0]
            os.kill(old, signal.SIGKILL)
            wait_for(
                "a new gene",
                lambda old=old: [p for p in agent_pids(rig.fleet, "gene").get("gene", [])
                                 if p != old] != [],
                timeout=60,
            )  # fmt: skip
        assert telegram.conflicts == 0, "two pollers of one bot token overlapped"
        with rig.client() as operator:
            grants = operator.do(Calls.audit(action="lease.granted"))
        tg = [g for g in grants if g.targets.get("channel") == "tg"]
        # The restarted instance holds the agent's fence, so it took the channel back at once.
        assert tg
        assert all("/fence-" in g.detail["holder"] for g in tg)
