"""Cron jobs that can wait: their model calls sent as batches, the turn parked between calls.

A job with a ``deadline`` (``CronJob.deadline``) fires like any other, but while the deadline
leaves room its model calls go to the provider's batch API (Anthropic's Message Batches, half
price) instead of being made at once. Between a call and its answer the turn is *parked* — the
conversation so far, the batch, the reservation — in the workspace
(``.mcos/parked_turns.json``): the loop keeps handling messages and beats meanwhile, and a
restart resumes the turn instead of running the job again. Each step of the loop looks at the
parked batches that are due a look (a backoff, ``mcos.domain.batching``); an answer resumes the
turn — its tools run and its next call is batched again while the deadline allows. A batch
still running at ``deadline - batch_window`` is canceled and the turn finished with direct
calls; one that errored or expired is replaced by a direct call. The daily log says which path
ran and what it saved.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

from pydantic import TypeAdapter, ValidationError

from mcos.config.models import CronJob, parse_duration
from mcos.domain.batching import batch_until, next_look
from mcos.domain.budget import MICROS, cost_micros
from mcos.exceptions import ModelError, OverBudget
from mcos.logs import get_logger
from mcos.models.base import BatchingProvider, BatchOutcome, ModelReply, TextBlock, Turn
from mcos.runtime.context import append_user, tainted
from mcos.runtime.turns import TurnLoop, TurnStopped
from mcos.runtime.workspace import TurnKind

log = get_logger("mcos.runtime")

PARKED_FILE = ".mcos/parked_turns.json"


@dataclass
class ParkedTurn:
    """One cron run whose calls go by batch: where its turn stands, kept across restarts."""

    job: str
    fired: datetime
    """The fire this run answers (its deadline counts from it)."""
    deadline: datetime
    window: timedelta
    """The job's ``batch_window``: no batch is waited for past ``deadline - window``."""
    turns: list[Turn]
    """The conversation so far: the job's prompt, then each answer and its tools' results."""
    calls: int = 0
    """Model calls answered so far (by batch or directly)."""
    batch_id: str | None = None
    """The batch holding the call in flight; None between calls."""
    custom_id: str = ""
    hold: int | None = None
    """Mission Control's reservation for the call in flight (at the batch rates); None through
    the gateway, which holds it."""
    give_up: datetime | None = None
    """When the batch in flight is canceled if it has not ended."""
    next_look: datetime | None = None
    looks: int = 0
    direct_only: bool = False
    """Set once a batch was given up on: the rest of the turn is made with direct calls."""
    direct_next: bool = False
    """Set when a batch errored or expired: its call is made again directly."""
    batch_calls: int = 0
    direct_calls: int = 0
    batch_micros: int = 0
    """What the calls answered by batch cost."""
    saved_micros: int = 0
    """What those calls would have cost more as direct calls."""
    progressed: bool = False
    """Whether the run acted (a message, a reply, a log entry): the no-progress breaker's view."""
    last_text: str = ""
    notes: list[str] = field(default_factory=list)
    """Fallbacks taken, for the run's summary in the daily log."""


_PARKED = TypeAdapter(list[ParkedTurn])


def _dollars(micros: int) -> str:
    return f"${micros / MICROS:.4f}"


