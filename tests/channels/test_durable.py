"""Channels lose nothing: the agent's durable spool and outbox through SIGKILLs and outages.

The agent's channel host runs in its own process (``durable_proc.py``, the same
``AgentChannels`` the runtime uses) against the local Telegram and Discord fakes driven by the
real aiogram and discord.py, and a real Mission Control on loopback that the tests stop and
start again on the same port and database.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import signal
import sqlite3
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn

from mcos.api_models import ApprovalOut
from mcos.channels.base import account_key
from mcos.client import Calls, Client
from mcos.config import load_fleet
from mcos.domain.tokens import PrincipalKind
from mcos.server import ServerSettings, create_app
from mcos.server.context import ChannelBinding
from mcos.store import make_store
from tests.api.conftest import PromptServer, free_port, migrate
from tests.fakes.discord_server import FakeDiscord
from tests.fakes.telegram_server import FakeTelegram
from tests.store.conftest import DIRECTORY, FAST_POLICY
from tests.supervisor.conftest import SUPERVISOR, agent_pids, fleet_rig_factory  # noqa: F401 (the fixture)
from tests.supervisor.conftest import RigFactory as FleetRigFactory
from tests.supervisor.test_faults import AGENTS as FLEET_AGENTS
from tests.waiting import wait_until

ROOT = Path(__file__).resolve().parents[2]
TG = "123456789:AAH-durable_outbox_token_000000000001"
DC = "MTIzNDU2Nzg5.durable-bot.token-that-must-never-be-written"
OPS = "100000000000000001"
CHAT = "77"


def wait_for(
    what: str, condition: Callable[[], bool], timeout: float = 60.0, *, required: bool = True
) -> bool:
    """Wait for observable state (``wait_until``), failing with ``what`` after ``timeout`` (or,
    when not ``required``, answering False)."""
    if not required:
        try:
            wait_until(what, condition, timeout)
        except pytest.fail.Exception:
            return False
        return True
    wait_until(what, condition, timeout)
    return True


class MissionControl:
    """Mission Control on a fixed loopback port, stopped and started again over one store."""

    def __init__(self, tmp_path: Path) -> None:
        self.url = f"sqlite:///{tmp_path}/mcos.db"
        asyncio.run(migrate(self.url))
        self.settings = ServerSettings(
            token_key=secrets.token_bytes(32),
            directory=DIRECTORY,
            bootstrap_operator="founder",
            state_dir=str(tmp_path / "state"),
            poll_fallback_seconds=1.0,
            human_roles={"founder": "founder"},
            channels={
                "tg": ChannelBinding("telegram", "gene", account_key("telegram", TG)),
                "dc": ChannelBinding("discord", "gene", account_key("discord", DC)),
                "mock": ChannelBinding("mock", "gene"),
            },
        )
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.server: uvicorn.Server | None = None
        self.thread: threading.Thread | None = None
        self.start()
        operator = (tmp_path / "state" / "operator.token").read_text().strip()
        self.operator = Client(self.base, operator)
        self.gene = self.operator.do(Calls.create_token(PrincipalKind.AGENT, "gene")).token

    def start(self) -> None:
        app = create_app(make_store(self.url, FAST_POLICY), self.settings)
        config = uvicorn.Config(
            app, host="127.0.0.1", port=self.port, log_level="warning", access_log=False
        )
        self.server = PromptServer(config)
        self.thread = threading.Thread(target=self.server.run, name="uvicorn", daemon=True)
        self.thread.start()
        server, thread = self.server, self.thread
        wait_for("Mission Control up", lambda: server.started or not thread.is_alive(), 30)
        assert server.started, "Mission Control did not start"

    def stop(self) -> None:
        assert self.server is not None
        assert self.thread is not None
        self.server.should_exit = True
        self.thread.join(30)
        assert not self.thread.is_alive()

    def channel_items(self) -> Counter[str]:
        """Every channel item stored for gene, by ``channel:ref`` (as gene claims them)."""
        found: Counter[str] = Counter()
        with Client(self.base, self.gene) as gene:
            while deliveries := gene.do(Calls.inbox(limit=50, visibility=600)).deliveries:
                for d in deliveries:
                    found[f"{d.message.meta['channel']}:{d.message.body}"] += 1
        return found


@pytest.fixture
def mission_control(tmp_path: Path) -> Iterator[MissionControl]:
    mc = MissionControl(tmp_path)
    try:
        yield mc
    finally:
        with contextlib.suppress(AssertionError):
            mc.stop()
        mc.operator.close()


@pytest.fixture
def telegram() -> Iterator[FakeTelegram]:
    with FakeTelegram({TG: "gene_bot"}) as server:
        yield server


@pytest.fixture
def discord_fake() -> Iterator[FakeDiscord]:
    with FakeDiscord({DC: "gene-bot"}, {OPS: "ops"}) as server:
        yield server


class Agent:
    """The agent's channel host as a process of its own."""

    def __init__(self, spec: dict[str, Any], log: Path) -> None:
        self.log = log
        with log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, str(ROOT / "tests/channels/durable_proc.py"), json.dumps(spec)],
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=ROOT,
            )

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def kill(self) -> None:
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)


