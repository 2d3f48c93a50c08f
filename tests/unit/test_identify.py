"""The IDENTIFY back-off rule: a crash loop slows down, a healthy restart does not."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from mcos.domain.identify import (
    MAX_WAIT,
    SessionStartLimit,
    identify_wait,
    recent_identifies,
)

NOW = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


def ago(seconds: float) -> datetime:
    return NOW - timedelta(seconds=seconds)


class TestBackoff:
    """Exponential back-off by IDENTIFYs in the last hour."""

    def test_first_identify_is_free(self) -> None:
        """A token that never identified goes at once."""
        wait = identify_wait([], NOW)
        assert (wait.seconds, wait.recent, wait.reason) == (0.0, 0, "free")

    def test_one_restart_is_free(self) -> None:
        """One earlier IDENTIFY this hour (a deploy) still needs no wait."""
        assert identify_wait([ago(1)], NOW).seconds == 0.0

    def test_third_in_an_hour_waits_five_seconds(self) -> None:
        """Past the free ones, the wait starts at 5 s after the last IDENTIFY."""
        wait = identify_wait([ago(30), ago(0)], NOW)
        assert (wait.seconds, wait.recent, wait.reason) == (5.0, 2, "backoff")

    def test_wait_doubles(self) -> None:
        """Each further IDENTIFY this hour doubles the wait."""
        waits = [identify_wait([NOW] * n, NOW).seconds for n in range(2, 7)]
        assert waits == [5.0, 10.0, 20.0, 40.0, 80.0]

    def test_wait_is_capped_at_fifteen_minutes(self) -> None:
        """However hot the loop, no wait exceeds the cap."""
        assert identify_wait([NOW] * 50, NOW).seconds == MAX_WAIT

    def test_wait_counts_from_the_last_identify(self) -> None:
        """Time already spent since the last IDENTIFY is deducted from the wait."""
        assert identify_wait([ago(100), ago(100), ago(100), ago(4)], NOW).seconds == 16.0

    def test_a_long_run_restarts_at_once(self) -> None:
        """A bot that ran longer than its wait restarts without waiting."""
        assert identify_wait([ago(2000)] * 5, NOW).seconds == 0.0

    def test_identifies_older_than_an_hour_do_not_count(self) -> None:
        """The back-off forgets a loop that ended an hour ago."""
        wait = identify_wait([ago(3601)] * 40, NOW)
        assert (wait.seconds, wait.recent) == (0.0, 0)

    def test_future_times_are_ignored(self) -> None:
        """A clock that went backwards cannot make a wait out of nothing."""
        assert identify_wait([NOW + timedelta(hours=1)] * 10, NOW).recent == 0


class TestSessionStartLimit:
    """Discord's own budget: when it runs low, wait for the reset."""

    def test_low_remaining_waits_until_reset(self) -> None:
        """At 5 % or less of the total, the wait lasts until Discord resets the budget."""
        limit = SessionStartLimit(total=1000, remaining=50, reset_after=7200.0, seen_at=ago(200))
        wait = identify_wait([], NOW, limit)
        assert (wait.seconds, wait.reason) == (7000.0, "session_start_limit")

    def test_plenty_remaining_changes_nothing(self) -> None:
        """Above the threshold the limit does not add a wait."""
        limit = SessionStartLimit(total=1000, remaining=51, reset_after=7200.0, seen_at=NOW)
        assert identify_wait([], NOW, limit).seconds == 0.0

    def test_reset_already_passed(self) -> None:
        """A reset that already happened needs no wait."""
        limit = SessionStartLimit(total=1000, remaining=0, reset_after=10.0, seen_at=ago(60))
        assert identify_wait([], NOW, limit).seconds == 0.0

    def test_longer_backoff_wins(self) -> None:
        """The longer of the back-off and the wait for the reset applies."""
        limit = SessionStartLimit(total=1000, remaining=1, reset_after=3.0, seen_at=NOW)
        wait = identify_wait([NOW] * 4, NOW, limit)
        assert (wait.seconds, wait.reason) == (20.0, "backoff")


def test_recent_identifies_keeps_a_day_sorted() -> None:
    """History older than a day is dropped; the rest comes back oldest first."""
    kept = recent_identifies([ago(5), ago(86_401), ago(3600)], NOW)
    assert kept == [ago(3600), ago(5)]
