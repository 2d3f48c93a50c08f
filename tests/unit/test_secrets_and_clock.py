"""Key references resolve or stop the agent with a reason; clocks measure and simulate time."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from mcos.config.secrets import resolve_key
from mcos.exceptions import ConfigError
from mcos.runtime.clock import MissionClock, VirtualClock, offset_from, trustworthy

WHERE = "fleet.toml: agents.jarvis"


class TestResolveKey:
    """A secret is present and non-empty, or the error names the reference, never a value."""

    def test_env(self) -> None:
        assert resolve_key("env:K", where=WHERE, env={"K": " sk-ant-x \n"}) == "sk-ant-x"

    @pytest.mark.parametrize(
        ("env", "problem"),
        [
            ({}, "env:K: the variable K is not set"),
            ({"K": ""}, "env:K is empty"),
            ({"K": "  \n"}, "env:K is empty"),
            ({"K": "${ANTHROPIC_KEY}"}, "unexpanded variable"),
            ({"K": "$ANTHROPIC_KEY"}, "unexpanded variable"),
        ],
    )
    def test_env_problems(self, env: dict[str, str], problem: str) -> None:
        with pytest.raises(ConfigError) as caught:
            resolve_key("env:K", where=WHERE, env=env)
        assert problem in caught.value.message
        assert caught.value.message.startswith("fleet.toml: agents.jarvis: key: ")

    def test_file_relative_to_the_fleet(self, tmp_path: Path) -> None:
        (tmp_path / "jarvis.key").write_text("sk-file\n")
        assert resolve_key("file:jarvis.key", where=WHERE, env={}, base_dir=tmp_path) == "sk-file"
        with pytest.raises(ConfigError, match="does not exist"):
            resolve_key("file:missing.key", where=WHERE, env={}, base_dir=tmp_path)

    def test_systemd_credential(self, tmp_path: Path) -> None:
        (tmp_path / "jarvis").write_text("sk-cred")
        env = {"CREDENTIALS_DIRECTORY": str(tmp_path)}
        assert resolve_key("credential:jarvis", where=WHERE, env=env) == "sk-cred"
        with pytest.raises(ConfigError, match="CREDENTIALS_DIRECTORY"):
            resolve_key("credential:jarvis", where=WHERE, env={})

    def test_the_value_never_appears_in_the_error(self, tmp_path: Path) -> None:
        (tmp_path / "k").write_text("$SECRET_LOOKING")
        with pytest.raises(ConfigError) as caught:
            resolve_key("file:k", where=WHERE, env={}, base_dir=tmp_path)
        assert "unexpanded" in caught.value.message


class TestClocks:
    """Offsets with round-trip correction; virtual time wakes sleepers in order."""

    def test_offset_is_taken_at_the_midpoint(self) -> None:
        sent = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
        received = sent + timedelta(milliseconds=200)
        server = sent + timedelta(hours=7, milliseconds=100)  # a 7-hour skew, 100 ms each way
        sample = offset_from(sent, server, received)
        assert sample.offset == timedelta(hours=7)
        assert sample.round_trip == timedelta(milliseconds=200)

    def test_mission_clock_applies_the_measured_offset(self) -> None:
        local = datetime(2026, 1, 1, tzinfo=UTC)
        clock = MissionClock(lambda: local)

        async def server_time() -> datetime:
            return local + timedelta(seconds=30)

        asyncio.run(clock.measure(server_time))
        assert clock.now() == local + timedelta(seconds=30)

    def test_a_live_reading_skips_samples_taken_across_a_step(self) -> None:
        """The host clock steps 7 h while the first request is in flight: that sample's round
        trip is 7 h, so it is not trusted; the next one is, and it is adopted."""
        host = [datetime(2026, 1, 1, 12, tzinfo=UTC)]
        reads: list[datetime] = []

        def wall() -> datetime:
            reads.append(host[0])
            return host[0]

        asked: list[int] = []

        async def server_time() -> datetime:
            asked.append(1)
            if len(asked) == 1:
                host[0] += timedelta(hours=7)  # stepped mid-flight
            return datetime(2026, 1, 1, 12, tzinfo=UTC)

        clock = MissionClock(wall)
        sample = asyncio.run(clock.live(server_time))
        assert sample is not None
        assert sample.offset == timedelta(hours=-7)
        assert trustworthy(sample)
        assert len(asked) == 2
        assert clock.offset == timedelta(hours=-7)

    def test_no_trustworthy_reading_means_no_answer_and_the_offset_stays(self) -> None:
        """A host clock that jumps on every read never gives a reading to judge on."""
        host = [datetime(2026, 1, 1, tzinfo=UTC)]

        def wall() -> datetime:
            host[0] += timedelta(seconds=30)
            return host[0]

        async def server_time() -> datetime:
            return datetime(2026, 1, 1, tzinfo=UTC)

        clock = MissionClock(wall)
        clock.offset = timedelta(seconds=1)
        assert asyncio.run(clock.live(server_time, attempts=3)) is None
        assert clock.offset == timedelta(seconds=1)

    def test_a_round_trip_that_goes_backwards_is_not_trusted(self) -> None:
        """Received before it was sent: the clock stepped back mid-flight."""
        sent = datetime(2026, 1, 1, 12, tzinfo=UTC)
        assert not trustworthy(offset_from(sent, sent, sent - timedelta(hours=1)))
        assert trustworthy(offset_from(sent, sent, sent + timedelta(milliseconds=3)))

    def test_virtual_sleepers_wake_in_order(self) -> None:
        start = datetime(2026, 1, 1, tzinfo=UTC)
        clock = VirtualClock(start)
        woke: list[tuple[str, datetime]] = []

        async def sleeper(name: str, seconds: float) -> None:
            await clock.sleep(seconds)
            woke.append((name, clock.now()))

        async def main() -> None:
            tasks = [asyncio.create_task(sleeper(n, s)) for n, s in (("b", 60), ("a", 30))]
            await asyncio.sleep(0)
            await clock.advance(start + timedelta(seconds=45))
            assert woke == [("a", start + timedelta(seconds=30))]
            await clock.advance(start + timedelta(hours=1))
            await asyncio.gather(*tasks)

        asyncio.run(main())
        assert [n for n, _ in woke] == ["a", "b"]
        assert woke[1][1] == start + timedelta(seconds=60)