@pytest.fixture
def agents() -> Iterator[list[Agent]]:
    made: list[Agent] = []
    yield made
    for agent in made:
        if agent.proc.poll() is None:
            agent.kill()


def spool_counts(path: Path) -> dict[str, int]:
    """The spool's rows by table and state, read as an outsider would."""
    if not path.exists():
        return {}
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
    try:
        found = {}
        for table in ("inbound", "outbound"):
            with contextlib.suppress(sqlite3.OperationalError):  # not created yet
                for state, count in db.execute(
                    f"SELECT state, count(*) FROM {table} GROUP BY state"
                ):
                    found[f"{table}_{state}"] = int(count)
        return found
    finally:
        db.close()


def spec(
    tmp_path: Path,
    mc: MissionControl,
    telegram: FakeTelegram,
    discord_fake: FakeDiscord,
    posts: list[tuple[str, str, str]] = (),  # type: ignore[assignment]
) -> dict[str, Any]:
    return {
        "mc": mc.base,
        "token": mc.gene,
        "spool": str(tmp_path / "gene" / ".mcos" / "channels.sqlite"),
        "state": str(tmp_path / "state-agent"),
        "telegram": {"api_url": telegram.url, "token": TG, "chats": [CHAT]},
        "discord": {"api_url": discord_fake.api_url, "token": DC, "chats": [OPS]},
        "mock": str(tmp_path / "mock"),
        "posts": [list(p) for p in posts],
    }


