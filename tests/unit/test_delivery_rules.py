"""Property-based tests of the pure rules: delivery order, attempts, deadlines, audit chain, tokens.

The rules in ``mcos.domain`` are what both stores implement in SQL; the last class checks the
embedded store against them for arbitrary batches.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import tempfile
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mcos.domain.agent_state import AgentStatus, current
from mcos.domain.audit import GENESIS, AuditRecord, record_hash, verify_chain
from mcos.domain.messages import (
    EXPIRED,
    MAX_DEFERRAL,
    DeliveryPolicy,
    DeliveryState,
    DeliveryView,
    NewMessage,
    Priority,
    attempts_after_deferral,
    claim_order,
    claimable,
    dead_reason,
    defer_until,
    expired,
    lapsed_into_dead_letter,
    next_utc_day,
    resume_at,
    unavailable_backoff,
)
from mcos.domain.tokens import digest, matches, new_token, parse_prefix, redact
from mcos.store import make_store
from tests.store.conftest import AUDIT_KEY, DIRECTORY

EPOCH = datetime(2026, 1, 1, tzinfo=UTC)
instants = st.integers(min_value=0, max_value=10**9).map(lambda s: EPOCH + timedelta(seconds=s))
policies = st.builds(
    DeliveryPolicy,
    max_attempts=st.integers(1, 20),
    visibility=st.integers(1, 3600).map(lambda s: timedelta(seconds=s)),
    retry_base=st.integers(1, 60).map(lambda s: timedelta(seconds=s)),
    retry_cap=st.integers(60, 86_400).map(lambda s: timedelta(seconds=s)),
)


@st.composite
def deliveries(draw: st.DrawFn, ident: int | None = None) -> DeliveryView:
    state = draw(st.sampled_from(DeliveryState))
    visible = draw(instants)
    return DeliveryView(
        id=ident if ident is not None else draw(st.integers(1, 10**6)),
        priority_rank=draw(st.sampled_from([p.rank for p in Priority])),
        state=state,
        attempts=draw(st.integers(0, 30)),
        visible_at=visible,
        deadline=visible if state is DeliveryState.CLAIMED else None,
    )


class TestRetries:
    """Backoff and dead-lettering."""

    @given(policies, st.integers(0, 200))
    def test_delay_is_bounded_and_grows(self, policy: DeliveryPolicy, attempts: int) -> None:
        """The delay never drops as attempts grow, starts at the base, never passes the cap."""
        delay = policy.retry_delay(attempts)
        assert min(policy.retry_base, policy.retry_cap) <= delay <= policy.retry_cap
        assert policy.retry_delay(attempts + 1) >= delay

    @given(policies, st.integers(1, 30))
    def test_delay_doubles_below_the_cap(self, policy: DeliveryPolicy, attempts: int) -> None:
        """Below the cap each further attempt waits twice as long."""
        uncapped = policy.retry_base * 2 ** (attempts - 1)
        if uncapped * 2 <= policy.retry_cap:
            assert policy.retry_delay(attempts + 1) == 2 * policy.retry_delay(attempts)

    @given(policies, st.integers(0, 50))
    def test_exhausted_exactly_at_max(self, policy: DeliveryPolicy, attempts: int) -> None:
        """A delivery is out of attempts from the max on, and stays so."""
        assert policy.exhausted(attempts) == (attempts >= policy.max_attempts)
        if policy.exhausted(attempts):
            assert policy.exhausted(attempts + 1)


class TestDeadlines:
    """What a claim may take, and when."""

    @given(deliveries(), instants, st.integers(0, 10**6))
    def test_claimable_stays_claimable(self, d: DeliveryView, now: datetime, later: int) -> None:
        """Time only makes deliveries claimable, never the reverse."""
        if claimable(d, now):
            assert claimable(d, now + timedelta(seconds=later))

    @given(deliveries(), instants)
    def test_what_is_claimable(self, d: DeliveryView, now: datetime) -> None:
        """Queued once visible, claimed once its deadline passed, acked or dead never."""
        expected = {
            DeliveryState.QUEUED: d.visible_at <= now,
            DeliveryState.CLAIMED: d.deadline is not None and d.deadline <= now,
        }.get(d.state, False)  # acked and dead: never
        assert claimable(d, now) == expected

    @given(deliveries(), instants, policies)
    def test_dead_letter_only_lapsed_and_exhausted(
        self, d: DeliveryView, now: datetime, policy: DeliveryPolicy
    ) -> None:
        """Only a lapsed claim out of attempts dies; a queued delivery never does."""
        dies = lapsed_into_dead_letter(d, now, policy)
        assert dies == (
            d.state is DeliveryState.CLAIMED and claimable(d, now) and policy.exhausted(d.attempts)
        )


class TestOrder:
    """Urgent first, then oldest first."""

    @given(st.lists(st.integers(1, 10**6), unique=True, max_size=40).flatmap(
        lambda ids: st.tuples(*(deliveries(ident=i) for i in ids))
    ))  # fmt: skip
    def test_sorted_by_priority_then_age(self, ds: tuple[DeliveryView, ...]) -> None:
        """Sorting by the claim order puts every higher priority first, each FIFO by id."""
        ordered = sorted(ds, key=claim_order)
        for a, b in itertools.pairwise(ordered):
            assert a.priority_rank >= b.priority_rank
            if a.priority_rank == b.priority_rank:
                assert a.id < b.id

    @settings(max_examples=25, deadline=None)
    @given(st.lists(st.sampled_from(Priority), min_size=1, max_size=30), st.integers(1, 30))
    def test_store_claims_in_rule_order(self, priorities: list[Priority], limit: int) -> None:
        """The embedded store hands out any batch in exactly the order the rule gives."""

        async def run(path: str) -> tuple[list[int], list[int]]:
            store = make_store(f"sqlite:///{path}/p.db", audit_key=AUDIT_KEY)
            await store.upgrade()
            await store.open()
            try:
                await store.sync_directory(DIRECTORY)
                sent = await store.send_many(
                    [NewMessage("gene", "jarvis", priority=p) for p in priorities]
                )
                views = [
                    DeliveryView(i, r.message.priority.rank, DeliveryState.QUEUED, 0, EPOCH, None)
                    for i, r in enumerate(sent)
                ]
                expected = [sent[v.id].message.id for v in sorted(views, key=claim_order)]
                got: list[int] = []
                while batch := await store.claim("jarvis", limit=limit):
                    got += [d.message.id for d in batch]
                return got, expected
            finally:
                await store.close()

        with tempfile.TemporaryDirectory() as path:
            got, expected = asyncio.run(run(path))
        assert got == expected


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)


@st.composite
def chains(draw: st.DrawFn) -> list[AuditRecord]:
    records: list[AuditRecord] = []
    prev = GENESIS
    for seq in range(1, draw(st.integers(1, 12)) + 1):
        fields = {
            "seq": seq,
            "at": draw(instants),
            "actor": draw(st.text(min_size=1, max_size=12)),
            "action": draw(st.sampled_from(["token.create", "delivery.dead_letter", "x.y"])),
            "targets": draw(st.dictionaries(st.text(max_size=8), json_values, max_size=3)),
            "detail": draw(st.dictionaries(st.text(max_size=8), json_values, max_size=3)),
            "outcome": draw(st.sampled_from(["ok", "refused"])),
            "prev_hash": prev,
        }
        prev = record_hash(**fields)
        records.append(AuditRecord(hash=prev, **fields))
    return records


class TestAuditChain:
    """Any edit or deletion is detected."""

    @given(chains())
    def test_intact_chain_verifies(self, chain: list[AuditRecord]) -> None:
        """A chain written by the rule verifies, against its head too."""
        assert verify_chain(chain, head_seq=len(chain)) == []

    @given(chains(), st.data())
    def test_any_edit_is_detected(self, chain: list[AuditRecord], data: st.DataObject) -> None:
        """Changing any field of any record breaks the chain at that record."""
        i = data.draw(st.integers(0, len(chain) - 1))
        name = data.draw(st.sampled_from(["actor", "action", "outcome", "detail", "at"]))
        old = getattr(chain[i], name)
        new = data.draw(
            {
                "actor": st.text(min_size=1, max_size=12),
                "action": st.text(min_size=1, max_size=12),
                "outcome": st.text(max_size=8),
                "detail": st.dictionaries(st.text(max_size=8), json_values, max_size=3),
                "at": instants,
            }[name].filter(lambda v: v != old)
        )
        edited = [*chain[:i], dataclasses.replace(chain[i], **{name: new}), *chain[i + 1 :]]
        breaks = verify_chain(edited, head_seq=len(chain))
        assert any(b.seq == chain[i].seq for b in breaks)

    @given(chains(), st.data())
    def test_any_deletion_is_detected(self, chain: list[AuditRecord], data: st.DataObject) -> None:
        """Deleting any record, the last one included, is detected."""
        i = data.draw(st.integers(0, len(chain) - 1))
        assert verify_chain(chain[:i] + chain[i + 1 :], head_seq=len(chain)) != []


class TestTokens:
    """Tokens match only themselves and never survive redaction."""

    @given(st.binary(min_size=32, max_size=32), st.text(max_size=40), st.text(max_size=40))
    def test_token_round_trip_and_redaction(self, key: bytes, before: str, after: str) -> None:
        """A new token parses, matches its digest, not another's, and vanishes from any text."""
        token, prefix = new_token()
        other, _ = new_token()
        assert parse_prefix(token) == prefix
        stored = digest(key, token)
        assert matches(key, token, stored)
        assert not matches(key, other, stored)
        assert token not in redact(f"{before}{token}{after} {token}")


