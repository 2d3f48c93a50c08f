"""Model prices, the cost of a call, and the budget rule: reserve the worst case before calling,
clamping the call's output to what the cap has left so that the cap stays usable.

Money is counted in integer micro-dollars (millionths of a dollar), so sums are exact.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from fractions import Fraction
from typing import Protocol

from mcos.domain.heartbeat import CacheTTL
from mcos.exceptions import OverBudget

MICROS = 1_000_000
MIN_OUTPUT_TOKENS = 1_024
"""The smallest output a reservation is clamped to when the whole ``max_output`` does not fit
what is left of a cap (or ``max_output`` itself when smaller): below it the call is refused, as a
reply cut that short is rarely worth its prompt."""
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
            usage.input * exact(self.input)
            + usage.output * exact(self.output)
            + usage.cache_read * exact(self.cache_read)
            + five_minute * exact(self.cache_write_5m)
            + usage.cache_write_1h * exact(self.cache_write_1h)
        )
        return math.ceil(micros)

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


def exact(rate: float) -> Fraction:
    """A rate (USD per million tokens, which is micro-dollars per token) as the decimal it was
    written as, so that sums of tokens times rates are exact and only the total is rounded."""
    return Fraction(str(rate))


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
    """The most a call made at ``at`` can cost before it is made, with nothing known of its cache
    use: ``prompt_bytes`` (a bound on its input tokens, see :func:`worst_case`) at the dearest
    input rate, plus ``max_output`` output tokens."""
    return worst_case(prompt_bytes, max_output, price, CacheTTL.ONE_HOUR, at).micros(max_output)


def input_ceiling(rates: Price, cache_ttl: CacheTTL) -> Fraction:
    """The dearest rate one prompt token can be billed at, from what the request may be billed
    for: without ``cache_control`` every token is plain input; with 5-minute breakpoints a token
    may be written to the 5-minute cache; with 1-hour ones, to the 1-hour cache."""
    dearest = [rates.input]
    if cache_ttl is not CacheTTL.NONE:
        dearest += [rates.cache_read, rates.cache_write_5m]
    if cache_ttl is CacheTTL.ONE_HOUR:
        dearest.append(rates.cache_write_1h)
    return max(exact(r) for r in dearest)


@dataclass(frozen=True)
class WorstCase:
    """The most one model call can cost, in two parts: the prompt (fixed once it is written) and
    each output token, so that the output can be clamped to what a cap has left."""

    prompt_tokens: int
    """Input tokens: exact (counted by the provider) or a bound that is never low."""
    prompt_micros: int
    """The prompt at its dearest rate, rounded up."""
    output_rate: Fraction
    """Micro-dollars per output token, at the dearest tier the prompt may reach."""
    max_output: int
    """The output the call asks for."""
    min_output: int = MIN_OUTPUT_TOKENS
    """The least output worth granting (see ``floor``)."""

    @classmethod
    def fixed(cls, usd_micros: int, tokens: int) -> WorstCase:
        """A worst case given whole, nothing to clamp."""
        return cls(tokens, usd_micros, Fraction(0), 0, 0)

    @property
    def floor(self) -> int:
        """The fewest output tokens a grant may clamp the call to: ``min_output``, or
        ``max_output`` when that is smaller."""
        return min(self.min_output, self.max_output)

    def micros(self, output: int) -> int:
        """The most the call can cost with at most ``output`` output tokens."""
        return self.prompt_micros + math.ceil(output * self.output_rate)

    def tokens(self, output: int) -> int:
        """The most tokens the call can use with at most ``output`` output tokens."""
        return self.prompt_tokens + output


def worst_case(
    prompt_tokens: int,
    max_output: int,
    price: Pricing,
    cache_ttl: CacheTTL,
    at: datetime | None = None,
    min_output: int = MIN_OUTPUT_TOKENS,
) -> WorstCase:
    """The worst case of a call made at ``at`` whose prompt is at most ``prompt_tokens`` long.

    The prompt's tokens may be exact (the provider counted them) or a bound: a byte-level
    tokenizer never yields more tokens than the UTF-8 bytes it reads, so the prompt's byte length
    is never low. Every prompt token is priced at the dearest rate the request can be billed for
    (:func:`input_ceiling`) of the dearest tier a prompt that long can reach; no call can cost
    more than that plus its output at the tier's output rate.
    """
    rates = price.ceiling(prompt_tokens, at)
    prompt = math.ceil(prompt_tokens * input_ceiling(rates, cache_ttl))
    return WorstCase(prompt_tokens, prompt, exact(rates.output), max_output, min_output)


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


@dataclass(frozen=True)
class Grant:
    """A reservation that fits: the output the call may ask for and what is held for it."""

    max_output: int
    """At most the output asked for; less when only that much fits the caps (never below the
    worst case's floor)."""
    usd_micros: int
    tokens: int
    verdict: Verdict


def affordable_output(worst: WorstCase, committed: Committed, limits: Limits) -> int:
    """The most output tokens, up to ``worst.max_output``, that a call can have with
    ``committed`` + its worst case still within ``limits``; -1 when not even its prompt fits."""
    best = worst.max_output
    if limits.usd_micros is not None:
        room = limits.usd_micros - committed.usd_micros - worst.prompt_micros
        if room < 0:
            return -1
        if worst.output_rate > 0:  # ceil(n * rate) <= room  <=>  n <= room / rate
            best = min(best, math.floor(room / worst.output_rate))
    if limits.tokens is not None:
        room = limits.tokens - committed.tokens - worst.prompt_tokens
        if room < 0:
            return -1
        best = min(best, room)
    return best


def grant(
    agent: str,
    worst: WorstCase,
    mine: Committed,
    whole: Committed,
    limits: Limits,
    fleet: Limits,
    warn_at: float = 0.8,
) -> Grant:
    """What a call may hold against the agent's and the fleet's caps: its whole worst case when
    that fits, else the largest output that fits both, if at least ``worst.floor``.

    Nothing can pass a cap: the hold is the worst case of the granted output. A refusal raises
    ``OverBudget`` naming the cap and the figures; nothing is reserved.
    """
    output = worst.max_output
    for scope, committed, cap in (("agent", mine, limits), ("fleet", whole, fleet)):
        fits = affordable_output(worst, committed, cap)
        if fits < worst.floor:
            who = agent if scope == "agent" else "the fleet"
            least = worst.micros(worst.floor)
            cut = (
                f" even with its output cut to {worst.floor:,} tokens"
                if worst.floor < worst.max_output
                else ""
            )
            raise OverBudget(
                f"{who} is at its daily budget: {committed.usd_micros / MICROS:.4f} USD and "
                f"{committed.tokens:,} tokens committed today; this call may cost up to "
                f"{least / MICROS:.4f} USD{cut} (cap {_cap(cap)})",
                scope=scope,
                committed_usd=committed.usd_micros / MICROS,
                committed_tokens=committed.tokens,
                ask_usd=least / MICROS,
            )
        output = min(output, fits)
    usd, tokens = worst.micros(output), worst.tokens(output)
    verdicts = {
        judge(mine, usd, tokens, limits, warn_at),
        judge(whole, usd, tokens, fleet, warn_at),
    }
    verdict = Verdict.WARNING if Verdict.WARNING in verdicts else Verdict.GRANTED
    return Grant(output, usd, tokens, verdict)


def _cap(limits: Limits) -> str:
    parts = []
    if limits.usd_micros is not None:
        parts.append(f"{limits.usd_micros / MICROS:.2f} USD")
    if limits.tokens is not None:
        parts.append(f"{limits.tokens:,} tokens")
    return " and ".join(parts) or "none"
