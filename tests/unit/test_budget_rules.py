"""The budget rule, exhaustively: a hold is the exact worst case of the call it grants, no
sequence of reserves and settles passes a cap, and the cap stays usable (a call is refused only
when not even its floor fits; a fitting call is never clamped) — issue 16, items 2 and 3."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

from hypothesis import given, settings
from hypothesis import strategies as st

from mcos.domain.budget import (
    MIN_OUTPUT_TOKENS,
    Committed,
    Limits,
    Price,
    Pricing,
    Usage,
    WorstCase,
    affordable_output,
    grant,
    input_ceiling,
    worst_case,
)
from mcos.domain.heartbeat import CacheTTL
from mcos.domain.prices import listed
from mcos.exceptions import OverBudget

AT = datetime(2026, 12, 2, 12, tzinfo=UTC)
rate = st.decimals(min_value=0, max_value=100, places=3).map(float)
prices = st.builds(Price, rate, rate, rate, rate, rate)
ttls = st.sampled_from(list(CacheTTL))


def _listed(model: str) -> Pricing:
    found = listed("anthropic", model)
    assert found is not None, model
    return found


LISTED = {m: _listed(m) for m in ("claude-haiku-5-5", "claude-sonnet-5-5", "claude-opus-5-5")}
"""Today's models as genai-prices prices them: Haiku 5.5 with its long-prompt tier."""
pricings = st.one_of(
    prices,
    st.sampled_from(sorted(LISTED)).map(LISTED.__getitem__),
    st.sampled_from(sorted(LISTED)).map(lambda m: LISTED[m].batched()),
)


@st.composite
def usages(draw: st.DrawFn, prompt: int, output: int, ttl: CacheTTL) -> Usage:
    """Any usage a call with at most ``prompt`` prompt tokens and ``output`` output tokens can
    be billed for under ``ttl`` (no cache_control: plain input only)."""
    used = draw(st.integers(0, prompt))
    if ttl is CacheTTL.NONE:
        return Usage(input=used, output=draw(st.integers(0, output)))
    read = draw(st.integers(0, used))
    write = draw(st.integers(0, used - read))
    one_hour = draw(st.integers(0, write)) if ttl is CacheTTL.ONE_HOUR else 0
    return Usage(used - read - write, draw(st.integers(0, output)), read, write, one_hour)


class TestWorstCase:
    """The hold covers every bill the call can get."""

    @settings(max_examples=300, deadline=None)
    @given(
        price=pricings,
        prompt=st.integers(0, 400_000),
        output=st.integers(0, 64_000),
        ttl=ttls,
        data=st.data(),
    )
    def test_no_call_costs_more_than_its_worst_case(
        self, price: Pricing, prompt: int, output: int, ttl: CacheTTL, data: st.DataObject
    ) -> None:
        worst = worst_case(prompt, output, price, ttl, AT)
        usage = data.draw(usages(prompt, output, ttl))
        assert price.cost(usage, AT) <= worst.micros(output)
        full = Usage(cache_write=prompt, cache_write_1h=prompt, output=output)
        if ttl is CacheTTL.ONE_HOUR:  # the dearest bill: every prompt token a 1-hour write
            assert price.cost(full, AT) <= worst.micros(output)

    def test_the_input_rate_follows_what_the_request_can_be_billed_for(self) -> None:
        """No cache_control: the input rate; 5-minute breakpoints: the 5-minute write; 1-hour:
        the 1-hour write (each only when dearer than input)."""
        p = Price(3.0, 15.0, 0.3, 3.75, 6.0)
        assert [float(input_ceiling(p, t)) for t in CacheTTL] == [3.0, 3.75, 6.0]
        odd = Price(3.0, 15.0, 0.3, 2.0, 2.5)  # writes cheaper than input: input bounds
        assert [float(input_ceiling(odd, t)) for t in CacheTTL] == [3.0, 3.0, 3.0]

    def test_the_dearest_tier_a_prompt_can_reach(self) -> None:
        """Haiku 5.5 bills every token of a prompt over 100,000 tokens at five times the base
        rate: a bound past it is priced at that tier, output too."""
        haiku = LISTED["claude-haiku-5-5"]
        short = worst_case(50_000, 1_000, haiku, CacheTTL.NONE, AT)
        long = worst_case(150_000, 1_000, haiku, CacheTTL.NONE, AT)
        assert short.micros(1_000) == 50_000 * 0.1 + 1_000 * 0.5
        assert long.micros(1_000) == 150_000 * 0.5 + 1_000 * 2.5
        assert haiku.batched().cost(Usage(input=150_000, output=1_000), AT) * 2 == long.micros(
            1_000
        )

    def test_batch_rates_of_a_fleet_file_price_are_halved(self) -> None:
        assert Price(3.0, 15.0, 0.3, 3.75, 6.0).batched() == Price(1.5, 7.5, 0.15, 1.875, 3.0)