class TestDeferral:
    """Could not try (deferred) versus tried and failed (nacked)."""

    @given(policies, st.integers(1, 30), st.integers(0, 500))
    def test_any_number_of_deferrals_never_exhausts(
        self, policy: DeliveryPolicy, tried: int, deferred: int
    ) -> None:
        """Claims that end in deferrals leave the attempt count where the nacks left it."""
        attempts = min(tried, policy.max_attempts - 1)
        for _ in range(deferred):
            attempts = attempts_after_deferral(attempts + 1)  # a claim, then its deferral
        assert attempts == min(tried, policy.max_attempts - 1)
        assert not policy.exhausted(attempts)

    @given(instants, st.integers(-(10**6), 7 * 86_400))
    def test_not_before_is_never_in_the_past(self, now: datetime, ahead: int) -> None:
        """A deferral is claimable from its not-before, or at once when that has passed."""
        wanted = now + timedelta(seconds=ahead)
        assert defer_until(now, wanted) == max(now, wanted)

    @given(instants, st.integers(1, 10**7))
    def test_too_far_ahead_is_refused_with_the_reason(self, now: datetime, extra: int) -> None:
        """Beyond a week ahead is bad input, and the error says what and by how much."""
        with pytest.raises(ValueError, match=r"not_before .* is more than .* ahead"):
            defer_until(now, now + MAX_DEFERRAL + timedelta(seconds=extra))

    def test_a_naive_not_before_is_refused(self) -> None:
        """A time without a zone is refused, saying to give it in UTC."""
        with pytest.raises(ValueError, match="UTC"):
            defer_until(EPOCH, datetime(2026, 1, 1))  # noqa: DTZ001 (the bad input under test)


