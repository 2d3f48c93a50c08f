"""Restart and lease rules: pure functions over plain data."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from mcos.domain.leases import Grant, Lease, grant, stale
from mcos.supervisor.policy import Exit, RestartPolicy, classify_exit, watchdog_expired

T0 = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


def _lease(holder: str = "a", fence: int = 1, ttl: int = 15) -> Lease:
    return Lease("gene", holder, "mini", fence, T0 + timedelta(seconds=ttl), T0, T0)


class TestRestartPolicy:
    """1 s doubling to 60 s with jitter; more than 5 crashes in 5 minutes: failed."""

    @given(st.integers(1, 30), st.floats(0, 0.999))
    def test_backoff_doubles_to_the_cap_with_jitter(self, restarts: int, unit: float) -> None:
        policy = RestartPolicy()
        wait = policy.backoff(restarts, unit)
        base = min(timedelta(seconds=2 ** (restarts - 1)), timedelta(seconds=60))
        assert base / 2 <= wait <= base

    def test_six_crashes_in_the_window_fail(self) -> None:
        policy = RestartPolicy()
        crashes = [T0 + timedelta(seconds=10 * i) for i in range(6)]
        assert not policy.failed(crashes[:5], crashes[4])
        assert policy.failed(crashes, crashes[5])
        spread = [T0 + timedelta(minutes=2 * i) for i in range(6)]
        assert not policy.failed(spread, spread[-1])  # older ones left the window

    def test_exit_codes(self) -> None:
        assert classify_exit(78, stopping=False) is Exit.MISCONFIGURED
        assert classify_exit(75, stopping=False) is Exit.FENCED
        assert classify_exit(-9, stopping=False) is Exit.CRASHED
        assert classify_exit(1, stopping=False) is Exit.CRASHED
        assert classify_exit(0, stopping=False) is Exit.STOPPED
        assert classify_exit(-15, stopping=True) is Exit.STOPPED

    def test_watchdog(self) -> None:
        period = timedelta(seconds=30)
        assert not watchdog_expired(T0, T0 + period, period)
        assert watchdog_expired(T0, T0 + period + timedelta(milliseconds=1), period)


class TestLeaseRules:
    """Refuse while another's lease binds, renew our own, a new token otherwise."""

    def test_grants(self) -> None:
        assert grant(None, "a", T0) == Grant.NEW
        assert grant(_lease("a"), "a", T0) == Grant.RENEW
        assert grant(_lease("a"), "b", T0) == Grant.REFUSE
        assert grant(_lease("a"), "b", T0 + timedelta(seconds=15)) == Grant.NEW

    @given(st.integers(1, 100), st.integers(1, 100))
    def test_only_older_tokens_are_stale(self, presented: int, current: int) -> None:
        assert stale(presented, _lease(fence=current)) == (presented < current)
        assert not stale(presented, None)