@dataclass
class Ledger:
    """Two agents' day under their caps and the fleet's, as the store keeps it: settled calls
    plus holds not settled (an abandoned hold counts in full forever)."""

    limits: Limits
    fleet: Limits
    settled: dict[str, Committed] = field(default_factory=dict)
    holds: dict[int, tuple[str, WorstCase, int]] = field(default_factory=dict)
    """Open holds: agent, worst case, granted output."""
    abandoned: set[int] = field(default_factory=set)

    def committed(self, agent: str | None) -> Committed:
        usd = tokens = 0
        for name, c in self.settled.items():
            if agent in (None, name):
                usd, tokens = usd + c.usd_micros, tokens + c.tokens
        for name, worst, output in self.holds.values():
            if agent in (None, name):
                usd, tokens = usd + worst.micros(output), tokens + worst.tokens(output)
        return Committed(usd, tokens)

    def reserve(self, key: int, agent: str, worst: WorstCase) -> int | None:
        mine, whole = self.committed(agent), self.committed(None)
        try:
            granted = grant(agent, worst, mine, whole, self.limits, self.fleet)
        except OverBudget as e:
            cap = self.limits if e.details["scope"] == "agent" else self.fleet
            used = mine if e.details["scope"] == "agent" else whole
            assert not _fits(worst, worst.floor, used, cap), "refused what fits"
            return None
        scopes = ((mine, self.limits), (whole, self.fleet))
        output = granted.max_output
        assert all(_fits(worst, output, used, cap) for used, cap in scopes)
        if output < worst.max_output:
            assert not all(_fits(worst, output + 1, u, c) for u, c in scopes), "clamped too far"
        assert worst.floor <= granted.max_output <= worst.max_output
        assert (granted.usd_micros, granted.tokens) == (
            worst.micros(granted.max_output),
            worst.tokens(granted.max_output),
        )
        self.holds[key] = (agent, worst, granted.max_output)
        return granted.max_output

    def settle(self, key: int, usd: int, tokens: int) -> None:
        agent, worst, output = self.holds.pop(key)
        assert usd <= worst.micros(output)
        assert tokens <= worst.tokens(output)
        before = self.settled.get(agent, Committed(0, 0))
        self.settled[agent] = Committed(before.usd_micros + usd, before.tokens + tokens)

    def check(self) -> None:
        for agent in ("gene", "jarvis"):
            _within(self.committed(agent), self.limits)
        _within(self.committed(None), self.fleet)


def _fits(worst: WorstCase, output: int, used: Committed, cap: Limits) -> bool:
    return (
        cap.usd_micros is None or used.usd_micros + worst.micros(output) <= cap.usd_micros
    ) and (cap.tokens is None or used.tokens + worst.tokens(output) <= cap.tokens)


def _within(used: Committed, cap: Limits) -> None:
    assert cap.usd_micros is None or used.usd_micros <= cap.usd_micros
    assert cap.tokens is None or used.tokens <= cap.tokens


