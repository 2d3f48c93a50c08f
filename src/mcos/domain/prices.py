"""Today's model prices, from genai-prices, and the model ids that are deprecated or retired.

Prices come from the `genai-prices <https://github.com/pydantic/genai-prices>`_ package, a kept
price database with tiers (Claude Haiku 5.5 bills every token of a prompt over 100,000 tokens at
five times the base rate) and dates (a price valid from a given day): a call is priced with the
rates valid at the call's time, tier included. The fleet file's ``[prices]`` overrides it.

genai-prices is imported on first use only: an offline agent never loads it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime
from decimal import ROUND_CEILING, Decimal
from typing import TYPE_CHECKING, Any

from mcos.domain.budget import FREE, MICROS, Price, Pricing, Usage, price_of

if TYPE_CHECKING:
    from genai_prices.types import ModelInfo, Provider, TieredPrices

BATCH: Mapping[str, str] = {"processing": "batch"}
"""genai-prices' price context of a batch call (Anthropic's Message Batches)."""
_RATES = ("input", "output", "cache_read", "cache_write_5m", "cache_write_1h")


@dataclass(frozen=True)
class ListedPrice:
    """A model's entry in genai-prices: the price valid at a call's time, with its tiers."""

    provider: str
    """genai-prices' provider id (``anthropic``, ``openai``, ``groq``, …)."""
    model: str
    """genai-prices' model id (``claude-sonnet-5-5``), which the configured id matched."""
    _info: ModelInfo = field(repr=False, compare=False)
    _provider: Provider = field(repr=False, compare=False)
    _context: Mapping[str, str] | None = field(default=None, repr=False, compare=False)
    """genai-prices' price context: ``{"processing": "batch"}`` for a batch call."""

    def batched(self) -> ListedPrice:
        """This model's batch prices (genai-prices' ``processing = batch`` variant, dated and
        tiered like the standard ones); the standard prices where it lists none, never low."""
        return replace(self, _context=BATCH)

    def cost(self, usage: Usage, at: datetime | None = None) -> int:
        """What ``usage`` cost at ``at`` (now when None), priced by genai-prices, in micro-dollars
        rounded up."""
        from genai_prices import Usage as Tokens  # noqa: PLC0415 (loaded on first use)

        tokens = Tokens(
            input_tokens=usage.input + usage.cache_read + usage.cache_write,
            output_tokens=usage.output,
            cache_read_tokens=usage.cache_read,
            cache_write_tokens=usage.cache_write,
            cache_write_1h_tokens=usage.cache_write_1h,
        )
        dollars = self._info.calc_price(
            tokens,
            self._provider,
            genai_request_timestamp=at or datetime.now(UTC),
            price_context=self._context,
        ).total_price
        return int((dollars * MICROS).to_integral_value(rounding=ROUND_CEILING))

    def rates(self, prompt_tokens: int = 0, at: datetime | None = None) -> Price:
        """The rates (USD per million tokens) of a call whose prompt is ``prompt_tokens`` long,
        made at ``at``: the tier that prompt length reaches, at the price valid then."""
        return self._rates(prompt_tokens, at, ceiling=False)

    def ceiling(self, prompt_tokens: int, at: datetime | None = None) -> Price:
        """The dearest rates a prompt of at most ``prompt_tokens`` can be billed at."""
        return self._rates(prompt_tokens, at, ceiling=True)

    def _rates(self, prompt_tokens: int, at: datetime | None, *, ceiling: bool) -> Price:
        prices = self._info.get_prices(at or datetime.now(UTC), self._context)

        def rate(*keys: str) -> float:
            value = next((v for k in keys if (v := getattr(prices, k, None)) is not None), None)
            return float(_tier(value, prompt_tokens, ceiling=ceiling))

        # A kind of token without a price of its own is billed as its parent kind: a cache read
        # or write as input, a 1-hour write as any cache write (genai-prices' decomposition).
        return Price(
            input=rate("input_mtok"),
            output=rate("output_mtok"),
            cache_read=rate("cache_read_mtok", "input_mtok"),
            cache_write_5m=rate("cache_write_5m_mtok", "cache_write_mtok", "input_mtok"),
            cache_write_1h=rate("cache_write_1h_mtok", "cache_write_mtok", "input_mtok"),
        )


def _tier(value: Decimal | TieredPrices | None, prompt_tokens: int, *, ceiling: bool) -> Decimal:
    """The rate a prompt of ``prompt_tokens`` is billed at (a tier applies to every token once
    the prompt passes its start); with ``ceiling``, the dearest of every tier it may reach."""
    if value is None:
        return Decimal(0)
    if isinstance(value, Decimal):
        return value
    reached = [value.base, *(t.price for t in value.tiers if prompt_tokens > t.start)]
    return max(reached) if ceiling else reached[-1]