class BatchedTurns(TurnLoop):
    """Cron runs parked on a batch: sent, looked at, resumed, finished (turns of the turn
    loop, cut where they wait)."""

    @property
    def _parked_path(self) -> Path:
        return self.workspace.root / PARKED_FILE

    def _load_parked(self) -> list[ParkedTurn]:
        """The runs parked before a restart; an unreadable file is kept aside, never lost."""
        path = self._parked_path
        if not path.exists():
            return []
        try:
            return _PARKED.validate_json(path.read_bytes())
        except ValidationError as e:
            aside = path.with_name(f"{path.name}.unreadable-{os.getpid()}")
            path.replace(aside)
            log.warning(
                "%s is unreadable (%s); kept as %s, its runs are not resumed",
                path, e.errors()[0]["msg"], aside, agent=self.name,
            )  # fmt: skip
            self._log(f"parked cron runs unreadable; the file is kept as {aside.name}")
            return []

    def _save_parked(self) -> None:
        self._parked_path.parent.mkdir(parents=True, exist_ok=True)
        self.workspace.write_atomic(PARKED_FILE, _PARKED.dump_json(self.parked, indent=2).decode())

    def batch_deadline(self, job: CronJob, fired: datetime) -> datetime | None:
        """The deadline of ``job``'s run for the fire at ``fired`` when its calls may go by
        batch; None when they are made directly (no deadline, no batch API, too close)."""
        if job.deadline is None:
            return None
        if not isinstance(self.provider, BatchingProvider):
            self._log(f"cron {job.name}: {self.provider.label} has no batch API; direct calls")
            return None
        deadline = fired + parse_duration(job.deadline)
        now = self.clock.now()
        if batch_until(deadline, parse_duration(job.batch_window), now) is None:
            self._log(
                f"cron {job.name}: its deadline ({deadline:%Y-%m-%d %H:%M} UTC) is too close "
                "for a batch; direct calls"
            )
            return None
        return deadline

    async def park(self, job: CronJob, text: str, fired: datetime, deadline: datetime) -> None:
        """Start ``job``'s run with its first call sent as a batch, and park it.

        The run is kept in the workspace once its first batch is sent, so a restart resumes
        it; a budget or cooldown that stops the first call raises ``TurnStopped`` (the fire is
        owed); a batch API that refuses the call has the run made directly, now.
        """
        if any(p.job == job.name and p.fired == fired for p in self.parked):
            # Owed by a process that stopped between parking the run and saving the job as
            # done: the run is parked already, and goes on from there.
            self._log(f"cron {job.name}: the run for {fired:%Y-%m-%d %H:%M} UTC is parked already")
            return
        turns: list[Turn] = []
        append_user(turns, (TextBlock(text),))
        window = parse_duration(job.batch_window)
        parked = ParkedTurn(job.name, fired, deadline, window, turns)
        try:
            self.busy = True
            sent = await self._send(parked)
        finally:
            self.busy = False
        if not sent:  # the batch API refused the call: the whole run is made directly now
            parked.direct_only = True
            await self._advance(parked)
            return
        self.parked.append(parked)
        self._save_parked()

    def _batcher(self) -> BatchingProvider:
        """The provider, which ``batch_deadline`` made sure has a batch API."""
        if not isinstance(self.provider, BatchingProvider):
            msg = f"{self.provider.label} has no batch API"
            raise TypeError(msg)
        return self.provider

    def parked_wake(self) -> datetime | None:
        """The next time a parked batch is due a look."""
        looks = [p.next_look for p in self.parked if p.next_look is not None]
        return min(looks, default=None)

    async def run_parked(self) -> int:
        """Look at every parked batch that is due a look; resume or finish those that ended
        (or must be given up on). How many runs finished."""
        finished = 0
        for parked in list(self.parked):
            if parked.next_look is not None and self.clock.now() < parked.next_look:
                continue
            self.busy = True
            try:
                finished += await self._advance(parked)
            except TurnStopped as e:
                # The budget, a cooldown or a failed call stopped the direct part: try again
                # once the agent can call its model.
                retry = e.until or self.clock.now() + self.settings.cron_retry
                parked.next_look = retry
                self._log(f"cron {parked.job}: parked run stopped ({e}); next try {retry:%H:%M}")
            finally:
                self.busy = False
                if parked in self.parked:
                    self._save_parked()
        return finished

    async def _advance(self, parked: ParkedTurn) -> bool:
        """Take the run as far as it goes now: collect the batch's answer, run the tools, send
        the next call (by batch while the deadline allows, else directly). Whether it finished.
        """
        reply = await self._collect(parked) if parked.batch_id is not None else None
        if parked.batch_id is not None:
            return False  # still in progress
        while True:
            if reply is not None:
                parked.turns.append(reply.turn)
                parked.last_text = reply.text.strip()
                if not reply.tool_calls:
                    return await self._finish(parked)
                before = len(self.ctx.actions)
                untrusted = tainted(parked.turns)
                ends = await self._tool_round(parked.turns, reply, untrusted=untrusted)
                parked.progressed |= len(self.ctx.actions) > before
                if ends:
                    return await self._finish(parked)
                if parked in self.parked:
                    self._save_parked()  # the tools ran: a restart must not run them again
            if parked.calls >= self.config.max_tool_rounds:
                self._log(f"cron {parked.job}: stopped at {self.config.max_tool_rounds} rounds")
                return await self._finish(parked)
            if await self._send(parked):
                return False
            request = self._request(self.workspace.prompt(TurnKind.ISOLATED), parked.turns)
            reply = await self._call_model(request, f"cron {parked.job}")
            parked.calls += 1
            parked.direct_calls += 1

    async def _send(self, parked: ParkedTurn) -> bool:
        """Send the run's next call as a batch of one, if the deadline leaves room; whether it
        was sent (else the call is to be made directly)."""
        now = self.clock.now()
        direct = parked.direct_only or parked.direct_next
        parked.direct_next = False
        give_up = None if direct else batch_until(parked.deadline, parked.window, now)
        if give_up is None:
            return False
        provider = self._batcher()
        custom_id = f"call-{parked.calls + 1}"
        hold, request = await self._reserve(
            self._request(self.workspace.prompt(TurnKind.ISOLATED), parked.turns),
            f"cron {parked.job} (batch)",
            batch=True,
        )
        try:
            batch_id = await provider.submit(request, custom_id)
        except OverBudget as e:  # the gateway's refusal: the budget cannot pay for it
            raise await self._refused(e) from e
        except ModelError as e:
            await self._settle(hold, None, f"failed:{e.code}", batch=True)
            parked.notes.append(f"the batch API refused call {parked.calls + 1} ({e.message})")
            self._log(f"cron {parked.job}: the batch API refused the call ({e.message}); direct")
            return False
        parked.batch_id, parked.custom_id, parked.hold = batch_id, custom_id, hold
        parked.give_up, parked.looks = give_up, 0
        parked.next_look = next_look(now, 0, give_up)
        self._log(
            f"cron {parked.job}: call {parked.calls + 1} sent as batch {batch_id} (batch rates); "
            f"the run waits for it until {give_up:%Y-%m-%d %H:%M} UTC at the latest"
        )
        return True

    async def _collect(self, parked: ParkedTurn) -> ModelReply | None:
        """Look at the batch in flight: its answer once it ended well; None while it runs (the
        batch stays in flight) or when the call is to be made directly instead."""
        assert parked.batch_id is not None
        assert parked.give_up is not None
        provider = self._batcher()
        now = self.clock.now()
        batch_id = parked.batch_id
        outcome: BatchOutcome | None = None
        if now < parked.give_up:
            try:
                outcome = await provider.outcome(batch_id, parked.custom_id)
            except ModelError as e:
                log.warning("looking at batch %s failed: %s", batch_id, e.message, agent=self.name)
            if outcome is None:
                parked.looks += 1
                parked.next_look = next_look(now, parked.looks, parked.give_up)
                return None
        else:
            outcome = await self._give_up(parked)
        parked.batch_id, parked.next_look, parked.give_up = None, None, None
        if outcome is not None and outcome.status == "succeeded" and outcome.reply is not None:
            reply = outcome.reply
            cost = await self._settle(parked.hold, reply, f"cron {parked.job} (batch)", batch=True)
            full = cost_micros(reply.usage, self.provider.price, now)
            parked.calls += 1
            parked.batch_calls += 1
            parked.batch_micros += cost
            parked.saved_micros += full - cost
            self.stats.batch_calls += 1
            self.stats.batch_saved_micros += full - cost
            return reply
        status = outcome.status if outcome is not None else "canceled"
        await self._settle(parked.hold, None, f"failed:batch-{status}", batch=True)
        if outcome is not None and outcome.status != "canceled":
            parked.direct_next = True
            why = f"batch {batch_id} {status}" + (f" ({outcome.detail})" if outcome.detail else "")
            parked.notes.append(why)
            self._log(f"cron {parked.job}: {why}; the call is made directly")
        return None

    async def _give_up(self, parked: ParkedTurn) -> BatchOutcome | None:
        """Cancel the batch in flight, past its time; an answer that arrived meanwhile (a
        batch can end just before its cancel) is still used."""
        assert parked.batch_id is not None
        assert parked.give_up is not None
        provider = self._batcher()
        why = (
            f"batch {parked.batch_id} had not ended by {parked.give_up:%Y-%m-%d %H:%M} UTC "
            f"(deadline {parked.deadline:%H:%M}): canceled, finished with direct calls"
        )
        parked.direct_only = True
        parked.notes.append(why)
        self._log(f"cron {parked.job}: {why}")
        outcome = None
        try:
            await provider.cancel(parked.batch_id)
            outcome = await provider.outcome(parked.batch_id, parked.custom_id)
        except ModelError as e:
            log.warning("canceling batch %s: %s", parked.batch_id, e.message, agent=self.name)
        return outcome

    async def _finish(self, parked: ParkedTurn) -> bool:
        """Take the run off the parked list and log what it did and what it saved."""
        self.parked.remove(parked)
        self._save_parked()
        self.stats.turns += 1
        path = (
            f"{parked.batch_calls} of {parked.calls} model calls by batch "
            f"({_dollars(parked.batch_micros)}, {_dollars(parked.saved_micros)} less than "
            f"direct calls), {parked.direct_calls} direct"
            if parked.batch_calls
            else f"direct model calls only ({parked.direct_calls})"
        )
        notes = "".join(f"; {n}" for n in parked.notes)
        self._log(f"cron {parked.job} done: {path}{notes}")
        await self._turn_ended(
            TurnKind.ISOLATED,
            self.clock.now(),
            parked.last_text,
            progressed=parked.progressed,
            main=False,
        )
        return True
