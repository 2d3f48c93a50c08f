"""Mission Control's meter: it prices every model call of the fleet itself, with its own price of
the agent's configured model, and never a figure the runtime declares.

Before a call it reserves the call's worst case (the prompt at the dearest rate the request can be
billed for, plus the output), clamping the output to what the caps have left; after it, it prices
the tokens the call used and records them, releasing the rest of the hold. The model gateway
(upstream ``usage``), the direct mode's ``/v1/usage`` (the runtime's report) and batch calls all
go through here.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from mcos.domain.audit import AuditEvent
from mcos.domain.budget import FREE, MICROS, Committed, Limits, Pricing, Usage, Verdict, worst_case
from mcos.domain.heartbeat import CacheTTL
from mcos.domain.messages import MessageKind, NewMessage, Priority
from mcos.domain.prices import price_for
from mcos.domain.tokens import Principal, PrincipalKind
from mcos.exceptions import ConfigError, Forbidden, McosError
from mcos.store.protocol import BudgetAsk, Held, ModelCall

if TYPE_CHECKING:
    from mcos.config.models import ModelConfig
    from mcos.server.context import MissionControl

log = logging.getLogger("mcos.server.metering")
GATEWAY_ONLY = "model calls of {agent} go through the gateway; Mission Control meters them"
"""Why a gateway-routed agent may not reserve or report in direct mode."""


@dataclass(frozen=True)
class Hold:
    """A granted reservation of one model call."""

    id: int
    """The reservation id (``store.reserve_budget``)."""
    max_output: int
    """Output tokens the remaining budget pays for (at most what was asked): the call uses this."""
    warning: bool
    """Past the warning share of a cap."""
    ask_micros: int
    """What was reserved: the call's worst case with ``max_output``."""
    day: str = ""
    """The UTC day the hold counts against."""
    committed: Committed = field(default_factory=lambda: Committed(0, 0))
    """The agent's day including this hold."""


