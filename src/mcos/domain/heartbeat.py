"""Heartbeat and context rules: when to wake, whether to call the model, how long to cache.

Plain functions over plain data, time passed in. The costly mistake they exist to prevent is
the idle heartbeat that calls the model every beat to find out that nothing happened. The cron
rules say which fires are due, which were missed while the agent could not run, and that a
missed job runs once (or is skipped), never once per missed fire.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, time, timedelta
from enum import StrEnum
from zoneinfo import ZoneInfo

from croniter import croniter

HEARTBEAT_OK = "HEARTBEAT_OK"


class Urgency(StrEnum):
    """How soon a finding needs the model."""

    NORMAL = "normal"
    URGENT = "urgent"


@dataclass(frozen=True)
class Finding:
    """Something a deterministic check found that needs the model's judgement."""

    source: str
    """What found it: ``inbox``, ``check:web``, ``budget``, ``cron:daily-report``…"""
    summary: str
    urgency: Urgency = Urgency.NORMAL


class Outcome(StrEnum):
    """What a heartbeat did."""

    OK = "ok"
    """Nothing needed attention: HEARTBEAT_OK recorded, no model call."""
    TURN = "turn"
    """One model turn handles every finding of the beat."""
    INACTIVE = "inactive"
    """Outside active hours: the beat sleeps (urgent findings still wake the agent)."""
    OVER_BUDGET = "over_budget"
    """Findings waited, but the budget allows no model call."""


@dataclass(frozen=True)
class Decision:
    """A heartbeat's outcome and the findings its model turn will handle."""

    outcome: Outcome
    findings: tuple[Finding, ...] = ()


def decide(
    findings: list[Finding], *, active: bool, over_budget: bool = False, routine: bool = False
) -> Decision:
    """One beat's decision from its deterministic findings.

    ``routine`` is true when routine items of HEARTBEAT.md are due at this beat, each at its
    own cadence (:func:`mcos.domain.routines.due_tasks`); an empty or comments-only HEARTBEAT.md
    has none, and a beat with no findings then never calls the model. Urgent findings are
    handled even outside active hours.
    """
    urgent = tuple(f for f in findings if f.urgency is Urgency.URGENT)
    if not active:
        if not urgent:
            return Decision(Outcome.INACTIVE)
        findings = list(urgent)
    if not findings and not (routine and active):
        return Decision(Outcome.OK)
    if over_budget:
        return Decision(Outcome.OVER_BUDGET, tuple(findings))
    return Decision(Outcome.TURN, tuple(findings))


@dataclass(frozen=True)
class ActiveHours:
    """A daily window in a time zone; ``start > end`` spans midnight (``22:00-06:00``)."""

    start: time
    end: time
    zone: ZoneInfo

    @classmethod
    def parse(cls, text: str, zone: str | None) -> ActiveHours:
        """From ``HH:MM-HH:MM`` (``24:00`` allowed as the end) and an IANA zone name."""
        first, second = text.split("-")
        start = time.fromisoformat(first)
        end = time.max if second == "24:00" else time.fromisoformat(second)
        return cls(start, end, ZoneInfo(zone or "UTC"))

    def contains(self, now: datetime) -> bool:
        """Whether the aware instant ``now`` falls inside the window, in the window's zone."""
        local = now.astimezone(self.zone).time()
        if self.start <= self.end:
            return self.start <= local < self.end
        return local >= self.start or local < self.end


def next_beat(after: datetime, interval: timedelta, jitter: timedelta, unit: float) -> datetime:
    """When the next beat fires: one interval on, shifted by up to ±``jitter``.

    ``unit`` is a random draw in [0, 1) passed in, so a fleet's beats spread out (no thundering
    herd on the hour) while the rule stays deterministic under test.
    """
    shift = jitter * (2 * unit - 1)
    return after + max(interval + shift, interval / 2)


def next_cron_fire(expression: str, after: datetime, zone: str | None = None) -> datetime:
    """The first time after ``after`` that a cron expression fires, read in ``zone``."""
    tz = ZoneInfo(zone or "UTC")
    fire: datetime = croniter(expression, after.astimezone(tz)).get_next(datetime)
    return fire


