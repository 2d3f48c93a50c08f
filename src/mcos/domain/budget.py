"""Model prices, the cost of a call, and the budget rule: reserve the worst case before calling.

Money is counted in integer micro-dollars (millionths of a dollar), so sums are exact.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Protocol

from mcos.exceptions import OverBudget

MICROS = 1_000_000
BATCH_DISCOUNT = 0.5
"""What a batch call costs of the standard rates when the price comes from the fleet file's
``[prices]`` (Anthropic's Message Batches and OpenAI's Batch API both bill 50% of every rate,
cache reads and writes included); genai-prices' own batch prices are used when it has them."""


@dataclass(frozen=True)
class Price:
    """Dollars per million tokens of each kind."""

    input: float
    output: float
    cache_read: float
    cache_write_5m: float
    cache_write_1h: float

    @classmethod
    def anthropic(cls, input_: float, output: float) -> Price:
        """Anthropic's published multipliers: read 0.1×, 5-minute write 1.25×, 1-hour write 2×."""  # noqa: RUF002
        return cls(input_, output, input_ * 0.1, input_ * 1.25, input_ * 2.0)

    @classmethod
    def flat(cls, input_: float, output: float) -> Price:
        """A provider without prompt caching (OpenAI-compatible servers, local models)."""
        return cls(input_, output, input_, input_, input_)

    def cost(self, usage: Usage, at: datetime | None = None) -> int:
        """What ``usage`` costs at these rates, in micro-dollars (rounded up)."""
        five_minute = usage.cache_write - usage.cache_write_1h
        micros = (
            usage.input * self.input
            + usage.output * self.output
            + usage.cache_read * self.cache_read
            + five_minute * self.cache_write_5m
            + usage.cache_write_1h * self.cache_write_1h
        )
        return -(-round(micros * 1_000_000) // 1_000_000)

    def ceiling(self, prompt_tokens: int, at: datetime | None = None) -> Price:
        """The rates a call of at most ``prompt_tokens`` can be billed at: these."""
        return self

    def batched(self) -> Price:
        """These rates for a batch call: ``BATCH_DISCOUNT`` of each."""
        d = BATCH_DISCOUNT
        return Price(
            self.input * d,
            self.output * d,
            self.cache_read * d,
            self.cache_write_5m * d,
            self.cache_write_1h * d,
        )


class Pricing(Protocol):
    """A model's price: fixed rates (``Price``) or a price list with tiers and dates."""

    def cost(self, usage: Usage, at: datetime | None = None) -> int:
        """What ``usage`` cost at time ``at`` (now when None), in micro-dollars, rounded up."""
        ...

    def ceiling(self, prompt_tokens: int, at: datetime | None = None) -> Price:
        """The highest rates a call whose prompt is at most ``prompt_tokens`` can be billed at
        (the dearest tier it may reach, at the price valid at ``at``): never low."""
        ...

    def batched(self) -> Pricing:
        """The same model's price for a batch call (Message Batches), never below its real one."""
        ...


FREE = Price(0, 0, 0, 0, 0)
DEFAULT_PRICES: dict[str, Price] = {"offline": FREE}
"""Prices no price list holds: the offline model is free by definition. Every other model is
priced by genai-prices (``mcos.domain.prices``); the fleet file's ``[prices]`` overrides both."""


def price_of(model: str, table: dict[str, Price]) -> Price | None:
    """The price of ``model``: an exact entry, else the longest entry it starts with."""
    if model in table:
        return table[model]
    matches = [k for k in table if model.startswith(k)]
    return table[max(matches, key=len)] if matches else None


@dataclass(frozen=True)
class Usage:
    """Tokens of one model call, by kind."""

    input: int = 0
    output: int = 0
    cache_read: int = 0
    cache_write: int = 0
    cache_write_1h: int = 0
    """The part of ``cache_write`` written to the 1-hour cache (priced higher)."""

    @property
    def total(self) -> int:
        """Every token the call consumed or produced."""
        return self.input + self.output + self.cache_read + self.cache_write

    @property
    def context(self) -> int:
        """Tokens of prompt the model read: how full the context window was."""
        return self.input + self.cache_read + self.cache_write


def cost_micros(usage: Usage, price: Pricing, at: datetime | None = None) -> int:
    """What a call made at ``at`` (now when None) cost, in micro-dollars (rounded up: a budget
    never undercounts)."""
    return price.cost(usage, at)


def worst_case_micros(
    prompt_bytes: int, max_output: int, price: Pricing, at: datetime | None = None
) -> int:
    """The most a call made at ``at`` can cost before it is made.

    A byte-level tokenizer never yields more tokens than the UTF-8 bytes it reads, so the
    prompt's byte length bounds its input tokens; priced at the dearest input rate (a 1-hour
    cache write) of the dearest tier a prompt that long can reach, plus ``max_output`` output
    tokens at that tier's output rate, no call can cost more.
    """
    rates = price.ceiling(prompt_bytes, at)
    dearest = max(rates.input, rates.cache_write_5m, rates.cache_write_1h, rates.cache_read)
    return Price.flat(dearest, 0).cost(Usage(input=prompt_bytes)) + rates.cost(
        Usage(output=max_output)
    )


@dataclass(frozen=True)
class Limits:
    """A daily cap; None means no cap of that kind."""

    usd_micros: int | None = None
    tokens: int | None = None

    @classmethod
    def of(cls, daily_usd: float | None, daily_tokens: int | None) -> Limits:
        """From the fleet file's dollars and tokens."""
        usd = None if daily_usd is None else round(daily_usd * MICROS)
        return cls(usd, daily_tokens)


@dataclass(frozen=True)
class Committed:
    """What today already holds: settled spend plus reservations not yet settled."""

    usd_micros: int
    tokens: int


class Verdict(StrEnum):
    """The answer to a reservation."""

    GRANTED = "granted"
    WARNING = "warning"
    """Granted, and past the warning share of the cap."""
    REFUSED = "refused"


def judge(
    committed: Committed, ask_usd: int, ask_tokens: int, limits: Limits, warn_at: float = 0.8
) -> Verdict:
    """Whether a reservation fits under the caps, so that no cap can ever be overrun."""
    after_usd, after_tokens = committed.usd_micros + ask_usd, committed.tokens + ask_tokens
    if limits.usd_micros is not None and after_usd > limits.usd_micros:
        return Verdict.REFUSED
    if limits.tokens is not None and after_tokens > limits.tokens:
        return Verdict.REFUSED
    if (limits.usd_micros is not None and after_usd >= limits.usd_micros * warn_at) or (
        limits.tokens is not None and after_tokens >= limits.tokens * warn_at
    ):
        return Verdict.WARNING
    return Verdict.GRANTED


def check_reservation(
    agent: str,
    ask_usd: int,
    ask_tokens: int,
    mine: Committed,
    whole: Committed,
    limits: Limits,
    fleet: Limits,
) -> Verdict:
    """The verdict on a reservation against the agent's and the fleet's caps.

    A refusal raises ``OverBudget`` naming the cap and the figures; nothing is reserved.
    """
    for scope, committed, cap in (("agent", mine, limits), ("fleet", whole, fleet)):
        if judge(committed, ask_usd, ask_tokens, cap) is Verdict.REFUSED:
            who = agent if scope == "agent" else "the fleet"
            raise OverBudget(
                f"{who} is at its daily budget: {committed.usd_micros / MICROS:.4f} USD and "
                f"{committed.tokens:,} tokens committed today; this call may cost up to "
                f"{ask_usd / MICROS:.4f} USD (cap {_cap(cap)})",
                scope=scope,
                committed_usd=committed.usd_micros / MICROS,
                committed_tokens=committed.tokens,
                ask_usd=ask_usd / MICROS,
            )
    verdicts = {judge(mine, ask_usd, ask_tokens, limits), judge(whole, ask_usd, ask_tokens, fleet)}
    return Verdict.WARNING if Verdict.WARNING in verdicts else Verdict.GRANTED


def _cap(limits: Limits) -> str:
    parts = []
    if limits.usd_micros is not None:
        parts.append(f"{limits.usd_micros / MICROS:.2f} USD")
    if limits.tokens is not None:
        parts.append(f"{limits.tokens:,} tokens")
    return " and ".join(parts) or "none"