caps = st.builds(
    Limits,
    st.one_of(st.none(), st.integers(0, 2_000_000)),
    st.one_of(st.none(), st.integers(0, 2_000_000)),
)
step = st.tuples(
    st.sampled_from(["reserve", "settle", "abandon"]),
    st.sampled_from(["gene", "jarvis"]),
    st.integers(0, 200_000),  # prompt tokens
    st.integers(1, 40_000),  # max output
    ttls,
    st.sampled_from(["nothing", "some", "full"]),  # what a settle reports of the worst case
    st.integers(0, 10**6),
)


class TestLedger:
    """Any sequence of reserves, settles and abandoned holds, on any caps."""

    @settings(max_examples=400, deadline=None)
    @given(
        limits=caps,
        fleet=caps,
        price=pricings,
        steps=st.lists(step, max_size=40),
        min_output=st.integers(1, 4_096),
    )
    def test_never_over_a_cap_and_usable_to_the_floor(
        self,
        limits: Limits,
        fleet: Limits,
        price: Pricing,
        steps: list[tuple[str, str, int, int, CacheTTL, str, int]],
        min_output: int,
    ) -> None:
        ledger = Ledger(limits, fleet)
        for key, (op, agent, prompt, output, ttl, report, seed) in enumerate(steps):
            open_holds = sorted(ledger.holds)
            if op == "reserve" or not open_holds:
                worst = worst_case(prompt, output, price, ttl, AT, min_output)
                granted = ledger.reserve(key, agent, worst)
                if granted is not None and report == "full":  # settle at once, at the worst
                    ledger.settle(key, worst.micros(granted), worst.tokens(granted))
            elif op == "settle":
                held = open_holds[seed % len(open_holds)]
                _, worst, granted = ledger.holds[held]
                share = {"nothing": 0, "some": seed % 1_000, "full": 1_000}[report]
                ledger.settle(
                    held,
                    worst.micros(granted) * share // 1_000,
                    worst.tokens(granted) * share // 1_000,
                )
            else:
                ledger.abandoned.add(open_holds[seed % len(open_holds)])
            ledger.check()

    @settings(max_examples=200, deadline=None)
    @given(
        price=pricings,
        prompt=st.integers(0, 50_000),
        output=st.integers(1, 32_000),
        ttl=ttls,
        whole_calls=st.integers(0, 40),
        rest=st.integers(0, 10**6),
    )
    def test_calls_at_their_full_worst_case_use_the_cap_to_the_last_floor(
        self,
        price: Pricing,
        prompt: int,
        output: int,
        ttl: CacheTTL,
        whole_calls: int,
        rest: int,
    ) -> None:
        """The usability property: repeated calls, each settled at its whole worst case, run
        until the first refusal, and by then less than one floor-sized call is left."""
        worst = worst_case(prompt, output, price, ttl, AT)
        if worst.micros(worst.floor) == 0:  # a free call never runs a dollar cap down
            return
        cap_usd = worst.micros(output) * whole_calls + rest % worst.micros(output)
        cap = Limits(usd_micros=cap_usd)
        spent = calls = 0
        while True:
            try:
                granted = grant("gene", worst, Committed(spent, 0), Committed(spent, 0), cap, cap)
            except OverBudget:
                break
            spent, calls = spent + granted.usd_micros, calls + 1
            assert spent <= cap_usd
            assert calls <= whole_calls + 1
        assert cap_usd - spent < worst.micros(worst.floor)


def test_affordable_output_is_exact() -> None:
    """$0.10 left, a prompt worth $0.02 and output at 5 micro-dollars a token: 16,000 tokens."""
    worst = worst_case(20_000, 50_000, Price(1.0, 5.0, 0.1, 1.25, 2.0), CacheTTL.NONE)
    assert affordable_output(worst, Committed(900_000, 0), Limits(usd_micros=1_000_000)) == 16_000
    assert affordable_output(worst, Committed(990_000, 0), Limits(usd_micros=1_000_000)) == -1
    assert affordable_output(worst, Committed(0, 0), Limits(tokens=21_000)) == 1_000
    assert worst.floor == MIN_OUTPUT_TOKENS