def valid_cron(expression: str) -> bool:
    """Whether croniter accepts the expression."""
    return bool(croniter.is_valid(expression))


# --- cron catch-up ------------------------------------------------------------------------------
class MissedPolicy(StrEnum):
    """What a cron job does about fires missed while its agent could not run."""

    RUN_ONCE = "run-once"
    """Run once as soon as the agent can, however many fires were missed."""
    SKIP = "skip"
    """Drop the missed fires; the job runs again at its next regular fire."""


MAX_COUNTED_FIRES = 1000
"""Missed fires are counted up to this many (a per-minute job down for a month is "1000+")."""


@dataclass(frozen=True)
class CronSlot:
    """One cron job's schedule state: its next fire, and a miss not yet made up for.

    Kept durably in the workspace so that fires missed while the process was not running are
    known at the next start.
    """

    next_fire: datetime
    """The earliest fire not yet handled (run, missed or skipped)."""
    missed_at: datetime | None = None
    """The first fire missed and not yet made up for (None: nothing owed)."""
    missed_count: int = 0
    missed_why: str = ""
    """Why the agent could not run at ``missed_at``: ``over budget``, ``paused``…"""
    not_before: datetime | None = None
    """An owed run waits until then (the model failed: not retried on every look)."""

    @property
    def owed(self) -> bool:
        """Whether a missed fire waits to be made up for (or skipped)."""
        return self.missed_at is not None


def due_fires(
    expression: str, slot: CronSlot, now: datetime, zone: str | None = None
) -> tuple[int, datetime]:
    """How many fires from ``slot.next_fire`` up to ``now`` came due (capped), and the first
    fire after ``now``."""
    count, fire = 0, slot.next_fire
    while fire <= now:
        count += 1
        if count >= MAX_COUNTED_FIRES:
            break
        fire = next_cron_fire(expression, fire, zone)
    return count, next_cron_fire(expression, now, zone) if fire <= now else fire


class CronAction(StrEnum):
    """What to do with one cron job at one look."""

    WAIT = "wait"
    """Nothing is due (or the agent cannot run: the miss is recorded in the new slot)."""
    RUN = "run"
    """Run the job now, once."""
    CATCH_UP = "catch-up"
    """Run the job now, once, to make up for the missed fires."""
    SKIP = "skip"
    """The missed fires are dropped (``missed = "skip"``); nothing runs now."""


@dataclass(frozen=True)
class CronDecision:
    """A cron job's action at one look and its slot afterwards."""

    action: CronAction
    slot: CronSlot
    missed: CronSlot | None = None
    """The miss being made up for or skipped (for the daily log)."""


def missed(slot: CronSlot, first: datetime, count: int, why: str) -> CronSlot:
    """``slot`` with ``count`` more fires missed, the first at ``first``, because ``why``.

    The earliest miss and its reason are kept: the log says when the job was first missed.
    """
    if slot.missed_at is not None:
        return replace(slot, missed_count=slot.missed_count + count)
    return replace(slot, missed_at=first, missed_count=count, missed_why=why)


def decide_cron(
    expression: str,
    slot: CronSlot,
    now: datetime,
    *,
    blocked: str | None,
    policy: MissedPolicy = MissedPolicy.RUN_ONCE,
    zone: str | None = None,
) -> CronDecision:
    """One look at a cron job: what is due, what was missed, what to do.

    ``blocked`` says why the agent cannot run now (over budget, paused, cooling down), or is
    None; an owed run also waits for its slot's ``not_before``. Fires due while blocked are
    recorded as missed, never run; when the agent can run again a job owed a miss runs once
    (``run-once``) or drops it (``skip``). Fires that came due while the agent could run (its
    loop was busy) run once together: never N runs for N fires.
    """
    count, after = due_fires(expression, slot, now, zone)
    if blocked is None and slot.owed and slot.not_before is not None and now < slot.not_before:
        blocked = slot.missed_why  # the owed run waits for its retry time
    if blocked is not None:
        if not count:
            return CronDecision(CronAction.WAIT, slot)
        moved = replace(slot, next_fire=after)
        return CronDecision(CronAction.WAIT, missed(moved, slot.next_fire, count, blocked))
    if not slot.owed:
        action = CronAction.RUN if count else CronAction.WAIT
        return CronDecision(action, CronSlot(after) if count else slot)
    if policy is MissedPolicy.RUN_ONCE:
        action = CronAction.CATCH_UP
    else:  # a regular fire due now runs; the missed ones are dropped
        action = CronAction.RUN if count else CronAction.SKIP
    return CronDecision(action, CronSlot(after), slot)


