"""Heartbeat decisions, active hours, jitter, cron, cache TTL and context budget: pure rules."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from mcos.domain.heartbeat import (
    MAX_COUNTED_FIRES,
    ActiveHours,
    CacheTTL,
    CronAction,
    CronSlot,
    Finding,
    MissedPolicy,
    Outcome,
    Urgency,
    choose_cache_ttl,
    decide,
    decide_cron,
    due_fires,
    needs_flush,
    next_beat,
    next_cron_fire,
    prefix_cost,
    turn_cache_ttl,
    valid_cron,
)

INBOX = Finding("inbox", "2 new messages")
URGENT = Finding("inbox", "site down", Urgency.URGENT)


class TestDecide:
    """Nothing to do → no model call."""

    def test_quiet_beat_calls_no_model(self) -> None:
        """No findings and nothing routine: HEARTBEAT_OK without a model call."""
        assert decide([], active=True).outcome is Outcome.OK

    def test_findings_make_one_turn(self) -> None:
        """Every finding of the beat goes to one turn together."""
        d = decide([INBOX, Finding("check:web", "503")], active=True)
        assert d.outcome is Outcome.TURN
        assert len(d.findings) == 2

    def test_routine_heartbeat_file_calls_the_model_when_active(self) -> None:
        """A HEARTBEAT.md with standing work calls the model each active beat."""
        assert decide([], active=True, routine=True).outcome is Outcome.TURN
        assert decide([], active=False, routine=True).outcome is Outcome.INACTIVE

    def test_outside_active_hours_only_urgent(self) -> None:
        """Outside active hours normal findings wait; urgent ones are handled alone."""
        assert decide([INBOX], active=False).outcome is Outcome.INACTIVE
        d = decide([INBOX, URGENT], active=False)
        assert d.outcome is Outcome.TURN
        assert d.findings == (URGENT,)

    def test_over_budget_holds_the_turn(self) -> None:
        """Over budget, findings are kept but no model call is made."""
        assert decide([INBOX], active=True, over_budget=True).outcome is Outcome.OVER_BUDGET

    @given(
        st.lists(st.sampled_from([INBOX, URGENT]), max_size=5),
        st.booleans(),
        st.booleans(),
        st.booleans(),
    )
    def test_model_only_for_something(
        self, findings: list[Finding], active: bool, over: bool, routine: bool
    ) -> None:
        """A turn always carries a finding unless routine work asked for it."""
        d = decide(findings, active=active, over_budget=over, routine=routine)
        if d.outcome is Outcome.TURN:
            assert d.findings or (routine and active)
            assert not over
        if not findings and not routine:
            assert d.outcome in (Outcome.OK, Outcome.INACTIVE)


class TestTime:
    """Active hours, jitter and cron in time zones."""

    def test_active_hours_in_zone(self) -> None:
        """09:00-18:00 Berlin: 08:30 UTC in winter is 09:30 there."""
        hours = ActiveHours.parse("09:00-18:00", "Europe/Berlin")
        assert hours.contains(datetime(2026, 1, 5, 8, 30, tzinfo=UTC))
        assert not hours.contains(datetime(2026, 1, 5, 17, 30, tzinfo=UTC))

    def test_overnight_window(self) -> None:
        """22:00-06:00 spans midnight."""
        hours = ActiveHours.parse("22:00-06:00", None)
        assert hours.contains(datetime(2026, 1, 5, 23, 0, tzinfo=UTC))
        assert hours.contains(datetime(2026, 1, 5, 5, 59, tzinfo=UTC))
        assert not hours.contains(datetime(2026, 1, 5, 12, 0, tzinfo=UTC))

    @given(st.integers(60, 86_400), st.integers(0, 600), st.floats(0, 0.999))
    def test_jitter_bounds(self, interval: int, jitter: int, unit: float) -> None:
        """The next beat is within ±jitter of one interval, never sooner than half of it."""
        now = datetime(2026, 1, 1, tzinfo=UTC)
        i, j = timedelta(seconds=interval), timedelta(seconds=jitter)
        fire = next_beat(now, i, j, unit)
        assert fire - now >= i / 2
        assert fire - now <= i + j

    def test_cron_in_zone_across_dst(self) -> None:
        """09:00 New York is 14:00 UTC in winter and 13:00 UTC in summer."""
        winter = next_cron_fire(
            "0 9 * * *", datetime(2026, 1, 5, 12, tzinfo=UTC), "America/New_York"
        )
        summer = next_cron_fire(
            "0 9 * * *", datetime(2026, 7, 5, 12, tzinfo=UTC), "America/New_York"
        )
        assert winter.astimezone(UTC).hour == 14
        assert summer.astimezone(UTC).hour == 13
        assert valid_cron("*/15 9-17 * * mon-fri")
        assert not valid_cron("61 * * * *")


class TestCacheTTL:
    """The TTL comes from the numbers."""

    def test_thirty_minute_beats_take_the_hour_cache(self) -> None:
        """Beats 30 min apart: a 5-minute cache is a loss, the 1-hour cache wins."""
        gap = timedelta(minutes=30)
        assert prefix_cost(CacheTTL.FIVE_MINUTES, gap, 48) > prefix_cost(CacheTTL.NONE, gap, 48)
        assert choose_cache_ttl(gap) is CacheTTL.ONE_HOUR

    def test_close_calls_take_five_minutes_and_rare_ones_none(self) -> None:
        """Calls a minute apart: the cheaper 5-minute write; hours apart: no cache at all."""
        assert choose_cache_ttl(timedelta(minutes=1)) is CacheTTL.FIVE_MINUTES
        assert choose_cache_ttl(timedelta(hours=2)) is CacheTTL.NONE

    @given(st.integers(1, 10_000), st.integers(2, 500))
    def test_choice_is_never_dearer_than_no_cache(self, minutes: int, calls: int) -> None:
        """Whatever the gap, the chosen TTL costs at most what no cache costs."""
        gap = timedelta(minutes=minutes)
        chosen = choose_cache_ttl(gap, calls)
        assert prefix_cost(chosen, gap, calls) <= prefix_cost(CacheTTL.NONE, gap, calls)


class TestTurnCacheTTL:
    """Per turn: the gap between turns and the calls in each decide the TTL."""

    def test_the_table_in_docs_runtime(self) -> None:
        """The four rows of the table in docs/runtime.md."""
        assert turn_cache_ttl(timedelta(minutes=30), 1) is CacheTTL.ONE_HOUR
        assert turn_cache_ttl(timedelta(hours=3), 1) is CacheTTL.NONE
        assert turn_cache_ttl(timedelta(hours=3), 2) is CacheTTL.FIVE_MINUTES
        assert turn_cache_ttl(timedelta(minutes=2), 2) is CacheTTL.FIVE_MINUTES

    @given(st.integers(1, 24 * 60), st.floats(1.0, 8.0))
    def test_never_dearer_than_no_cache(self, minutes: int, calls: float) -> None:
        """Whatever the pattern, caching is chosen only when it costs less than none."""
        chosen = turn_cache_ttl(timedelta(minutes=minutes), calls)
        if chosen is not CacheTTL.NONE:
            life = timedelta(minutes=5 if chosen is CacheTTL.FIVE_MINUTES else 60)
            write = 1.25 if chosen is CacheTTL.FIVE_MINUTES else 2.0
            first = 0.1 if timedelta(minutes=minutes) <= life else write
            assert first + 0.1 * (calls - 1) < calls


class TestContextBudget:
    """Flush at the threshold."""

    @given(st.integers(0, 400_000), st.integers(1_000, 200_000), st.floats(0.5, 0.95))
    def test_flush_threshold(self, used: int, window: int, threshold: float) -> None:
        """A flush is due exactly from the threshold share of the window on."""
        assert needs_flush(used, window, threshold) == (used >= window * threshold)


HOURLY = "0 * * * *"
T0 = datetime(2026, 3, 5, 9, 0, tzinfo=UTC)


def at(hours: float) -> datetime:
    return T0 + timedelta(hours=hours)


class TestCronCatchUp:
    """A cron job missed while its agent could not run runs once when it can, or is skipped."""

    def test_nothing_due_waits(self) -> None:
        """Before its fire a job waits and its slot is unchanged."""
        slot = CronSlot(at(1))
        d = decide_cron(HOURLY, slot, at(0.5), blocked=None)
        assert (d.action, d.slot, d.missed) == (CronAction.WAIT, slot, None)

    def test_a_regular_fire_runs_once_and_moves_on(self) -> None:
        """A fire due while the agent can run runs, and the next fire is the following hour."""
        d = decide_cron(HOURLY, CronSlot(at(1)), at(1) + timedelta(seconds=3), blocked=None)
        assert d.action is CronAction.RUN
        assert d.slot == CronSlot(at(2))
        assert d.missed is None

    def test_fires_passed_while_busy_run_once_not_n_times(self) -> None:
        """Three fires passed during a long turn: one run, not three, and nothing owed."""
        d = decide_cron(HOURLY, CronSlot(at(1)), at(3.5), blocked=None)
        assert d.action is CronAction.RUN
        assert d.slot == CronSlot(at(4))

    def test_fires_while_blocked_are_recorded_never_run(self) -> None:
        """Over budget at two fires: nothing runs; the first miss, its reason and the count
        are kept."""
        d1 = decide_cron(HOURLY, CronSlot(at(1)), at(1.1), blocked="over budget")
        assert d1.action is CronAction.WAIT
        assert d1.slot == CronSlot(at(2), at(1), 1, "over budget")
        d2 = decide_cron(HOURLY, d1.slot, at(2.1), blocked="cooling down")
        assert d2.action is CronAction.WAIT
        assert d2.slot == CronSlot(at(3), at(1), 2, "over budget")  # the first reason stays

    def test_run_once_catches_up_once_when_the_agent_can(self) -> None:
        """After the block, one catch-up run makes up for every missed fire."""
        owed = CronSlot(at(3), at(1), 2, "over budget")
        d = decide_cron(HOURLY, owed, at(2.5), blocked=None)
        assert d.action is CronAction.CATCH_UP
        assert d.missed == owed
        assert d.slot == CronSlot(at(3))
        again = decide_cron(HOURLY, d.slot, at(2.6), blocked=None)
        assert again.action is CronAction.WAIT

    def test_a_catch_up_and_a_regular_fire_due_together_run_once(self) -> None:
        """The block ended as the job fired again: one run covers both."""
        owed = CronSlot(at(3), at(1), 2, "over budget")
        d = decide_cron(HOURLY, owed, at(3) + timedelta(seconds=1), blocked=None)
        assert d.action is CronAction.CATCH_UP
        assert d.slot == CronSlot(at(4))

    def test_an_owed_run_waits_for_its_retry_time(self) -> None:
        """After a model failure the owed run waits for ``not_before``; fires meanwhile are
        counted into the miss; then it catches up once."""
        owed = CronSlot(at(2), at(1), 1, "the model was unavailable", not_before=at(1.5))
        early = decide_cron(HOURLY, owed, at(1.2), blocked=None)
        assert (early.action, early.slot) == (CronAction.WAIT, owed)
        late = decide_cron(HOURLY, owed, at(2.1), blocked=None)
        assert late.action is CronAction.CATCH_UP
        assert late.slot == CronSlot(at(3))
        still = CronSlot(at(2), at(1), 1, "the model was unavailable", not_before=at(2.5))
        counted = decide_cron(HOURLY, still, at(2.1), blocked=None)
        assert counted.action is CronAction.WAIT
        assert counted.slot == CronSlot(
            at(3), at(1), 2, "the model was unavailable", not_before=at(2.5)
        )

    def test_skip_drops_the_missed_fires(self) -> None:
        """``skip``: nothing runs for the misses; the next regular fire runs as usual."""
        owed = CronSlot(at(3), at(1), 2, "paused")
        d = decide_cron(HOURLY, owed, at(2.5), blocked=None, policy=MissedPolicy.SKIP)
        assert d.action is CronAction.SKIP
        assert d.missed == owed
        assert d.slot == CronSlot(at(3))
        regular = decide_cron(HOURLY, d.slot, at(3.01), blocked=None, policy=MissedPolicy.SKIP)
        assert regular.action is CronAction.RUN

    def test_skip_still_runs_a_regular_fire_due_now(self) -> None:
        """``skip`` with a fire due at the first look after the block: that fire is regular."""
        owed = CronSlot(at(3), at(1), 2, "paused")
        d = decide_cron(HOURLY, owed, at(3.01), blocked=None, policy=MissedPolicy.SKIP)
        assert d.action is CronAction.RUN
        assert d.missed == owed

    def test_a_process_down_for_a_month_counts_at_most_the_cap(self) -> None:
        """Missed fires are counted up to a cap; the next fire is still the right one."""
        count, after = due_fires("* * * * *", CronSlot(at(0)), at(24 * 30))
        assert count == MAX_COUNTED_FIRES
        assert after == at(24 * 30) + timedelta(minutes=1)

    def test_fires_are_read_in_the_jobs_time_zone(self) -> None:
        """09:00 in Johannesburg is 07:00 UTC."""
        count, after = due_fires("0 9 * * *", CronSlot(at(-2)), at(0), "Africa/Johannesburg")
        assert count == 1
        assert after == at(22)

    @given(
        st.lists(
            st.tuples(st.floats(0.01, 5), st.sampled_from([None, "over budget", "paused"])),
            min_size=1,
            max_size=30,
        ),
        st.sampled_from(list(MissedPolicy)),
    )
    def test_no_fire_is_lost_and_none_runs_twice(
        self, looks: list[tuple[float, str | None]], policy: MissedPolicy
    ) -> None:
        """Over any run of looks: a look runs the job at most once; a look while blocked never
        runs it; with run-once, every fire that came due is covered by a run or still owed."""
        slot, now = CronSlot(at(1)), at(0)
        uncovered = 0
        for step, blocked in looks:
            now += timedelta(hours=step)
            count, _ = due_fires(HOURLY, slot, now)
            d = decide_cron(HOURLY, slot, now, blocked=blocked, policy=policy)
            if blocked is not None:
                assert d.action is CronAction.WAIT
            if d.action in (CronAction.RUN, CronAction.CATCH_UP):
                uncovered = 0
            else:
                uncovered += count
                if d.action is CronAction.SKIP:
                    uncovered = 0
            if policy is MissedPolicy.RUN_ONCE:
                assert (uncovered > 0) == d.slot.owed
            slot = d.slot