def listed(provider: str, model: str, base_url: str | None = None) -> ListedPrice | None:
    """``model``'s entry in genai-prices, or None when it has none.

    The provider is found by ``base_url`` when that is a known provider's API (Groq, DeepSeek,
    … behind the OpenAI protocol), else by the configured provider's name.
    """
    if provider == "offline":
        return None
    from genai_prices.data_snapshot import get_snapshot  # noqa: PLC0415 (loaded on first use)

    snapshot = get_snapshot()
    attempts: list[dict[str, Any]] = [{"provider_id": provider}]
    if base_url is not None:
        attempts.insert(0, {"provider_api_url": base_url})
    for where in attempts:
        try:
            found, info = snapshot.find_provider_model(
                model, None, where.get("provider_id"), where.get("provider_api_url")
            )
        except LookupError:
            continue
        return ListedPrice(found.id, info.id, info, found)
    return None


def price_for(
    provider: str, model: str, overrides: Mapping[str, Price], base_url: str | None = None
) -> Pricing | None:
    """How a call to ``model`` is priced: the fleet file's ``[prices]`` entry (exact id, else the
    longest prefix) first, then the offline model (free by definition), then genai-prices; None
    when nothing prices it."""
    override = price_of(model, dict(overrides))
    if override is not None:
        return override
    if provider == "offline":
        return FREE
    return listed(provider, model, base_url)


@dataclass(frozen=True)
class Deprecation:
    """A model id its provider has deprecated (still answers) or retired (calls fail)."""

    model: str
    replacement: str | None
    deprecated: date | None = None
    retired: date | None = None
    source: str = ""

    def status(self, today: date) -> str:
        """``retired`` once the retirement date has passed, else ``deprecated``."""
        return "retired" if self.retired is not None and today >= self.retired else "deprecated"

    def message(self, today: date) -> str:
        """One line for ``mcos doctor`` and ``mcos config check``."""
        status = self.status(today)
        when = self.retired if status == "retired" else self.deprecated
        parts = [f"{self.model} is {status}" + (f" since {when.isoformat()}" if when else "")]
        if status == "deprecated" and self.retired is not None:
            parts.append(f"calls fail from {self.retired.isoformat()}")
        parts.append(
            f"use {self.replacement}" if self.replacement else "no replacement is recorded"
        )
        return "; ".join(parts)


DEPRECATIONS: tuple[Deprecation, ...] = (
    Deprecation(
        "claude-sonnet-4-5",
        "claude-sonnet-5-5",
        deprecated=date(2026, 11, 30),
        source="Anthropic model deprecations page, as quoted in issue 16",
    ),
    Deprecation(
        "claude-sonnet-4-0",
        "claude-sonnet-5-5",
        deprecated=date(2026, 4, 14),
        retired=date(2026, 6, 15),
        source="Anthropic model deprecations: claude-sonnet-4-20250514 retired 2026-06-15",
    ),
    Deprecation(
        "claude-sonnet-4",
        "claude-sonnet-5-5",
        deprecated=date(2026, 4, 14),
        retired=date(2026, 6, 15),
        source="Anthropic model deprecations: claude-sonnet-4-20250514 retired 2026-06-15",
    ),
    Deprecation(
        "claude-opus-4-0",
        "claude-opus-5-5",
        deprecated=date(2026, 4, 14),
        retired=date(2026, 6, 15),
        source="Anthropic model deprecations: claude-opus-4-20250514 retired 2026-06-15",
    ),
    Deprecation(
        "claude-opus-4",
        "claude-opus-5-5",
        deprecated=date(2026, 4, 14),
        retired=date(2026, 6, 15),
        source="Anthropic model deprecations: claude-opus-4-20250514 retired 2026-06-15",
    ),
    Deprecation(
        "claude-3-opus",
        "claude-opus-5-5",
        retired=date(2026, 1, 5),
        source="Anthropic: Claude Opus 3 retired 2026-01-05",
    ),
)
"""Known deprecations of model ids we have recommended, with the replacement today's docs name.
A configured id matches an entry exactly, or as its dated snapshot (``ID-YYYYMMDD``). Ids that
genai-prices itself flags as deprecated are reported too, without a replacement."""


def deprecation_of(provider: str, model: str, base_url: str | None = None) -> Deprecation | None:
    """Whether ``model`` is deprecated or retired: our table first, then genai-prices' flag."""
    for d in DEPRECATIONS:
        if model == d.model or re.fullmatch(re.escape(d.model) + r"-\d{8}", model):
            return d
    entry = listed(provider, model, base_url)
    if entry is not None and entry._info.deprecated:
        return Deprecation(model, None, source="genai-prices")
    return None
