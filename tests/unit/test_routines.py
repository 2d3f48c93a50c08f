"""Routine work at its cadence and memory curation: pure rules over plain data, time passed in."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import ClassVar

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mcos.domain.curation import (
    LogMark,
    Reason,
    Span,
    curation_due,
    guardrail_lines,
    refusal,
    take,
    uncurated,
)
from mcos.domain.heartbeat import Outcome, decide
from mcos.domain.routines import (
    CHECKLIST,
    DEFAULT_INTERVAL,
    Routines,
    Task,
    due_tasks,
    parse_interval,
    parse_routines,
    ran,
    seen,
    show_interval,
)
from mcos.models.offline import CURATE_MARKER, curated

T0 = datetime(2026, 12, 2, 8, 0, tzinfo=UTC)
OPENCLAW = """# Heartbeat

tasks:

- name: inbox-triage
  interval: 30m
  prompt: "Check for urgent unread emails and flag anything time sensitive."
- name: calendar-scan
  interval: 2h
  prompt: "Check for upcoming meetings that need prep or follow-up."

# Additional instructions

- Keep alerts short.
- If nothing needs attention after all due tasks, reply HEARTBEAT_OK.
"""


def minutes(n: float) -> timedelta:
    return timedelta(minutes=n)


class TestIntervals:
    """Cadences are read as OpenClaw writes them, and bad ones are named."""

    @pytest.mark.parametrize(
        ("text", "expected"),
        [
            ("30m", minutes(30)),
            ("2h", timedelta(hours=2)),
            ("1d", timedelta(days=1)),
            ("1h30m", minutes(90)),
            ("90s", timedelta(seconds=90)),
            ("45", minutes(45)),
            ('"2h"', timedelta(hours=2)),
            ("daily", timedelta(days=1)),
            ("Weekly", timedelta(weeks=1)),
            ("1.5h", minutes(90)),
        ],
    )
    def test_durations(self, text: str, expected: timedelta) -> None:
        """Units s/m/h/d/w, compounds, a bare number in minutes, words, quotes."""
        assert parse_interval(text) == expected

    def test_off_switches_an_item_off(self) -> None:
        """``off`` is no cadence at all."""
        assert parse_interval("off") is None
        assert show_interval(None) == "off"

    @pytest.mark.parametrize("text", ["soon", "", "0m", "0", "5x", "h", "-1h"])
    def test_nonsense_is_refused_by_name(self, text: str) -> None:
        """Anything else is a ValueError that quotes what was written."""
        with pytest.raises(ValueError, match=r"interval|longer than zero"):
            parse_interval(text)

    @given(st.integers(min_value=1, max_value=10_000_000))
    def test_shown_intervals_read_back(self, seconds: int) -> None:
        """What the logs show is what the files may write."""
        interval = timedelta(seconds=seconds)
        assert parse_interval(show_interval(interval)) == interval


class TestParse:
    """HEARTBEAT.md as OpenClaw reads it, and as mcos adds to it."""

    def test_an_openclaw_tasks_block_works_unchanged(self) -> None:
        """Both tasks with their own intervals; the prose after the block is context only."""
        routines = parse_routines(OPENCLAW)
        assert routines.tasks == (
            Task(
                "inbox-triage",
                "Check for urgent unread emails and flag anything time sensitive.",
                minutes(30),
                5,
            ),
            Task(
                "calendar-scan",
                "Check for upcoming meetings that need prep or follow-up.",
                timedelta(hours=2),
                8,
            ),
        )
        assert routines.problems == ()

    def test_a_plain_checklist_is_one_item_at_the_default(self) -> None:
        """No tasks block: the file is the checklist, run at the default cadence."""
        routines = parse_routines("# Every heartbeat\n\n1. Mail since the last beat.\n")
        assert [(t.name, t.interval, t.line) for t in routines.tasks] == [
            (CHECKLIST, DEFAULT_INTERVAL, 3)
        ]

    @pytest.mark.parametrize(
        "text",
        [
            "",
            "# Heartbeat\n\n<!-- keep this file empty to skip heartbeat calls -->\n",
            "---\ntitle: x\n---\n# Heading only\n\n- [ ]\n- \n",
        ],
    )
    def test_an_effectively_empty_file_has_no_items(self, text: str) -> None:
        """Headings, comments, frontmatter and empty stubs ask for nothing."""
        assert parse_routines(text).tasks == ()

    def test_the_fleet_file_overrides_and_sets_the_default(self) -> None:
        """Overrides by name win over the file; the default fills items that name none."""
        text = OPENCLAW.replace("  interval: 2h\n", "")
        routines = parse_routines(
            text,
            default=timedelta(hours=6),
            overrides={"inbox-triage": timedelta(hours=1), "ghost": minutes(5)},
        )
        assert {t.name: t.interval for t in routines.tasks} == {
            "inbox-triage": timedelta(hours=1),
            "calendar-scan": timedelta(hours=6),
        }
        assert routines.problems == (
            "the fleet file sets a cadence for 'ghost', which HEARTBEAT.md does not have",
        )

    def test_the_checklist_can_be_switched_off_or_set(self) -> None:
        """``checklist = "off"`` keeps the file as context; a duration sets its cadence."""
        text = "- Review the calendar.\n"
        assert parse_routines(text, overrides={CHECKLIST: None}).tasks[0].interval is None
        assert parse_routines(text, overrides={CHECKLIST: minutes(90)}).tasks[0].interval == (
            minutes(90)
        )

    def test_bad_tasks_are_named_with_their_line(self) -> None:
        """No prompt, no name, a repeat, a bad interval, stray lines: each said, with its line."""
        text = (
            "tasks:\n"
            "- name: d\n  interval: 1h\n"
            "- name: b\n  interval: soon\n  prompt: do b\n"
            "- name: b\n  interval: 1h\n  prompt: again\n"
            "- name:\n  prompt: nameless\n"
            "- not a task\n"
            "- name: c\n  prompt: do c\n  owner: me\n"
        )
        routines = parse_routines(text, default=timedelta(hours=3))
        assert [(t.name, t.interval) for t in routines.tasks] == [
            ("b", timedelta(hours=3)),
            ("c", timedelta(hours=3)),
        ]
        problems = "\n".join(routines.problems)
        assert "HEARTBEAT.md line 2: task 'd' has no prompt; ignored" in problems
        assert "HEARTBEAT.md line 5: task 'b': 'soon' is not an interval" in problems
        assert "runs at the default (3h)" in problems
        assert "HEARTBEAT.md line 7: a second task named 'b'; ignored" in problems
        assert "HEARTBEAT.md line 10: a task without a name; ignored" in problems
        assert "HEARTBEAT.md line 12: '- not a task' is inside the tasks: block" in problems
        assert "task 'c': unknown field(s) ['owner'] ignored" in problems

    def test_line_numbers_count_frontmatter_and_comments(self) -> None:
        """Blanked metadata keeps the lines an operator sees in an editor."""
        text = "---\na: 1\n---\n<!--\nnote\n-->\ntasks:\n- name: x\n  prompt: y\n"
        assert parse_routines(text).tasks[0].line == 8

    def test_a_block_inside_a_comment_is_not_read(self) -> None:
        """A commented-out example declares nothing."""
        text = "# Heartbeat\n<!--\ntasks:\n- name: x\n  prompt: y\n-->\n"
        assert parse_routines(text).tasks == ()


def _routines(*intervals: timedelta | None) -> Routines:
    return Routines(tuple(Task(f"t{i}", f"do {i}", iv) for i, iv in enumerate(intervals)))


class TestDue:
    """An item is due at its cadence: counted from its last run, or from when it appeared."""

    def test_a_new_item_waits_one_interval(self) -> None:
        """First seen at T0 (a restart with no state, a new line in the file): due at T0+1h."""
        routines = _routines(timedelta(hours=1))
        since = seen(routines, {}, T0)
        assert due_tasks(routines, since, T0) == ()
        assert due_tasks(routines, since, T0 + minutes(59)) == ()
        assert due_tasks(routines, since, T0 + minutes(60)) == routines.tasks

    def test_not_yet_seen_is_never_due(self) -> None:
        """Without a ``since`` an item is not due (the runtime records it first)."""
        assert due_tasks(_routines(minutes(1)), {}, T0 + timedelta(days=9)) == ()

    def test_grace_runs_it_at_the_nearest_beat(self) -> None:
        """Beats 30 minutes apart with jitter: an hourly item runs at the beat near the hour,
        not the one after (which would make it every 90 minutes)."""
        routines = _routines(timedelta(hours=1))
        since = {"t0": T0}
        early_beat = T0 + minutes(59) - timedelta(seconds=20)
        assert due_tasks(routines, since, early_beat) == ()
        assert due_tasks(routines, since, early_beat, grace=minutes(15)) == routines.tasks
        assert due_tasks(routines, since, T0 + minutes(44), grace=minutes(15)) == ()

    def test_only_the_items_due_run_and_ran_restarts_their_clock(self) -> None:
        """Each item keeps its own cadence; running one does not move another."""
        routines = _routines(minutes(30), timedelta(hours=2), None)
        since = seen(routines, {}, T0)
        times = [T0 + minutes(30 * k) for k in range(1, 9)]
        runs: dict[str, int] = {}
        for now in times:
            due = due_tasks(routines, since, now)
            for t in due:
                runs[t.name] = runs.get(t.name, 0) + 1
            since = ran(since, due, now)
        assert runs == {"t0": 8, "t1": 2}

    def test_a_failed_turn_leaves_them_due(self) -> None:
        """Not marked as run, an item is still due at the next beat, and the next."""
        routines = _routines(timedelta(hours=1))
        since = {"t0": T0}
        assert due_tasks(routines, since, T0 + minutes(60)) == routines.tasks
        assert due_tasks(routines, since, T0 + minutes(90)) == routines.tasks
        since = ran(since, routines.tasks, T0 + minutes(90))
        assert due_tasks(routines, since, T0 + minutes(120)) == ()

    def test_a_restart_keeps_the_clock(self) -> None:
        """``since`` kept across a restart: nothing reruns early, nothing is forgotten."""
        routines = _routines(timedelta(hours=6))
        before = ran(seen(routines, {}, T0), routines.tasks, T0)
        after_restart = seen(routines, dict(before), T0 + timedelta(hours=5))
        assert after_restart == before
        assert due_tasks(routines, after_restart, T0 + timedelta(hours=5)) == ()
        assert due_tasks(routines, after_restart, T0 + timedelta(hours=6)) == routines.tasks

    def test_removed_items_are_forgotten(self) -> None:
        """An item gone from the file drops out of ``since``; added back, it counts anew."""
        old = {"t0": T0, "gone": T0}
        assert seen(_routines(minutes(5)), old, T0 + minutes(1)) == {"t0": T0}

    def test_an_empty_file_never_calls_the_model(self) -> None:
        """No items, no findings: HEARTBEAT_OK on every beat, however long."""
        routines = parse_routines("# Heartbeat\n")
        since = seen(routines, {}, T0)
        for k in range(100):
            due = due_tasks(routines, since, T0 + timedelta(hours=k))
            assert decide([], active=True, routine=bool(due)).outcome is Outcome.OK

    def test_due_items_wait_outside_active_hours_and_over_budget(self) -> None:
        """A due item makes a turn only when the agent is active and within budget; it stays
        due meanwhile."""
        routines = _routines(timedelta(hours=1))
        since = {"t0": T0}
        now = T0 + timedelta(hours=3)
        due = due_tasks(routines, since, now)
        assert decide([], active=False, routine=bool(due)).outcome is Outcome.INACTIVE
        assert decide([], active=True, over_budget=True, routine=bool(due)).outcome is (
            Outcome.OVER_BUDGET
        )
        assert due_tasks(routines, since, now + timedelta(hours=1)) == due
        assert decide([], active=True, routine=bool(due)).outcome is Outcome.TURN

    @given(
        st.lists(st.integers(min_value=1, max_value=600), min_size=1, max_size=4),
        st.integers(min_value=5, max_value=60),
        st.integers(min_value=1, max_value=200),
    )
    def test_runs_never_come_closer_than_the_interval_less_grace(
        self, intervals: list[int], beat: int, beats: int
    ) -> None:
        """Whatever the cadences and beats: two runs of an item are at least its interval
        (less the grace) apart, and an item due is run within one beat."""
        routines = _routines(*(minutes(i) for i in intervals))
        grace = minutes(beat / 2)
        since = seen(routines, {}, T0)
        last: dict[str, datetime] = dict(since)
        for k in range(1, beats + 1):
            now = T0 + minutes(beat * k)
            due = due_tasks(routines, since, now, grace=grace)
            for t in due:
                assert t.interval is not None
                assert now - last[t.name] >= t.interval - grace
                last[t.name] = now
            since = ran(since, due, now)
            for t in routines.tasks:
                assert t.interval is not None
                assert now - last[t.name] < t.interval - grace + minutes(beat)


MEMORY = """# MEMORY