@pytest.mark.slow
class TestAcrossSigkill:
    """The agent process SIGKILLed: nothing it held or queued is lost, nothing sent twice."""

    def test_posts_queued_at_the_kill_go_out_once_in_order_after_restart(
        self,
        tmp_path: Path,
        mission_control: MissionControl,
        telegram: FakeTelegram,
        discord_fake: FakeDiscord,
        agents: list[Agent],
    ) -> None:
        telegram.flood_every, telegram.retry_after = 1, 30  # every sendMessage: 429, wait 30 s
        discord_fake.rate_limit_next_post(retry_after=3600)
        posts = [("tg", CHAT, f"telegram post {i}") for i in range(5)]
        posts += [("dc", OPS, f"discord post {i}") for i in range(3)]
        first = spec(tmp_path, mission_control, telegram, discord_fake, posts)
        spool = Path(first["spool"])
        agents.append(Agent(first, tmp_path / "agent-1.log"))
        wait_for("every post made", lambda: "posted 8" in agents[0].output())
        wait_for(
            "both services asked", lambda: telegram.throttled > 0 and discord_fake.post_attempts > 0
        )
        agents[0].kill()
        assert telegram.texts(TG) == []
        assert discord_fake.posted == []

        telegram.flood_every = 0
        agents.append(
            Agent(spec(tmp_path, mission_control, telegram, discord_fake), tmp_path / "2")
        )
        wait_for(
            "every post to arrive",
            lambda: len(telegram.texts(TG)) >= 5 and len(discord_fake.posted) >= 3,
            timeout=90,
        )
        # Each marked sent in the outbox: none of them can go out again.
        wait_for("every post marked sent", lambda: spool_counts(spool) == {"outbound_sent": 8})
        assert telegram.texts(TG, CHAT) == [f"telegram post {i}" for i in range(5)]
        assert [m["content"] for m in discord_fake.posted] == [
            f"discord post {i}" for i in range(3)
        ]

    def test_items_arriving_while_mission_control_is_down_are_stored_once(
        self,
        tmp_path: Path,
        mission_control: MissionControl,
        telegram: FakeTelegram,
        discord_fake: FakeDiscord,
        agents: list[Agent],
    ) -> None:
        first = spec(tmp_path, mission_control, telegram, discord_fake)
        spool = Path(first["spool"])
        agents.append(Agent(first, tmp_path / "agent-1.log"))
        wait_for("the Discord session up", lambda: discord_fake.connected == 1)
        wait_for("Telegram polled", lambda: telegram.polls >= 1)

        mission_control.stop()
        # Past the first failed lease renewal (a third of the 15 s TTL): the Discord receiver
        # keeps receiving into the spool instead of stopping. (Soft, as below.)
        wait_for(
            "the Discord receiver to notice the outage",
            lambda: "report unconfirmed: channel dc" in agents[0].output(),
            timeout=20,
            required=False,
        )
        for i in range(3):
            discord_fake.inject_message(OPS, "alice", f"discord item {i}")
        telegram.push(TG, "telegram item 0", chat_id=int(CHAT))
        inbox = tmp_path / "mock" / "inbox"
        inbox.mkdir(parents=True, exist_ok=True)
        (inbox / "1.txt").write_text("From: bob\nmock item 0")
        # (Soft: the verdict is what Mission Control stores in the end. Discord does not
        # redeliver and Mission Control stays down until this agent is dead, so what is stored
        # later can only have come from what this process kept.)
        wait_for(
            "the Discord items held in the spool",
            lambda: spool_counts(spool).get("inbound_waiting") == 3,
            timeout=20,
            required=False,
        )
        agents[0].kill()  # the spool outlives the agent; Telegram and the folder hold theirs
        assert telegram.bots[TG].updates
        assert (inbox / "1.txt").exists()

        mission_control.start()
        agents.append(
            Agent(spec(tmp_path, mission_control, telegram, discord_fake), tmp_path / "2")
        )
        wanted = {f"dc:discord item {i}" for i in range(3)}
        wanted |= {"tg:telegram item 0", "mock:mock item 0"}
        stored: Counter[str] = Counter()

        def all_stored() -> bool:
            stored.update(mission_control.channel_items())
            return wanted <= set(stored)

        wait_for("every item in gene's inbox", all_stored, timeout=90)
        wait_for("the spool drained", lambda: spool_counts(spool).get("inbound_waiting", 0) == 0)
        # Confirmed to their sources once stored (the next getUpdates, the file moved aside).
        wait_for("Telegram's offset past the item", lambda: not telegram.bots[TG].updates)
        wait_for("the mock file taken", lambda: not (inbox / "1.txt").exists())
        # Claimed with a long visibility: a second copy of any item would be a second delivery.
        stored.update(mission_control.channel_items())
        assert {k: n for k, n in stored.items() if n != 1} == {}
        assert set(stored) == wanted


