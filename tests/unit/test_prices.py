"""Model prices from genai-prices: today's models priced, tiers and dates applied, ``[prices]``
first, an unpriced model with a dollar budget refused, deprecated ids named with their
replacement (issue 16, item 1)."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime
from pathlib import Path

import pytest
from typer.testing import CliRunner

import mcos
from mcos.cli import app
from mcos.config import load_fleet
from mcos.config.scaffold import init_fleet
from mcos.domain.budget import Price, Usage, cost_micros, worst_case_micros
from mcos.domain.prices import deprecation_of, listed
from mcos.exceptions import ConfigErrors
from mcos.models.factory import make_provider

runner = CliRunner()
OFFLINE = 'model = { provider = "offline", id = "offline-1", context_window = 200000 }'
USD = "\nbudget = { daily_usd = 2.0 }"
"""Appended to a model line: the agent's token budget below it is replaced by this."""
SENTINEL_TURN = Usage(input=13_260)
"""The field report's sentinel turn: 13,260 input tokens, recorded at $0.00 on Sonnet 5.5."""


def _fleet(tmp_path: Path, agents: dict[str, str], extra: str = "") -> Path:
    """The small template with ``agents``' offline model line replaced, and ``extra`` appended."""
    path = init_fleet(tmp_path / "fleet")
    text = path.read_text()
    for agent, model in agents.items():
        start = text.index(f"[agents.{agent}]")
        section = text[start:].replace(OFFLINE, model, 1)
        if USD in model:
            section = re.sub(r"\nbudget = \{ daily_tokens = \d+ \}", "", section, count=1)
        text = text[:start] + section
    path.write_text(text + extra)
    return path


def _claude(model: str) -> str:
    """A Claude model line, with a key reference of its own (one key per agent)."""
    return f'model = {{ provider = "anthropic", id = "{model}" }}\nkey = "env:{_var(model)}"'


def _var(model: str) -> str:
    return "MCOS_PRICES_" + re.sub(r"\W", "_", model).upper()


def test_todays_models_are_priced(tmp_path: Path) -> None:
    """Before: the 5-5 models fell back to FREE (the sentinel turn cost $0.00). Now each is
    priced from genai-prices, through the same path an agent process takes."""
    path = _fleet(
        tmp_path,
        {
            "jarvis": _claude("claude-opus-5-5"),
            "gene": _claude("claude-haiku-5-5"),
            "sentinel": _claude("claude-sonnet-5-5"),
        },
    )
    fleet = load_fleet(path)
    costs = {
        name: cost_micros(SENTINEL_TURN, make_provider(a, "k", fleet.price_table()).price)
        for name, a in fleet.agents.items()
    }
    # $2 / $0.10 / $4 per million input tokens (genai-prices 0.2.3)
    assert costs == {"sentinel": 26_520, "gene": 1_326, "jarvis": 53_040}


def test_a_long_prompt_on_haiku_pays_its_tier_and_the_reservation_covers_it() -> None:
    """Haiku 5.5 bills every token of a prompt over 100,000 tokens at 5x; the worst case
    reserved for a prompt that may pass the threshold uses that tier, never the base."""
    haiku = listed("anthropic", "claude-haiku-5-5")
    assert haiku is not None
    short = cost_micros(Usage(input=99_000, output=1_000), haiku)
    long = cost_micros(Usage(input=101_000, output=1_000), haiku)
    assert (short, long) == (10_400, 53_000)  # 0.10/0.50 against 0.50/2.50 per Mtok
    # the prompt length that picks the tier counts cache reads and writes too
    assert cost_micros(Usage(input=50_000, cache_read=60_000, output=1_000), haiku) == 30_500
    # a prompt under the threshold reserves base rates; one that may pass it, the tier's
    assert worst_case_micros(50_000, 4_096, haiku) == 50_000 * 0.2 + 4_096 * 0.5
    worst = worst_case_micros(150_000, 4_096, haiku)
    assert worst == 150_000 * 1 + 4_096 * 2.5
    every_way = [
        Usage(input=150_000, output=4_096),
        Usage(cache_write=150_000, cache_write_1h=150_000, output=4_096),
        Usage(input=1, cache_read=149_999, output=4_096),
    ]
    assert max(cost_micros(u, haiku) for u in every_way) <= worst


def test_a_dated_price_applies_from_its_day() -> None:
    """Sonnet 4.6 dropped its long-context premium on 2026-03-13: a 250,000-token prompt costs
    $1.50 the day before and $0.75 from that day (the call's time picks the price)."""
    sonnet = listed("anthropic", "claude-sonnet-4-6")
    assert sonnet is not None
    prompt = Usage(input=250_000)
    before = cost_micros(prompt, sonnet, datetime(2026, 3, 12, 23, 59, tzinfo=UTC))
    after = cost_micros(prompt, sonnet, datetime(2026, 3, 13, tzinfo=UTC))
    assert (before, after) == (1_500_000, 750_000)
    at = datetime(2026, 3, 12, tzinfo=UTC)
    assert worst_case_micros(250_000, 0, sonnet, at) == 250_000 * 12  # the dated tier's 1h write