## Guardrails
- Deploys go through staging first.
  - even hotfixes

## People
- The founder prefers short messages.
- NEVER share the customer list outside the fleet.
- **Do not** restart the database during business hours.

### Rules of thumb
Check twice.

## Projects
- Shop launch on 2026-12-10.
"""


class TestGuardrails:
    """What a curated MEMORY.md must keep, defined mechanically."""

    def test_guardrail_lines_by_heading_and_by_wording(self) -> None:
        """Sections under a guardrail/never/rule heading, and NEVER/ALWAYS/DO NOT lines."""
        assert guardrail_lines(MEMORY) == (
            "## Guardrails",
            "- Deploys go through staging first.",
            "- even hotfixes",
            "- NEVER share the customer list outside the fleet.",
            "- **Do not** restart the database during business hours.",
            "### Rules of thumb",
            "Check twice.",
        )

    def test_a_version_that_keeps_them_is_accepted(self) -> None:
        """Stale facts may go, guardrails may move; none may change."""
        new = (
            "# MEMORY\n\n### Rules of thumb\nCheck twice.\n## Guardrails\n"
            "- Deploys go through staging first.\n    - even hotfixes\n"
            "- NEVER share the customer list outside the fleet.\n"
            "- **Do not** restart the database during business hours.\n"
            "- Shop launched 2026-12-10; first sale the same day.\n"
        )
        assert refusal(MEMORY, new, 10_000) is None

    def test_a_version_that_drops_or_rewords_one_is_refused(self) -> None:
        """Dropping or rewording a guardrail line refuses the whole version, naming it."""
        new = MEMORY.replace("NEVER share", "Never really share")
        why = refusal(MEMORY, new, 10_000)
        assert why is not None
        assert "drops 1 guardrail line(s)" in why
        assert "NEVER share the customer list" in why

    def test_over_the_cap_or_empty_is_refused(self) -> None:
        """The cap is a hard bound; an empty MEMORY.md is not a curation."""
        assert refusal(MEMORY, MEMORY, len(MEMORY) - 1) == (
            f"the new MEMORY.md has {len(MEMORY):,} characters; at most {len(MEMORY) - 1:,}"
        )
        assert refusal(MEMORY, "  \n", 100) == "the new MEMORY.md is empty"

    def test_no_guardrails_no_constraint(self) -> None:
        """A MEMORY.md with no guardrail lines may be rewritten freely (within the cap)."""
        assert guardrail_lines("# MEMORY\n- a fact\n## Never mind\n") == ("## Never mind",)
        assert refusal("# MEMORY\n- a fact\n", "# MEMORY\n- another\n", 100) is None


class TestLogs:
    """Which daily-log bytes a curation reads."""

    LOGS: ClassVar[list[tuple[str, int]]] = [
        ("2026-12-01.md", 500),
        ("2026-12-02.md", 300),
        ("notes.md", 50),
    ]

    def test_everything_at_first(self) -> None:
        """No mark: every daily log, oldest first; other files are not logs."""
        assert uncurated(self.LOGS, None) == [
            Span("2026-12-01.md", 0, 500),
            Span("2026-12-02.md", 0, 300),
        ]

    def test_past_the_mark_only(self) -> None:
        """Logs before the mark's are done; the mark's from its offset on."""
        assert uncurated(self.LOGS, LogMark("2026-12-01.md", 450)) == [
            Span("2026-12-01.md", 450, 500),
            Span("2026-12-02.md", 0, 300),
        ]
        assert uncurated(self.LOGS, LogMark("2026-12-02.md", 300)) == []

    def test_a_log_that_shrank_is_read_again(self) -> None:
        """Replaced by hand below the mark: read from its start."""
        assert uncurated(self.LOGS, LogMark("2026-12-02.md", 999)) == [
            Span("2026-12-02.md", 0, 300)
        ]

    def test_take_bounds_the_input(self) -> None:
        """Oldest first, cut at the budget."""
        spans = uncurated(self.LOGS, None)
        assert take(spans, 600) == [Span("2026-12-01.md", 0, 500), Span("2026-12-02.md", 0, 100)]
        assert take(spans, 10_000) == spans
        assert take(spans, 0) == [Span("2026-12-01.md", 0, 1)]


class TestCurationDue:
    """Curation at its cadence, early when much piled up, never for nothing."""

    DAY = timedelta(days=1)

    def due(self, hours: float, new: int, **kw: object) -> Reason | None:
        args: dict[str, object] = {
            "last": T0,
            "now": T0 + timedelta(hours=hours),
            "every": self.DAY,
            "new_bytes": new,
            "after_bytes": 20_000,
        } | kw
        return curation_due(**args)  # type: ignore[arg-type]

    def test_cadence(self) -> None:
        """Due a day after the last one, not before."""
        assert self.due(23, 100) is None
        assert self.due(24, 100) is Reason.CADENCE
        assert self.due(23.8, 100, grace=timedelta(minutes=15)) is Reason.CADENCE

    def test_nothing_new_nothing_due(self) -> None:
        """A day of nothing logged: no model call."""
        assert self.due(72, 0) is None

    def test_size_triggers_early(self) -> None:
        """The logs since the last curation reached the size: due now."""
        assert self.due(1, 19_999) is None
        assert self.due(1, 20_000) is Reason.SIZE

    def test_a_refused_or_failed_curation_waits_for_its_retry(self) -> None:
        """No model call on every beat after a refusal."""
        retry = T0 + timedelta(hours=30)
        assert self.due(29, 50_000, retry_at=retry) is None
        assert self.due(30, 50_000, retry_at=retry) is Reason.CADENCE

    def test_off(self) -> None:
        """``every`` None: never."""
        assert self.due(1_000, 10**9, every=None) is None


class TestOfflineCuration:
    """The offline model's curation: valid by construction, whatever the sizes."""

    @staticmethod
    def turn(memory: str, logs: str, cap: int) -> str:
        return (
            f"{CURATE_MARKER}: distil your daily logs into MEMORY.md.\nAt most {cap:,} "
            f"characters.\n<<<MEMORY.md\n{memory}\n>>>END MEMORY.md\n\n<<<LOGS\n{logs}\n>>>END LOGS"
        )

    def test_adds_the_days_notes_and_keeps_every_guardrail(self) -> None:
        """The last distinct notes, not the runtime's bookkeeping, under a dated heading."""
        logs = (
            "## 2026-12-02\n- 08:00:00 started (offline model)\n"
            "- 09:00:00 [offline model] decided: free returns\n"
            "- 09:30:00 heartbeat turn (offline model): done\n"
            "- 10:00:00 [offline model] decided: free returns\n"
        )
        new = curated(self.turn(MEMORY, logs, 10_000))
        assert refusal(MEMORY, new, 10_000) is None
        assert new.count("- decided: free returns") == 1
        assert "started" not in new.split("# Distilled")[1]
        assert "# Distilled from the daily logs 2026-12-02 (offline model)" in new

    @given(st.integers(min_value=400, max_value=3_000), st.integers(min_value=0, max_value=80))
    def test_fits_the_cap_by_dropping_old_lines_never_guardrails(
        self, cap: int, extra: int
    ) -> None:
        """A MEMORY.md grown past the cap is cut from its oldest plain lines down to it."""
        memory = MEMORY + "".join(
            f"- fact number {i} worth keeping a while\n" for i in range(extra)
        )
        logs = "## 2026-12-02\n" + "".join(f"- 09:00:{i:02d} note {i}\n" for i in range(30))
        new = curated(self.turn(memory, logs, cap))
        assert refusal(memory, new, cap) is None