# Lenient supervision: this test restarts gene only after its SIGKILL (restart_first, 1 s); a
# lease or a watchdog that expires on a loaded machine (an agent starting slowly, Mission Control
# slow to answer a renewal) would restart gene at other moments, and fail the test for what
# tests/supervisor/test_faults.py covers. Its waits (and the server's start) have deadlines of
# their own, together more than pytest's default 120 s.
LENIENT = SUPERVISOR.replace('lease_ttl = "6s"', 'lease_ttl = "30s"').replace(
    'watchdog = "8s"', 'watchdog = "60s"'
)


@pytest.mark.postgres
@pytest.mark.slow
@pytest.mark.timeout(480)
def test_the_agent_sigkilled_with_replies_queued_sends_each_once_after_restart(
    fleet_rig_factory: FleetRigFactory,  # noqa: F811
    telegram: FakeTelegram,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The whole agent under ``mcos up`` (Mission Control on PostgreSQL): gene's offline model
    answers three Telegram messages (each answer approved by a human) while Telegram answers
    429 to every send; gene is
    SIGKILLed with the three replies queued, the supervisor restarts it, and each reply
    arrives exactly once."""
    monkeypatch.setenv("MCOS_TEST_TG_TOKEN", TG)
    telegram.flood_every, telegram.retry_after = 1, 30
    channel = (
        f'\n[channels.tg]\nkind = "telegram"\nagent = "gene"\ntoken = "env:MCOS_TEST_TG_TOKEN"\n'
        f'api_url = "{telegram.url}"\nchats = ["{CHAT}"]\n'
    )
    # Answers wait two batch windows (the question, then the approval's report): keep them short.
    placed = 'failover_hosts = ["vps"]\n'
    agents = FLEET_AGENTS.replace(placed, placed + 'heartbeat = { batch = "1s" }\n')
    assert agents != FLEET_AGENTS
    assert LENIENT.count('"30s"') == 1
    assert LENIENT.count('"60s"') == 1
    rig = fleet_rig_factory(agents + channel, LENIENT)
    rig.up("mini")
    wait_for("gene running", lambda: len(agent_pids(rig.fleet, "gene").get("gene", [])) == 1)
    spool = load_fleet(rig.fleet).workspace_path("gene") / ".mcos" / "channels.sqlite"
    for i in range(3):
        telegram.push(TG, f"question {i}", chat_id=int(CHAT))

    # Each answer comes from a turn holding the chat's untrusted text: gene asks for approval of
    # exactly that reply, and a human approves each (then gene posts it with the approval).
    def asked() -> list[ApprovalOut]:
        with rig.client() as operator:
            return operator.do(Calls.approvals(state="pending"))

    wait_for("three answers asked for", lambda: len(asked()) == 3, 90)
    with rig.client() as operator:
        for request in asked():
            assert request.action == "post_to_channel"
            operator.do(Calls.vote(request.id, "approve", "a fine answer"))

    def turn_done_with_replies_queued() -> bool:
        with rig.client() as operator:
            gene = operator.do(Calls.agent("gene"))
        counts = spool_counts(spool)
        unsent = counts.get("outbound_queued", 0) + counts.get("outbound_sending", 0)
        return unsent == 3 and gene.queued == 0 and gene.claimed == 0

    # Acked in Mission Control first, so the restarted agent has nothing to answer again.
    wait_for("three replies queued, the messages done", turn_done_with_replies_queued, 90)
    (pid,) = agent_pids(rig.fleet, "gene")["gene"]
    os.kill(pid, signal.SIGKILL)
    assert telegram.texts(TG) == []
    telegram.flood_every = 0
    wait_for(
        "a new gene",
        lambda: [p for p in agent_pids(rig.fleet, "gene").get("gene", []) if p != pid] != [],
    )
    wait_for("the replies sent", lambda: spool_counts(spool) == {"outbound_sent": 3}, 90)
    replies = telegram.texts(TG, CHAT)
    assert len(replies) == 3, replies
    assert all(r.startswith("Acknowledged: telegram message from Founder") for r in replies)