class Meter:
    """Prices, reserves and records the model calls of every agent, by Mission Control's rules."""

    def __init__(self, mc: MissionControl) -> None:
        self.mc = mc

    def model(self, agent: str, model: str) -> ModelConfig:
        """``agent``'s configuration of ``model`` (its main model or its triage model);
        ``Forbidden`` for a model it is not configured with (an agent cannot pick a cheaper price
        by naming another model)."""
        configured = [
            c
            for c in (self.mc.settings.models.get(agent), self.mc.settings.triage_models.get(agent))
            if c is not None
        ]
        for config in configured:
            if config.id == model:
                return config
        names = " or ".join(repr(c.id) for c in configured)
        rule = (
            f"{agent} is configured with model {names}, not {model!r}"
            if configured
            else f"{agent} has no model configured here, so it cannot use {model!r}"
        )
        raise Forbidden(rule, rule=rule, agent=agent, model=model)

    def gateway_routed(self, agent: str) -> bool:
        """Whether ``agent``'s model calls go through the gateway (the offline model calls
        nothing, so it is reported directly whatever its route)."""
        config = self.mc.settings.models.get(agent)
        return config is not None and config.route == "gateway" and config.provider != "offline"

    def pricing(self, agent: str, model: str) -> Pricing:
        """Mission Control's price of ``model`` for ``agent``: the fleet file's ``[prices]``,
        else genai-prices. A model nothing prices is a ``ConfigError`` naming it when a dollar cap
        applies (the fleet file is refused for that at load); without one it counts as free."""
        config = self.model(agent, model)
        price = price_for(config.provider, config.id, self.mc.settings.prices, config.base_url)
        if price is not None:
            return price
        caps = (self._limits(agent).usd_micros, self.mc.settings.fleet_budget.usd_micros)
        if all(cap is None for cap in caps):
            return FREE
        raise ConfigError(
            "fleet",
            f"agents.{agent}.model",
            f"no price is known for model {model!r} ({config.provider}): neither genai-prices "
            f"nor [prices] has it, and a dollar budget applies",
        )

    async def reserve(
        self,
        agent: str,
        model: str,
        *,
        prompt_tokens: int,
        max_output: int,
        cache_ttl: CacheTTL,
        purpose: str,
        batch: bool = False,
    ) -> Hold:
        """Hold the call's worst case against the agent's and the fleet's caps, its output
        clamped to what they have left; ``OverBudget`` when not even the floor fits.

        ``prompt_tokens`` is exact (counted by the provider) or a bound that is never low.
        """
        price = await self._pricing(agent, model, "usage.reserve", batch=batch)
        now = await self.mc.store.now()
        worst = worst_case(
            prompt_tokens, max_output, price, cache_ttl, now, self.mc.settings.min_output_tokens
        )
        held = await self.mc.store.reserve_budget(
            BudgetAsk(agent, worst, purpose[:100], model),
            self._limits(agent),
            self.mc.settings.fleet_budget,
        )
        hold = Hold(
            held.id,
            held.max_output,
            held.verdict is Verdict.WARNING,
            held.usd_micros,
            held.day,
            held.committed,
        )
        if hold.warning and self.gateway_routed(agent):
            await self._warn_manager(agent, hold)
        return hold

    async def _warn_manager(self, agent: str, hold: Hold) -> None:
        """Tell the agent's manager, once a day, that it passed the warning share of its cap.

        A runtime in direct mode says so itself from its reservation's answer; through the
        gateway the runtime never sees a reservation, so Mission Control tells (once: the
        message's idempotency key is the agent and the day)."""
        from mcos.server.governance import SYSTEM  # noqa: PLC0415 (governance imports the context)

        directory = self.mc.settings.directory
        manager = next(
            (a.reports_to for a in (directory.agents if directory else ()) if a.name == agent),
            None,
        )
        if manager is None:
            return
        limits = self._limits(agent)
        cap = "none" if limits.usd_micros is None else f"{limits.usd_micros / MICROS:.2f} USD"
        try:
            await self.mc.store.send(
                NewMessage(
                    sender=SYSTEM,
                    recipient=manager,
                    kind=MessageKind.REPORT,
                    priority=Priority.NORMAL,
                    subject=f"{agent}: 80% of today's model budget used",
                    body=(
                        f"{agent} has committed {hold.committed.usd_micros / MICROS:.2f} USD / "
                        f"{hold.committed.tokens:,} tokens today (budget: {cap}, "
                        f"{limits.tokens or 'no'} token cap)."
                    ),
                    idempotency_key=f"budget-warning:{agent}:{hold.day}",
                )
            )
        except McosError as e:  # the call goes on; the warning is only news
            log.warning("could not warn %s's manager of its budget: %s", agent, e.message)

    async def settle(
        self,
        agent: str,
        model: str,
        hold: int | None,
        usage: Usage | None,
        purpose: str,
        *,
        provider: str,
        batch: bool = False,
    ) -> int:
        """Record a call's ``usage`` (None: the call failed, nothing was billed) at Mission
        Control's price and release its hold; the micro-dollars recorded.

        Usage beyond what the hold allowed (more prompt or output tokens) is recorded as
        reported and flagged in the audit log: the call cost that, whatever was reserved.
        """
        price = await self._pricing(agent, model, "usage.report", batch=batch)
        now = await self.mc.store.now()
        used = usage or Usage()
        cost = price.cost(used, now) if usage is not None else 0
        held = await self.mc.store.settle(
            hold, ModelCall(agent, provider, model, used, cost, purpose[:100])
        )
        if held is not None:
            await self._flag_excess(agent, held, used, cost)
        return cost

    async def _pricing(self, agent: str, model: str, action: str, *, batch: bool) -> Pricing:
        try:
            price = self.pricing(agent, model)
        except Forbidden as e:
            await self.mc.refuse(_agent(agent), action, e.message, model=model)
            raise
        return price.batched() if batch else price

    async def _flag_excess(self, agent: str, held: Held, usage: Usage, cost: int) -> None:
        """Audit a call that used more than its hold allowed (a runtime misreporting its
        reservation, or a provider counting differently)."""
        if not held.model:  # a reservation from before Mission Control metered
            return
        over = {}
        if usage.context > held.prompt_tokens:
            over["prompt_tokens"] = {"reserved": held.prompt_tokens, "used": usage.context}
        if usage.output > held.max_output:
            over["output_tokens"] = {"reserved": held.max_output, "used": usage.output}
        if cost > held.usd_micros:
            over["micros"] = {"reserved": held.usd_micros, "used": cost}
        if not over:
            return
        await self.mc.store.record(
            AuditEvent(
                actor=_agent(agent).actor,
                action="usage.exceeded_reservation",
                targets={"agent": agent, "reservation": held.id, "model": held.model},
                detail={"over": over, "rule": "a call may use at most what its hold allowed"},
                outcome="flagged",
            )
        )

    def _limits(self, agent: str) -> Limits:
        return self.mc.settings.budgets.get(agent, Limits())


def _agent(name: str) -> Principal:
    return Principal(PrincipalKind.AGENT, name)
