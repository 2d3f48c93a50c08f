"""When a cron job's calls may go by batch, how often a parked batch is looked at, and the
fleet-file settings that say so."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mcos.config import load_fleet
from mcos.domain.batching import FIRST_LOOK, LONGEST_GAP, batch_until, next_look
from mcos.exceptions import ConfigErrors

NOW = datetime(2026, 11, 30, 6, tzinfo=UTC)
FLEET = """
[humans.founder]
role = "founder"
[hosts.mini]
[agents.jarvis]
role = "orchestrator"
host = "mini"
reports_to = "founder"
[[agents.jarvis.cron]]
name = "weekly"
schedule = "0 6 * * 1"
prompt = "Write the weekly report."
"""


class TestBatchRoom:
    """A call goes by batch only while the deadline leaves more than the window."""

    def test_room_until_deadline_minus_window(self) -> None:
        """With 12 h to go and 1 h kept, the batch may run for 11 h; at the window's edge,
        or past it, the call is made directly."""
        deadline = NOW + timedelta(hours=12)
        assert batch_until(deadline, timedelta(hours=1), NOW) == NOW + timedelta(hours=11)
        assert batch_until(deadline, timedelta(hours=12), NOW) is None
        assert batch_until(deadline, timedelta(hours=1), deadline) is None

    @given(looks=st.integers(min_value=0, max_value=10_000), left=st.integers(0, 86_400))
    def test_looks_back_off_and_never_pass_the_give_up(self, looks: int, left: int) -> None:
        """The next look is 30 s after the first send, doubling to 10 minutes, and never later
        than the time the batch is given up on."""
        give_up = NOW + timedelta(seconds=left)
        at = next_look(NOW, looks, give_up)
        assert NOW <= at <= give_up
        assert at - NOW <= LONGEST_GAP
        doubled = FIRST_LOOK * 2 ** min(looks, 10)  # past 10 doublings: the longest gap
        assert at == min(give_up, NOW + min(LONGEST_GAP, doubled))


class TestDeadlineConfig:
    """``deadline`` and ``batch_window`` on a cron job: checked at load, named in errors."""

    def load(self, tmp_path: Path, extra: str) -> list[str]:
        path = tmp_path / "fleet.toml"
        path.write_text(FLEET + extra)
        with pytest.raises(ConfigErrors) as err:
            load_fleet(path)
        return [e.message for e in err.value.errors]

    def test_defaults_and_a_valid_deadline(self, tmp_path: Path) -> None:
        """No deadline by default; a deadline keeps an hour for direct calls by default."""
        path = tmp_path / "fleet.toml"
        path.write_text(FLEET + 'deadline = "12h"\n')
        (job,) = load_fleet(path).agents["jarvis"].cron
        assert (job.deadline, job.batch_window) == ("12h", "1h")
        path.write_text(FLEET)
        assert load_fleet(path).agents["jarvis"].cron[0].deadline is None

    @pytest.mark.parametrize(
        ("extra", "problem"),
        [
            ('deadline = "soon"\n', "deadline: 'soon' is not a duration"),
            ('deadline = "12h"\nbatch_window = "0s"\n', "batch_window: '0s' must be longer"),
            ('deadline = "1h"\n', "deadline '1h' leaves no room for a batch"),
            (
                'deadline = "12h"\nsession = "main"\n',
                "deadline '12h' needs session = \"isolated\"",
            ),
        ],
    )
    def test_bad_settings_are_named(self, tmp_path: Path, extra: str, problem: str) -> None:
        """Each mistake is refused with the job's key path and what is wrong."""
        (message,) = self.load(tmp_path, extra)
        assert message.startswith(f"{tmp_path / 'fleet.toml'}: agents.jarvis.cron.0")
        assert problem in message