class TestExpiry:
    """The sender's optional expiry."""

    @given(instants, st.integers(-(10**6), 10**6))
    def test_expired_exactly_from_its_instant(self, now: datetime, offset: int) -> None:
        """Expired at and after ``expires_at``; never without one; the reason says so."""
        at = now + timedelta(seconds=offset)
        assert expired(at, now) == (offset <= 0)
        assert not expired(None, now)
        assert (dead_reason(3, at, now) == EXPIRED) == (offset <= 0)
        assert dead_reason(3, None, now) == "not acknowledged after 3 attempts"


class TestWaking:
    """Cooldowns end on time; budgets end at the UTC day's end; outages back off."""

    @given(instants, st.integers(1, 86_400), st.floats(0, 1))
    def test_resume_within_five_percent_and_half_a_second(
        self, until: datetime, seconds: int, u: float
    ) -> None:
        """The loop wakes after the cooldown, late by at most 5 % of it and at most 0.5 s."""
        length = timedelta(seconds=seconds)
        woke = resume_at(until, length, u)
        assert until <= woke <= until + min(length * 0.05, timedelta(seconds=0.5))

    @given(instants)
    def test_next_utc_day_is_the_coming_midnight(self, now: datetime) -> None:
        """Strictly after now, within a day, at 00:00 UTC."""
        midnight = next_utc_day(now)
        assert now < midnight <= now + timedelta(days=1)
        assert (midnight.hour, midnight.minute, midnight.second, midnight.microsecond) == (0,) * 4

    @given(st.integers(1, 100))
    def test_unavailable_backoff_grows_to_its_cap(self, failures: int) -> None:
        """30 s doubling, never past 10 minutes, never shrinking."""
        wait = unavailable_backoff(failures)
        assert timedelta(seconds=30) <= wait <= timedelta(minutes=10)
        assert unavailable_backoff(failures + 1) >= wait

    @given(instants, st.integers(-3600, 3600))
    def test_a_passed_cooldown_reads_as_ended(self, now: datetime, offset: int) -> None:
        """Status never shows a cooldown or budget stop whose until has passed."""
        until = now + timedelta(seconds=offset)
        for state in (AgentStatus.COOLING_DOWN, AgentStatus.OVER_BUDGET):
            shown, detail, shown_until = current(state.value, "429", until, now)
            if offset > 0:
                assert (shown, shown_until) == (state.value, until)
            else:
                assert shown == AgentStatus.IDLE.value
                assert shown_until is None
                assert "ended" in detail
        assert current("paused", "x", until, now)[0] == "paused"
