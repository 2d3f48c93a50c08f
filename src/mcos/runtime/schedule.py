"""Scheduling: heartbeats, cron jobs, promised reports, and when the agent wakes or waits.

A beat runs the deterministic checks (with any allowlisted recovery) and calls the model only
when a finding needs judgement. Cron jobs fire on their schedule; a fire the agent could not run
(paused, over budget, cooling down, the process down) is kept as owed in the workspace and run
once or skipped by the job's ``missed`` setting. ``next_wake`` and ``held_until`` tell the loop
when to wake and until when the model cannot be called.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import replace
from datetime import UTC, datetime, time, timedelta
from pathlib import Path
from typing import Any

from mcos.config.models import CheckConfig, CronJob
from mcos.domain.agent_state import AgentStatus
from mcos.domain.curation import Reason
from mcos.domain.heartbeat import (
    HEARTBEAT_OK,
    MAX_COUNTED_FIRES,
    CronAction,
    CronSlot,
    Finding,
    MissedPolicy,
    Outcome,
    Urgency,
    decide,
    decide_cron,
    missed,
    next_beat,
    next_cron_fire,
)
from mcos.domain.messages import Priority, next_utc_day, resume_at
from mcos.domain.routines import (
    Routines,
    Task,
    due_tasks,
    parse_interval,
    parse_routines,
    ran,
    seen,
    show_interval,
)
from mcos.exceptions import Fenced, McosError
from mcos.logs import get_logger
from mcos.runtime.checks import CheckResult
from mcos.runtime.curation import Curator, curate
from mcos.runtime.state import AgentState
from mcos.runtime.tracing import Woke
from mcos.runtime.turns import TurnStopped
from mcos.runtime.workspace import TurnKind

log = get_logger("mcos.runtime")

NOT_RUNNING = "the agent was not running"
STOPPED_MID_RUN = "the agent stopped during the run"
_STOPPED = {
    "over budget": "over budget",
    "cooling down": "cooling down",
    "rate_limited": "rate limited (the model answered 429)",
    "spend_limit_reached": "over budget (the provider's spend limit)",
}
"""Why a stopped turn could not run a cron job, by the reason the turn stopped with."""


def _slot_json(slot: CronSlot, schedule: str) -> dict[str, Any]:
    return {
        "schedule": schedule,
        "next_fire": slot.next_fire.isoformat(),
        "missed_at": slot.missed_at.isoformat() if slot.missed_at else None,
        "missed_count": slot.missed_count,
        "missed_why": slot.missed_why,
        "not_before": slot.not_before.isoformat() if slot.not_before else None,
    }


def _slot_from(saved: object, schedule: str) -> CronSlot | None:
    """A kept slot, if it is readable and for this schedule."""
    if not isinstance(saved, dict) or saved.get("schedule") != schedule:
        return None
    try:
        at, retry = saved.get("missed_at"), saved.get("not_before")
        return CronSlot(
            datetime.fromisoformat(saved["next_fire"]),
            datetime.fromisoformat(at) if at else None,
            int(saved.get("missed_count", 0)),
            str(saved.get("missed_why", "")),
            datetime.fromisoformat(retry) if retry else None,
        )
    except (KeyError, TypeError, ValueError):
        return None


def _names(tasks: tuple[Task, ...]) -> str:
    """``inbox-triage (30m), calendar-scan (2h)`` for the daily log."""
    return ", ".join(f"{t.name} ({show_interval(t.interval)})" for t in tasks)


def _miss_text(job: str, slot: CronSlot, now: datetime) -> str:
    """``cron NAME missed at 23:30 UTC while over budget (3 fires)`` for the daily log."""
    at = slot.missed_at or now
    when = f"{at:%H:%M}" if at.date() == now.date() else f"{at:%Y-%m-%d %H:%M}"
    more = "+" if slot.missed_count >= MAX_COUNTED_FIRES else ""
    fires = f" ({slot.missed_count}{more} fires)" if slot.missed_count > 1 else ""
    return f"cron {job} missed at {when} UTC while {slot.missed_why}{fires}"


class Schedule(AgentState):
    """Heartbeats, health checks, cron jobs and promised reports; when the loop wakes next."""

    # --- heartbeat and cron ---------------------------------------------------------------------
    async def findings(self) -> list[Finding]:
        """The beat's deterministic checks: pending messages and health checks."""
        found = [
            Finding(
                f"message {d.message.id}",
                d.message.subject,
                Urgency.URGENT if d.message.priority is Priority.URGENT else Urgency.NORMAL,
            )
            for d in self.pending.values()
        ]
        if self.config.checks:
            results = await asyncio.gather(*(self.check_runner(c) for c in self.config.checks))
            now = self.clock.now()
            by_name = {c.name: c for c in self.config.checks}
            results = [await self._try_recovery(by_name[r.name], r) for r in results]
            for r in results:
                if r.ok:
                    if self.check_reported.pop(r.name, None) is not None:
                        self._log(f"check {r.name} recovered")
                    continue
                told = self.check_reported.get(r.name)
                if told is not None and now - told < self.settings.recheck_reminder:
                    continue  # the model already knows; the log keeps the beat's result
                found.append(
                    Finding(
                        f"check {r.name}",
                        f"failing: {r.detail}"
                        + (f" (still failing since before {told:%H:%M})" if told else ""),
                        Urgency.URGENT if by_name[r.name].urgent else Urgency.NORMAL,
                    )
                )
        return found

    async def _try_recovery(self, check: CheckConfig, result: CheckResult) -> CheckResult:
        """A failing check with an allowlisted recovery: run it, then look again."""
        if result.ok or check.recover is None:
            return result
        run = await self.recoverer.run(check.recover, result.detail, check=check.name)
        if not run.ran:
            return CheckResult(result.name, False, f"{result.detail}; {run.detail}", result.seconds)
        again = await self.check_runner(check)
        if again.ok:
            self._log(f"check {check.name} failed ({result.detail}); recovered by {run.name}")
            return again
        return CheckResult(
            result.name,
            False,
            f"{again.detail}; recovery {run.name} did not help ({run.detail})",
            result.seconds,
        )

    async def heartbeat(self) -> Outcome:
        """One beat: checks first; the model only if something needs it — a finding, or
        routine items of HEARTBEAT.md due at their cadence (batched into the same turn)."""
        now = self.clock.now()
        self.stats.beats += 1
        self.next_beat_at = next_beat(now, self.interval, self.jitter, self.rng.random())
        found = await self.findings()
        active = self.active is None or self.active.contains(now)
        blocked = self.blocked_day == now.date().isoformat() or self.paused or self.cooling()
        empty = self.workspace.heartbeat_disabled()
        disabled = empty and not self.config.checks
        due = () if empty else self._due_routines(now)
        due = due if active else ()  # they wait for active hours (urgent findings do not)
        decision = decide(
            [] if disabled else found, active=active, over_budget=blocked, routine=bool(due)
        )
        self.last_beat = {"at": now.isoformat(), "outcome": decision.outcome.value}
        if decision.outcome is Outcome.TURN:
            # Pending messages ride along in the same turn; checks and due routine items arrive
            # as extra findings.
            extra = [f for f in decision.findings if not f.source.startswith("message ")]
            extra += [
                Finding(f"routine {t.name}", f"{t.prompt} (every {show_interval(t.interval)})")
                for t in due
            ]
            if await self.handle_messages(extra=extra):
                for f in extra:
                    if f.source.startswith("check "):
                        self.check_reported[f.source.removeprefix("check ")] = now
                if due:
                    self._routines_ran(due, now)
            elif due:
                self._log(f"routine items {_names(due)} stay due: their turn did not complete")
        else:
            self.stats.beats_ok += decision.outcome is Outcome.OK
            await self.report(
                self._state[0] if self._state else AgentStatus.IDLE,
                HEARTBEAT_OK if decision.outcome is Outcome.OK else decision.outcome.value,
            )
        if active and self._cannot_run() is None:
            reason = self.curator.due(self.clock.now(), grace=self.interval / 2)
            if reason is not None and (not empty or reason is Reason.SIZE):
                await curate(self, reason)
        return decision.outcome

    # --- routine items of HEARTBEAT.md, kept in the workspace -----------------------------------
    @property
    def _routines_path(self) -> Path:
        return self.workspace.root / ".mcos" / "routines.json"

    def _init_routines(self) -> None:
        """Load when each routine item last ran (or was first seen), and the curation's state."""
        self.routine_problems = set()
        self.routine_since = {}
        path = self._routines_path
        if path.exists():
            try:
                saved = json.loads(path.read_text(encoding="utf-8"))
                self.routine_since = {
                    str(k): datetime.fromisoformat(v) for k, v in saved["since"].items()
                }
            except (ValueError, KeyError, TypeError, AttributeError) as e:
                log.warning("ignoring unreadable %s (%s)", path, e, agent=self.name)
        hb = self.config.heartbeat
        self.curator = Curator.load(
            self.workspace,
            self.memory,
            self.clock.now(),
            every=parse_interval(hb.curate),
            after_bytes=hb.curate_after,
            cap=hb.memory_cap,
        )

    def _save_routines(self) -> None:
        since = {name: at.isoformat() for name, at in self.routine_since.items()}
        self._routines_path.parent.mkdir(parents=True, exist_ok=True)
        self.workspace.write_atomic(".mcos/routines.json", json.dumps({"since": since}, indent=2))

    def routines(self) -> Routines:
        """HEARTBEAT.md's routine items as they are now, with the fleet file's cadences."""
        path = self.workspace.root / "HEARTBEAT.md"
        text = path.read_text(encoding="utf-8", errors="replace") if path.exists() else ""
        hb = self.config.heartbeat
        return parse_routines(
            text, default=parse_interval(hb.task_interval), overrides=hb.cadences()
        )

    def _due_routines(self, now: datetime) -> tuple[Task, ...]:
        """The items due now (half a beat early counts); new items start counting, removed
        ones are forgotten, and what HEARTBEAT.md gets wrong is said once in the daily log."""
        routines = self.routines()
        for problem in routines.problems:
            if problem not in self.routine_problems:
                self.routine_problems.add(problem)
                self._log(problem)
        since = seen(routines, self.routine_since, now)
        if since != self.routine_since:
            self.routine_since = since
            self._save_routines()
        return due_tasks(routines, since, now, grace=self.interval / 2)

    def _routines_ran(self, tasks: tuple[Task, ...], now: datetime) -> None:
        self.routine_since = ran(self.routine_since, tasks, now)
        self._save_routines()
        self.stats.routine_turns += 1
        self._log(f"routine items run in one heartbeat turn: {_names(tasks)}")

    @property
    def _promised_path(self) -> Path:
        return self.workspace.root / ".mcos" / "promised_reports.json"

    def _load_promised(self) -> list[CronJob]:
        path = self._promised_path
        if not path.exists():
            return []
        try:
            return [CronJob.model_validate(j) for j in json.loads(path.read_text())]
        except (ValueError, TypeError) as e:
            log.warning("ignoring unreadable %s (%s)", path, e, agent=self.name)
            return []

    def promise(self, job: CronJob) -> None:
        """Schedule a recurring job (reports a directive promised); kept across restarts."""
        self.promised = [j for j in self.promised if j.name != job.name] + [job]
        self.cron_slots[job.name] = CronSlot(
            next_cron_fire(job.schedule, self.clock.now(), self._zone(job))
        )
        self._promised_path.parent.mkdir(parents=True, exist_ok=True)
        text = json.dumps([j.model_dump() for j in self.promised], indent=2)
        self.workspace.write_atomic(".mcos/promised_reports.json", text)
        self._save_cron()

    # --- cron jobs: what is due, what was missed --------------------------------------------------
    @property
    def cron_next(self) -> dict[str, datetime]:
        """When each cron job fires next."""
        return {name: slot.next_fire for name, slot in self.cron_slots.items()}

    def _cron_jobs(self) -> tuple[CronJob, ...]:
        return (*self.config.cron, *self.promised)

    def _zone(self, job: CronJob) -> str | None:
        return job.timezone or self.config.heartbeat.timezone or self.fleet.fleet.timezone

    @property
    def _cron_path(self) -> Path:
        return self.workspace.root / ".mcos" / "cron_state.json"

    def _load_cron(self) -> dict[str, CronSlot]:
        """Each job's slot: from the workspace if kept there for the same schedule (fires that
        passed while the process was not running are then owed), else from now."""
        saved: object = {}
        if self._cron_path.exists():
            try:
                saved = json.loads(self._cron_path.read_text())
            except ValueError as e:
                log.warning("ignoring unreadable %s (%s)", self._cron_path, e, agent=self.name)
        if not isinstance(saved, dict):
            saved = {}
        now = self.clock.now()
        slots: dict[str, CronSlot] = {}
        for job in self._cron_jobs():
            zone = self._zone(job)
            slot = _slot_from(saved.get(job.name), job.schedule)
            if slot is None:  # a new job, or its schedule changed: counted from now
                slots[job.name] = CronSlot(next_cron_fire(job.schedule, now, zone))
                continue
            down = decide_cron(job.schedule, slot, now, blocked=NOT_RUNNING, zone=zone)
            slots[job.name] = down.slot
        self.cron_slots = slots
        self._save_cron()
        return slots

    def _save_cron(self, owed_now: dict[str, CronSlot] | None = None) -> None:
        """Keep every job's slot in the workspace (``owed_now``: slots to keep instead, for
        jobs whose run is under way — a crash mid-run makes it owed at the next start)."""
        kept = {**self.cron_slots, **(owed_now or {})}
        jobs = {j.name: j.schedule for j in self._cron_jobs()}
        text = json.dumps(
            {name: _slot_json(slot, jobs[name]) for name, slot in kept.items() if name in jobs},
            indent=2,
        )
        self._cron_path.parent.mkdir(parents=True, exist_ok=True)
        self.workspace.write_atomic(".mcos/cron_state.json", text)

    def _cannot_run(self) -> str | None:
        """Why the agent cannot run a cron job now, or None."""
        if self.paused:
            return "paused"
        if self.blocked_day == self.clock.now().date().isoformat():
            return "over budget"
        if self.cooling():
            return "cooling down"
        return None

    def _cron_wake(self) -> datetime | None:
        """When a job owed a missed run could run: the end of a cooldown or the budget day."""
        owed = [slot for slot in self.cron_slots.values() if slot.owed]
        if not owed:
            return None
        retries = [s.not_before for s in owed if s.not_before is not None]
        if retries and self._cannot_run() is None:
            return min(retries)
        if self.cooling():
            assert self.cooling_until is not None
            return max(self.cooling_until, min(retries)) if retries else self.cooling_until
        now = self.clock.now()
        if self.blocked_day == now.date().isoformat():
            return datetime.combine(now.date() + timedelta(days=1), time(0), tzinfo=UTC)
        return None

    async def run_due_cron(self) -> int:
        """Run every cron job whose time has come, once; isolated ones in a fresh context.

        A job due while the agent cannot run (paused, over budget, cooling down, the model
        unavailable so the turn stopped, the process not running) is recorded as missed; by its
        ``missed`` setting it runs once when the agent can again, however many fires it missed,
        or the missed fires are skipped. The daily log says which.
        """
        ran = 0
        for job in self._cron_jobs():
            now = self.clock.now()
            slot = self.cron_slots[job.name]
            decision = decide_cron(
                job.schedule,
                slot,
                now,
                blocked=self._cannot_run(),
                policy=MissedPolicy(job.missed),
                zone=self._zone(job),
            )
            self.cron_slots[job.name] = decision.slot
            if decision.missed is not None:
                verdict = "skipped" if job.missed == "skip" else "running now"
                self._log(f"{_miss_text(job.name, decision.missed, now)}; {verdict}")
            if decision.action in (CronAction.RUN, CronAction.CATCH_UP):
                ran += await self._run_cron(job, slot, decision.missed)
            elif decision.slot != slot:
                self._save_cron()
        return ran

    def _owe(self, job: CronJob, first: datetime, count: int, why: str, *, retry: bool) -> None:
        """Keep a run that could not happen as owed; after a failure (not a known block such as
        a cooldown or the budget) it is retried no sooner than ``cron_retry`` from now."""
        slot = missed(self.cron_slots[job.name], first, count, why)
        if retry:
            slot = replace(slot, not_before=self.clock.now() + self.settings.cron_retry)
        self.cron_slots[job.name] = slot
        self._save_cron()

    async def _run_cron(self, job: CronJob, before: CronSlot, owed: CronSlot | None) -> int:
        """Run one job's turn; a turn stopped before it could run leaves the job owed."""
        first, count, why = (
            (owed.missed_at, owed.missed_count, owed.missed_why)
            if owed is not None and owed.missed_at is not None
            else (before.next_fire, 1, "")
        )
        under_way = missed(self.cron_slots[job.name], first, count, why or STOPPED_MID_RUN)
        self._save_cron({job.name: under_way})
        kind = TurnKind.ISOLATED if job.session == "isolated" else TurnKind.MAIN
        text = f"- [cron {job.name}] scheduled job\n{job.prompt}"
        try:
            deadline = self.batch_deadline(job, first)
            if deadline is not None:  # the run waits for batches, parked, while the loop goes on
                await self.park(job, text, first, deadline)
            else:
                self.woke = Woke("cron", detail=job.name)
                await self.turn(kind, text, main=job.session == "main")
        except TurnStopped as e:
            stopped = _STOPPED.get(str(e))
            self._owe(job, first, count, why or stopped or f"the model was unavailable ({e})",
                      retry=stopped is None)  # fmt: skip
            return 0
        except Fenced:
            raise
        except McosError:
            self._owe(job, first, count, why or "Mission Control was unreachable", retry=True)
            raise
        self._save_cron()
        return 1

    # --- when the loop wakes ---------------------------------------------------------------------
    def next_wake(self) -> datetime:
        """The earliest of: the next beat, the next cron job, the pending batch's deadline, the
        next look at a parked cron run's batch."""
        times = [self.next_beat_at, *self.cron_next.values()]
        if self.first_pending_at is not None:
            times.append(self.first_pending_at + timedelta(seconds=self.settings.batch_window))
        if self.cooling_until is not None:
            times = [max(t, self.resume_at or self.cooling_until) for t in times]
        if (owed := self._cron_wake()) is not None:
            times.append(owed)
        if (look := self.parked_wake()) is not None:
            times.append(look)
        return min(times)

    def held_until(self) -> datetime | None:
        """Until when the agent cannot call its model (a cooldown or the budget day), if it
        cannot now; meanwhile it claims nothing (messages wait in the inbox, unattempted)."""
        now = self.clock.now()
        if self.cooling_until is not None and now < self.cooling_until:
            return self.resume_at or self.cooling_until
        if self.blocked_day == now.date().isoformat():
            midnight = next_utc_day(now)
            return resume_at(midnight, midnight - now, self.rng.random())
        return None

    def cooling(self) -> bool:
        """Whether a 429's cooldown is still running."""
        return self.cooling_until is not None and self.clock.now() < self.cooling_until