def test_prices_in_the_fleet_file_win(tmp_path: Path) -> None:
    """``[prices]`` overrides genai-prices for the model it names; the others keep the list."""
    extra = '\n[prices."claude-sonnet-5-5"]\ninput = 1.0\noutput = 2.0\n'
    path = _fleet(
        tmp_path,
        {"jarvis": _claude("claude-sonnet-5-5"), "gene": _claude("claude-haiku-5-5")},
        extra,
    )
    fleet = load_fleet(path)
    jarvis = make_provider(fleet.agents["jarvis"], "k", fleet.price_table()).price
    gene = make_provider(fleet.agents["gene"], "k", fleet.price_table()).price
    assert jarvis == Price.anthropic(1.0, 2.0)
    assert cost_micros(SENTINEL_TURN, jarvis) == 13_260
    assert cost_micros(SENTINEL_TURN, gene) == 1_326


def test_an_unpriced_model_with_a_dollar_budget_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A model neither genai-prices nor [prices] knows, on an agent with a daily_usd: exit 78
    naming the agent and the model id. Without a dollar budget it is a warning; the offline
    model is free by definition; a [prices] entry makes it loadable."""
    monkeypatch.setenv("MCOS_PRICES_KEY", "sk-test-0123456789")
    local = (
        'model = { provider = "openai", id = "my-llama-7b", base_url = "http://127.0.0.1:9/v1" }'
        '\nkey = "env:MCOS_PRICES_KEY"'
    )
    path = _fleet(tmp_path, {"gene": local + USD})
    checked = runner.invoke(app, ["config", "check", "-f", str(path)], env={"COLUMNS": "300"})
    assert checked.exit_code == 78, checked.output
    assert "agents.gene.model.id: gene: no price is known for model 'my-llama-7b'" in (
        checked.output
    )
    assert "agents.gene.budget.daily_usd cannot be kept" in checked.output
    with pytest.raises(ConfigErrors):
        load_fleet(path)

    fleet_cap = _fleet(tmp_path / "capped", {"gene": local}, "")
    fleet_cap.write_text(
        fleet_cap.read_text().replace('timezone = "UTC"', 'timezone = "UTC"\ndaily_usd = 5.0', 1)
    )
    with pytest.raises(ConfigErrors, match=r"fleet\.daily_usd cannot be kept"):
        load_fleet(fleet_cap)

    uncapped = _fleet(tmp_path / "free", {"gene": local})
    checked = runner.invoke(app, ["config", "check", "-f", str(uncapped)], env={"COLUMNS": "300"})
    assert checked.exit_code == 0, checked.output
    assert "its calls are counted as free" in checked.output

    priced = _fleet(
        tmp_path / "priced",
        {"gene": local + USD},
        '\n[prices."my-llama-7b"]\ninput = 0.0\noutput = 0.0\n',
    )
    assert load_fleet(priced).pricing("gene") == Price.anthropic(0.0, 0.0)


def test_a_deprecated_model_is_named_with_its_replacement(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`mcos config check` warns (still exit 0: the model answers) on a deprecated or retired
    id, with the replacement; a current id gets no warning."""
    for model in ("claude-sonnet-4-5-20250929", "claude-opus-4-0", "claude-sonnet-5-5"):
        monkeypatch.setenv(_var(model), f"sk-test-{model}")
    path = _fleet(
        tmp_path,
        {
            "jarvis": _claude("claude-sonnet-4-5-20250929"),
            "gene": _claude("claude-opus-4-0"),
            "sentinel": _claude("claude-sonnet-5-5"),
        },
    )
    checked = runner.invoke(app, ["config", "check", "-f", str(path)], env={"COLUMNS": "300"})
    assert checked.exit_code == 0, checked.output
    assert (
        "agents.jarvis.model.id: claude-sonnet-4-5 is deprecated since 2026-11-30; use "
        "claude-sonnet-5-5" in checked.output
    )
    assert (
        "agents.gene.model.id: claude-opus-4-0 is retired since 2026-06-15; use claude-opus-5-5"
        in checked.output
    )
    assert "agents.sentinel" not in checked.output
    found = deprecation_of("anthropic", "claude-sonnet-4-0")
    assert found is not None
    assert found.message(date(2026, 5, 1)) == (
        "claude-sonnet-4-0 is deprecated since 2026-04-14; calls fail from 2026-06-15; use "
        "claude-sonnet-5-5"
    )


def test_the_docs_recommend_current_priced_models() -> None:
    """Every Claude id the README and the business template show is priced and not deprecated
    (before: they recommended claude-sonnet-4-5, deprecated since 2026-11-30)."""
    root = Path(mcos.__file__).parents[2]
    texts = [
        root / "README.md",
        Path(mcos.__file__).parent / "templates" / "business" / "fleet.toml",
    ]
    ids = {m for t in texts for m in re.findall(r'id = "(claude-[a-z0-9-]+)"', t.read_text())}
    assert {"claude-sonnet-5-5", "claude-haiku-5-5"} <= ids
    for model in ids:
        assert listed("anthropic", model) is not None, model
        assert deprecation_of("anthropic", model) is None, model
