"""The turn loop: one model turn at a time, every call within the budget.

A turn is the tool loop — call the model, run the tools it asks for, call it again — until the
model stops asking or a round of actions ends it. Each call is metered by Mission Control: at the
gateway, or (direct mode) by reserving its worst case first and reporting its tokens after; a
429, an outage or a spent budget stops the turn (``TurnStopped``) and cools the agent down. A
no-progress breaker pauses a looping agent. A context nearly full — checked between the rounds
of a turn and after it — is flushed (the main session to WORKSTATE.md, an isolated turn to the
daily log) and compacted. Only calls that succeeded teach the cache-TTL rule how often turns
come and how many calls they make.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

from mcos.api_models import CallReport
from mcos.api_traces import Outcome
from mcos.client import Calls
from mcos.domain.agent_state import AgentStatus
from mcos.domain.budget import Pricing, cost_micros
from mcos.domain.heartbeat import HEARTBEAT_OK, CacheTTL, needs_flush
from mcos.domain.messages import Priority, next_utc_day, resume_at, unavailable_backoff
from mcos.domain.redaction import redact
from mcos.exceptions import (
    McosError,
    ModelError,
    ModelUnavailable,
    OverBudget,
    RateLimited,
    SpendLimitReached,
)
from mcos.logs import get_logger
from mcos.models.base import ModelReply, ModelRequest, TextBlock, ToolCall, ToolResult, Turn
from mcos.runtime.context import (
    CONTINUE,
    append_user,
    build_request,
    cache_ttl,
    compacted,
    flush_text,
    notes_summary,
    only_done_actions,
    tainted,
    workstate_summary,
)
from mcos.runtime.state import AgentState
from mcos.runtime.telemetry import INPUT_TOKENS, OUTPUT_TOKENS, Recorder
from mcos.runtime.tracing import TurnTrace, stopped_outcome, woke_by_kind
from mcos.runtime.tracing import post as post_trace
from mcos.runtime.workspace import Prompt, TurnKind

log = get_logger("mcos.runtime")

WORKSTATE_TOOL = "write_workstate"
FLUSH_ROUNDS = 3
"""Calls a flush may make (the model may write, then say it is done)."""
ISOLATED_OUTCOME_CHARS = 2_000
"""An isolated turn's context is gone when it ends: its final answer, this long, is its record
in the daily log (a main-session turn's first 300 characters, the rest is in the session)."""


class TurnStopped(Exception):
    """A turn ended early: over budget, cooling down, or the model failed.

    ``until`` set: the agent *could not act* and its messages are deferred to then (no attempt
    used); None: the turn was tried and failed, and its messages are nacked.
    """

    def __init__(self, why: str, until: datetime | None = None) -> None:
        super().__init__(why)
        self.until = until


@dataclass
class Stats:
    """What the agent did, for status and the fleet-day benchmark."""

    beats: int = 0
    beats_ok: int = 0
    turns: int = 0
    model_calls: int = 0
    flushes: int = 0
    handled: int = 0
    cost_micros: int = 0
    routine_turns: int = 0
    """Heartbeat turns that ran routine items of HEARTBEAT.md (batched, with any findings)."""
    curation_turns: int = 0
    """Turns that distilled the daily logs into MEMORY.md (written or refused)."""
    batch_calls: int = 0
    """Model calls answered through a batch API (cron jobs with a deadline)."""
    batch_saved_micros: int = 0
    """What those calls cost less than direct calls would have."""
    tokens: dict[str, int] = field(
        default_factory=lambda: dict.fromkeys(("input", "output", "cache_read", "cache_write"), 0)
    )


class TurnLoop(AgentState):
    """The turn loop and the model calls it makes, each within the budget."""

    # --- model calls with budget ----------------------------------------------------------------
    async def _call_model(self, request: ModelRequest, purpose: str) -> ModelReply:
        """One model call within the budget: through the gateway, which meters it; or in direct
        mode, reserve the worst case first, ask for no more output than the reservation grants,
        and report the tokens after (Mission Control prices them). A turn's trace records it."""
        began = time.perf_counter()
        held: int | None = None
        try:
            held, request = await self._reserve(request, purpose)
            day = self.clock.now().date().isoformat()
            reply = await self._complete(request, day, held, purpose)
        except TurnStopped as e:
            if self.trace is not None:
                self.trace.refused_or_failed(
                    self.provider.model, purpose, time.perf_counter() - began, held, str(e)
                )
            raise
        if self.trace is not None:
            self.trace.called(
                self.provider.model,
                purpose,
                time.perf_counter() - began,
                reply,
                cost_micros=cost_micros(reply.usage, self.provider.price, self.clock.now()),
                reservation=held if held is not None else reply.reservation,
            )
        return reply

    async def _reserve(
        self, request: ModelRequest, purpose: str, *, batch: bool = False
    ) -> tuple[int | None, ModelRequest]:
        """Hold the call's worst case with Mission Control (direct mode; a batch call's at the
        batch rates): the reservation's id — None through the gateway, which holds it — and the
        request with the output the budget pays for. A spent budget or a cooldown stops the
        turn first."""
        now = self.clock.now()
        day = now.date().isoformat()
        if self.blocked_day == day:
            raise TurnStopped("over budget", next_utc_day(now))
        if self.cooling_until is not None and now < self.cooling_until:
            raise TurnStopped("cooling down", self.cooling_until)
        if self.provider.metered:
            return None, replace(request, purpose=purpose[:100])
        try:
            held = await self.client.do(
                Calls.reserve(
                    self.provider.model,
                    request.prompt_bytes,
                    request.max_output,
                    cache_ttl=request.cache_ttl,
                    purpose=purpose[:100],
                    batch=batch,
                )
            )
        except OverBudget as e:
            raise await self._refused(e) from e
        if held.warning and day not in self.warned_days:
            self.warned_days.add(day)
            await self._tell_manager(
                f"{self.name}: 80% of today's model budget used",
                f"{self.name} has committed {held.committed_usd:.2f} USD / "
                f"{held.committed_tokens:,} tokens today (budget: {held.budget_usd} USD, "
                f"{held.budget_tokens} tokens).",
                Priority.NORMAL,
            )
        if held.max_output < request.max_output:  # what the rest of the budget pays for
            request = replace(request, max_output=held.max_output)
        return held.id, request

    async def _complete(
        self, request: ModelRequest, day: str, reservation: int | None, purpose: str
    ) -> ModelReply:
        """Make the call; count it; report it when it was reserved here (direct mode). A
        gateway's refusal (``OverBudget``) stops the turn exactly like a refused reservation."""
        try:
            with self.telemetry.chat(
                self.provider.provider, self.provider.model, request.max_output, purpose
            ) as span:
                reply = await self.provider.complete(request)
                span.reply(reply)
        except OverBudget as e:
            raise await self._refused(e, day) from e
        except ModelError as e:
            await self._settle(reservation, None, f"failed:{e.code}")
            until = await self._model_failed(e)
            raise TurnStopped(e.code, until) from e
        self.unavailable = 0
        await self._settle(reservation, reply, purpose)
        return reply

    async def _refused(self, error: OverBudget, day: str | None = None) -> TurnStopped:
        """Stop for the day: the budget cannot pay for the call (a refused reservation, or the
        gateway's 402)."""
        now = self.clock.now()
        await self._over_budget(day or now.date().isoformat(), error.message)
        return TurnStopped("over budget", next_utc_day(now))

    def _price(self, *, batch: bool) -> Pricing:
        """The provider's price; a batch call's at the batch rates."""
        return self.provider.price.batched() if batch else self.provider.price

    async def _settle(
        self,
        reservation: int | None,
        reply: ModelReply | None,
        purpose: str,
        *,
        batch: bool = False,
    ) -> int:
        """Count the call in the agent's stats (its cost computed locally, a batch call's at the
        batch rates) and, in direct mode, report its tokens to settle the reservation; the
        cost."""
        usage = reply.usage if reply else None
        cost = cost_micros(usage, self._price(batch=batch), self.clock.now()) if usage else 0
        self.stats.model_calls += 1 if reply else 0
        self.stats.cost_micros += cost
        if usage is not None:
            for kind in self.stats.tokens:
                self.stats.tokens[kind] += getattr(usage, kind)
            self.context_tokens = usage.context
        if reservation is None:  # metered by Mission Control, at the gateway
            return cost
        report = CallReport(
            reservation_id=reservation,
            provider=self.provider.provider,
            model=self.provider.model,
            purpose=purpose[:100],
            input_tokens=usage.input if usage else 0,
            output_tokens=usage.output if usage else 0,
            cache_read_tokens=usage.cache_read if usage else 0,
            cache_write_tokens=usage.cache_write if usage else 0,
            cache_write_1h_tokens=usage.cache_write_1h if usage else 0,
            batch=batch,
        )
        try:
            await self.client.do(Calls.report_call(report))
        except McosError as e:
            log.warning("could not record a model call", agent=self.name, error=e.message)
        return cost

    async def _over_budget(self, day: str, why: str) -> None:
        self.blocked_day = day
        log.warning("over budget", agent=self.name, day=day, why=why)
        await self.report(AgentStatus.OVER_BUDGET, why, until=next_utc_day(self.clock.now()))
        if day not in self.reported_days:
            self.reported_days.add(day)
            self._log(f"over budget: no model calls until the day turns ({why})")
            await self._tell_manager(
                f"{self.name} is over budget",
                f"{why}\nNo model calls until the day turns.",
                Priority.HIGH,
            )

    def _cool_down(self, now: datetime, length: timedelta) -> datetime:
        """Cool down for ``length``; the loop wakes just after (jittered, never 30 s late)."""
        self.cooling_until = now + length
        log.warning("cooling down", agent=self.name, until=self.cooling_until.isoformat())
        self.resume_at = resume_at(self.cooling_until, length, self.rng.random())
        return self.cooling_until

    async def _model_failed(self, error: ModelError) -> datetime | None:
        """Record a failed model call; when the agent could not act, until when (its messages
        are deferred to then), else None (the turn failed: its messages are nacked)."""
        now = self.clock.now()
        log.warning("model call failed", agent=self.name, code=error.code, error=error.message)
        if isinstance(error, RateLimited):
            until = self._cool_down(now, timedelta(seconds=error.retry_after))
            self._log(f"rate limited: cooling down until {until:%H:%M:%S}")
            await self.report(AgentStatus.COOLING_DOWN, error.message, until=until)
            return until
        if isinstance(error, ModelUnavailable):
            self.unavailable += 1
            wait = unavailable_backoff(
                self.unavailable, self.settings.unavailable_base, self.settings.unavailable_cap
            )
            until = self._cool_down(now, wait)
            self._log(f"model unavailable ({error.message}): next try at {until:%H:%M:%S}")
            await self.report(
                AgentStatus.COOLING_DOWN, f"model unavailable: {error.message}", until=until
            )
            return until
        if isinstance(error, SpendLimitReached):
            day = now.date().isoformat()
            self.blocked_day = day
            self._log(f"provider spend limit reached: {error.message}")
            await self.report(AgentStatus.OVER_BUDGET, error.message, until=next_utc_day(now))
            if f"spend:{day}" not in self.reported_days:
                self.reported_days.add(f"spend:{day}")
                await self._tell_manager(
                    f"ALERT: {self.name}'s model account hit its spend limit",
                    f"{error.message}\nThe agent makes no model calls until the day turns or "
                    "it is restarted after the limit is raised.",
                    Priority.URGENT,
                )
            return next_utc_day(now)
        self._log(f"model call failed: {error.message}")
        await self.report(AgentStatus.IDLE, f"last model call failed: {error.message}")
        return None

    def _cache_ttl(self) -> CacheTTL:
        """The cache lifetime for this turn's calls (the benchmark's strategies override it)."""
        return cache_ttl(self.provider.caches, self.turn_gap, self.calls_per_turn)

    def _workstate_tools(self) -> tuple[str, ...]:
        """``write_workstate`` unless the allowlist has it already (a tool is offered once)."""
        return () if WORKSTATE_TOOL in self.tools.allowed else (WORKSTATE_TOOL,)

    def _request(self, prompt: Prompt, turns: list[Turn]) -> ModelRequest:
        """One call's request. ``write_workstate`` is offered on every call of every kind: one
        tool list, so the flush reads the session back from the cache instead of writing a
        nearly full context again (tools come first in the cached prefix)."""
        return build_request(
            prompt,
            self.config,
            self.name,
            self.clock.now(),
            turns,
            self.tools.specs(extra=self._workstate_tools()),
            self._cache_ttl(),
        )

    def _context_full(self) -> bool:
        return needs_flush(
            self.context_tokens, self.config.model.context_window, self.settings.flush_threshold
        )

    # --- turns ----------------------------------------------------------------------------------
    async def turn(self, kind: TurnKind, text: str, *, main: bool = True) -> str:
        """One model turn (see ``_turn``), traced and observed: what woke it, its prompt, calls
        and tools, posted to Mission Control when it ends, however it ends (a stop by cancellation
        aside); an ``invoke_agent`` span (a child of the message that woke it, when telemetry is
        on) and a log line at its start and end, with what it cost."""
        woke, self.woke = self.woke or woke_by_kind(kind), None
        waking, self.waking = self.waking, []
        trace = self.trace = TurnTrace(kind.value, woke, self.clock.now())
        self.ctx.sent.clear()
        self.ctx.refusals.clear()
        before = (self.stats.cost_micros, self.stats.model_calls, dict(self.stats.tokens))
        began = time.monotonic()
        log.info("turn started", agent=self.name, kind=kind.value, messages=[m.id for m in waking])
        outcome: Outcome = "ok"
        error = final = ""
        said = "error"  # the log's and span's outcome: done, stopped: why, error
        cancelled = False
        with self.telemetry.turn(
            kind.value, self.provider.provider, self.provider.model, waking
        ) as span:
            try:
                final = await self._turn(kind, text, main=main)
                said = "done"
            except TurnStopped as e:
                outcome, error, said = stopped_outcome(str(e)), str(e), f"stopped: {e}"
                raise
            except asyncio.CancelledError:
                cancelled = True
                raise
            except Exception as e:
                outcome, error = "error", f"{type(e).__name__}: {e}"
                raise
            finally:
                self.trace = None
                self._observed_end(kind, span, before, began, said)
                if not cancelled:
                    done = trace.finish(outcome, final=final, error=error, sent=list(self.ctx.sent))
                    await post_trace(self.client, done, self.name)
                    if self.sync is not None:  # the workspace follows the agent
                        await self.sync.push_quietly()
        return final

    def _observed_end(
        self,
        kind: TurnKind,
        span: Recorder,
        before: tuple[int, int, dict[str, int]],
        began: float,
        outcome: str,
    ) -> None:
        """The turn's span attributes and its "turn ended" log line, with what it cost."""
        tokens = {k: v - before[2][k] for k, v in self.stats.tokens.items()}
        cost = (self.stats.cost_micros - before[0]) / 1_000_000
        span.set({"mcos.cost_usd": cost, "mcos.outcome": outcome})
        span.set({INPUT_TOKENS: tokens["input"] + tokens["cache_read"]
                  + tokens["cache_write"], OUTPUT_TOKENS: tokens["output"]})  # fmt: skip
        log.info(
            "turn ended",
            agent=self.name,
            kind=kind.value,
            outcome=outcome,
            cost_usd=cost,
            model_calls=self.stats.model_calls - before[1],
            tokens=tokens,
            duration_s=round(time.monotonic() - began, 3),
        )

    async def _turn(self, kind: TurnKind, text: str, *, main: bool = True) -> str:
        """One model turn: the tool loop until the model stops asking, bounded in rounds.

        The workspace is read once, at the start: every call of the turn has the same cached
        prefix. The turn's gap and its calls feed the TTL rule only if a call succeeded: a turn
        refused or failed says nothing about how often the cache would be read.
        """
        now = self.clock.now()
        self._may_call(now)
        prompt = self.workspace.prompt(kind)
        turns = list(self.history) if main else []
        append_user(turns, (TextBlock(text),))
        # An isolated turn must not overwrite the main session's working state.
        extra = self._workstate_tools() if main else ()
        actions_before = len(self.ctx.actions)
        calls = 0
        flush_tried = seen_untrusted = False
        await self._report_running(kind)
        learned = self._turn_starts(now)
        self.busy = True
        reply: ModelReply | None = None
        try:
            for _ in range(self.config.max_tool_rounds):
                request = self._request(prompt, turns)
                if self.trace is not None:
                    self.trace.saw(prompt, request)
                reply = await self._call_model(request, kind.value)
                calls += 1
                turns.append(reply.turn)
                if not reply.tool_calls:
                    break
                # Outside content seen in this turn taints the rest of it, a compaction included.
                seen_untrusted = seen_untrusted or tainted(turns)
                if await self._tool_round(turns, reply, untrusted=seen_untrusted, extra=extra):
                    break  # the results reach the model at the start of its next turn
                if not flush_tried and self._context_full():  # before the next round
                    flush_tried = True  # once a turn: a model that will not save is not asked again
                    turns = await self._flush_mid_turn(prompt, turns, isolated=not main)
            else:
                self._log(f"{kind.value} turn stopped at {self.config.max_tool_rounds} tool rounds")
        finally:
            self.busy = False
            self.stats.turns += 1
            self._turn_ends(calls, learned)
        final = reply.text.strip() if reply else ""
        progressed = len(self.ctx.actions) > actions_before
        await self._turn_ended(kind, now, final, progressed=progressed, main=main)
        if main:
            self.history = turns
            if self._context_full():
                await self.flush_and_compact()
        if not self.paused and self._state and self._state[0] is AgentStatus.RUNNING:
            await self.report(AgentStatus.IDLE)
        return final

    async def _tool_round(
        self,
        turns: list[Turn],
        reply: ModelReply,
        *,
        untrusted: bool,
        extra: tuple[str, ...] = (),
    ) -> bool:
        """Run the tools ``reply`` asks for (``untrusted``: the turn has seen outside content)
        and add their results to ``turns``; whether that ends the turn (a round of actions
        only: the results reach the model at the start of its next turn)."""
        self.ctx.tainted = untrusted
        done: list[ToolResult] = []
        for call in reply.tool_calls:
            refused, began = len(self.ctx.refusals), time.perf_counter()
            done.append(await self._tool(call, extra))
            if self.trace is not None:
                why = "; ".join(self.ctx.refusals[refused:])
                self.trace.tool(call, done[-1], time.perf_counter() - began, refused=why)
        results = tuple(done)
        append_user(turns, results)
        return self.settings.end_on_actions and only_done_actions(reply, results)

    async def _tool(self, call: ToolCall, extra: tuple[str, ...]) -> ToolResult:
        """One tool call, observed: an ``execute_tool`` span and a log line (never its
        arguments or result: those are in the turn's trace, redacted)."""
        began = time.monotonic()
        with self.telemetry.tool(call.name, call.id) as span:
            result = await self.tools.call(call, extra=extra)
            if result.is_error:
                span.fail("refused" if result.content.startswith("refused") else "tool_error")
        took = round((time.monotonic() - began) * 1000, 1)
        if not result.is_error:
            log.info("tool called", agent=self.name, tool=call.name, duration_ms=took)
        else:
            refused = "refused" in result.content[:200].casefold()
            log.warning(
                "tool refused" if refused else "tool failed",
                agent=self.name,
                tool=call.name,
                duration_ms=took,
                error=result.content[:300],
            )
        return result

    async def _turn_ended(
        self, kind: TurnKind, began: datetime, final: str, *, progressed: bool, main: bool
    ) -> None:
        """Log the turn's last words (an isolated turn's outcome at length: it is all that is
        kept of it) and count the turn for the no-progress breaker."""
        shown = final[: ISOLATED_OUTCOME_CHARS if not main else 300]
        self._log(f"{kind.value} turn ({self.provider.label}): {shown or '(no text)'}")
        was_paused = self.paused
        self._breaker(began, progressed=progressed, text=final)
        if self.paused and not was_paused:
            await self._paused_report()

    def _may_call(self, now: datetime) -> None:
        """Stop a turn before it starts when the day's budget is spent or the agent cools down."""
        if self.blocked_day == now.date().isoformat():
            raise TurnStopped("over budget", next_utc_day(now))
        if self.cooling() and self.cooling_until is not None:
            raise TurnStopped("cooling down", self.cooling_until)

    def _turn_starts(self, now: datetime) -> tuple[timedelta, datetime | None]:
        """Feed the gap since the last turn to its moving average; returns what to restore if
        no call of this turn succeeds."""
        learned = (self.turn_gap, self.last_turn_at)
        if self.last_turn_at is not None:
            self.turn_gap = (self.turn_gap * 3 + (now - self.last_turn_at)) / 4
        self.last_turn_at = now
        return learned

    def _turn_ends(self, calls: int, learned: tuple[timedelta, datetime | None]) -> None:
        """Feed the turn's successful calls to their moving average — or, when none succeeded
        (refused, rate limited, failed), forget the turn: it says nothing about the cache."""
        if calls:
            self.calls_per_turn = (self.calls_per_turn * 3 + calls) / 4
        else:
            self.turn_gap, self.last_turn_at = learned

    async def _report_running(self, kind: TurnKind) -> None:
        """Say a turn starts; a pause Mission Control holds stops it before any model call."""
        await self.report(AgentStatus.RUNNING, f"{kind.value} turn")
        if self.paused:
            raise TurnStopped("paused by Mission Control")

    def _breaker(self, now: datetime, *, progressed: bool, text: str) -> None:
        if progressed or text.startswith(HEARTBEAT_OK):
            self.no_progress.clear()
            return
        self.no_progress.append(now)
        while self.no_progress and now - self.no_progress[0] > self.settings.breaker_window:
            self.no_progress.popleft()
        if len(self.no_progress) >= self.settings.breaker_turns:
            self.paused = True

    async def _paused_report(self) -> None:
        why = (
            f"paused by the circuit breaker: {len(self.no_progress)} turns in "
            f"{self.settings.breaker_window} without a tool call, message or log entry"
        )
        self._log(why)
        await self.report(AgentStatus.PAUSED, why + " — resume with `mcos agent resume`")
        await self._tell_manager(f"{self.name} paused (no-progress loop)", why, Priority.HIGH)

    async def flush_and_compact(self) -> None:
        """Write WORKSTATE.md through the model, then keep a summary and the recent turns."""
        self.history = await self._flush(
            self.workspace.prompt(TurnKind.MAIN), self.history, isolated=False
        )

    async def _flush_mid_turn(
        self, prompt: Prompt, turns: list[Turn], *, isolated: bool
    ) -> list[Turn]:
        """Flush between two rounds; the compacted turns end with a user turn to go on from."""
        turns = await self._flush(prompt, turns, isolated=isolated)
        if turns[-1].role == "assistant":
            append_user(turns, (TextBlock(CONTINUE),))
        return turns

    async def _flush(self, prompt: Prompt, turns: list[Turn], *, isolated: bool) -> list[Turn]:
        """Have the model save what it knows, then ``turns`` compacted (unchanged if it saved
        nothing). The main session saves to WORKSTATE.md; an isolated turn logs its progress
        with ``memory_write`` (its notes are the summary it goes on from)."""
        used = self.context_tokens / self.config.model.context_window
        asked = list(turns)
        append_user(asked, (TextBlock(flush_text(used, isolated=isolated)),))
        path = self.workspace.root / "WORKSTATE.md"
        before = path.stat().st_mtime_ns if path.exists() else None
        extra = () if isolated else self._workstate_tools()
        notes: list[str] = []
        for _ in range(FLUSH_ROUNDS):
            reply = await self._call_model(self._request(prompt, asked), "flush")
            asked.append(reply.turn)
            if not reply.tool_calls:
                break
            results = tuple([await self._tool(c, extra) for c in reply.tool_calls])
            append_user(asked, results)
            notes += [
                redact(str(c.input.get("text", ""))).strip()
                for c, r in zip(reply.tool_calls, results, strict=True)
                if c.name == "memory_write" and not r.is_error and not c.input.get("durable")
            ]
        if isolated:
            notes = [n for n in notes if n]
            if not notes:
                self._log("flush of an isolated turn logged nothing; context kept, not compacted")
                return turns
            summary, saved = notes_summary(notes), "progress logged"
        else:
            if not path.exists() or path.stat().st_mtime_ns == before:
                self._log("flush turn did not write WORKSTATE.md; context kept, not compacted")
                return turns
            summary = workstate_summary(path.read_text(encoding="utf-8"))
            saved = "WORKSTATE.md written"
        self.stats.flushes += 1
        self.context_tokens = 0
        what = "turn" if isolated else "session"
        self._log(f"context {used:.0%} full: {saved}, {what} compacted")
        return compacted(turns, self.settings.keep_turns, summary)