# --- prompt caching -----------------------------------------------------------------------------
CACHE_WRITE_5M = 1.25
"""Anthropic's price of writing the 5-minute cache, as a multiple of the base input price."""
CACHE_WRITE_1H = 2.0
"""…of writing the 1-hour cache."""
CACHE_READ = 0.1
"""…of reading either cache."""


class CacheTTL(StrEnum):
    """The prompt-cache lifetime to ask for; NONE sends no cache_control at all."""

    NONE = "none"
    FIVE_MINUTES = "5m"
    ONE_HOUR = "1h"


def prefix_cost(ttl: CacheTTL, gap: timedelta, calls: int) -> float:
    """Cost of sending the stable prefix ``calls`` times ``gap`` apart, in base-input units.

    A cache entry is refreshed by every read, so it lives while calls keep coming within its
    lifetime; past it, every call writes again.
    """
    if ttl is CacheTTL.NONE or calls == 0:
        return float(calls)
    life, write = (
        (timedelta(minutes=5), CACHE_WRITE_5M)
        if ttl is CacheTTL.FIVE_MINUTES
        else (timedelta(hours=1), CACHE_WRITE_1H)
    )
    if gap <= life:
        return write + CACHE_READ * (calls - 1)
    return write * calls


def choose_cache_ttl(gap: timedelta, calls_per_day: int = 48) -> CacheTTL:
    """The cheapest TTL for model calls ``gap`` apart (ties go to the shorter cache).

    With beats 30 minutes apart a 5-minute cache always expires first, and each call pays 1.25
    times the input price to write it — worse than no cache; the 1-hour cache costs 2 times
    once, then 0.1 per call.
    """
    calls = max(calls_per_day, 2)
    costs = {ttl: prefix_cost(ttl, gap, calls) for ttl in CacheTTL}
    return min(CacheTTL, key=lambda t: (costs[t], list(CacheTTL).index(t)))


def turn_cache_ttl(turn_gap: timedelta, calls_per_turn: float) -> CacheTTL:
    """The cheapest TTL when model turns come ``turn_gap`` apart, each of a few calls.

    Costs per turn of the cached prefix, in base-input units: without a cache every call pays
    1.0; with a cache, the turn's first call reads (0.1) when the entry outlived the gap, or
    writes (1.25 for 5 minutes, 2.0 for an hour), and its tool-loop calls seconds later read.
    Event-driven turns hours apart with a tool round or two favour the 5-minute cache; beats
    30 minutes apart favour the hour; a lone call hours apart is cheapest uncached.

    The cached prompt is the stable prefix and the conversation up to the last call (each call
    reads back what the one before wrote), so the same costs hold for it. The two averages are
    fed only by calls that succeeded: a refused or failed call reads nothing.
    """
    rest = max(calls_per_turn - 1, 0) * CACHE_READ

    def first(life: timedelta, write: float) -> float:
        return CACHE_READ if turn_gap <= life else write

    costs = {
        CacheTTL.NONE: max(calls_per_turn, 1.0),
        CacheTTL.FIVE_MINUTES: first(timedelta(minutes=5), CACHE_WRITE_5M) + rest,
        CacheTTL.ONE_HOUR: first(timedelta(hours=1), CACHE_WRITE_1H) + rest,
    }
    return min(CacheTTL, key=lambda t: (costs[t], list(CacheTTL).index(t)))


# --- context budget -----------------------------------------------------------------------------
def needs_flush(used_tokens: int, window: int, threshold: float = 0.85) -> bool:
    """Whether the context is full enough to write WORKSTATE.md and compact."""
    return used_tokens >= window * threshold
