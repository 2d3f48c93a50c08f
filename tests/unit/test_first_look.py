"""The first look's rules: what a triage model may settle, how its answer is read, which
triage models an agent can reach, and the offline model's first look by rule."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest

from mcos.config.loader import deprecation_warnings
from mcos.config.models import Fleet
from mcos.domain.first_look import TOOL, Item, must_see, read_decision, route_problem
from mcos.exceptions import ConfigError, ConfigErrors
from mcos.models.anthropic import AnthropicModel, request_body
from mcos.models.base import ModelRequest, ToolSpec, Turn
from mcos.models.factory import make_provider, make_triage_provider
from mcos.models.offline import OfflineModel
from tests.runtime.conftest import write_fleet

NEWS = Item("message 7", "report", "normal", from_agent=True)


class TestMustSee:
    """Only another agent's report or reply at normal or low priority may be settled."""

    def test_news_from_an_agent_may_be_settled(self) -> None:
        assert must_see(NEWS) is None
        assert must_see(Item("message 8", "reply", "low", from_agent=True)) is None

    @pytest.mark.parametrize(
        ("item", "why"),
        [
            (Item("message 7", "report", "urgent", from_agent=True), "message 7 is urgent"),
            (Item("message 7", "report", "high", from_agent=True), "message 7 is high"),
            (Item("message 7", "request", from_agent=True), "message 7 is a request"),
            (Item("message 7", "directive", from_agent=True), "message 7 is a directive"),
            (Item("message 7", "alert", from_agent=True), "message 7 is a alert"),
            (
                Item("message 7", "report", from_agent=True, governance=True),
                "message 7 is part of an approval or incident",
            ),
            (
                Item("message 7", "report", from_agent=True, outside=True),
                "message 7 came from outside the fleet",
            ),
            (Item("message 7", "report"), "message 7 is not from an agent of the fleet"),
            (Item("check web", "check"), "check web is a check item"),
            (Item("routine mail", "routine"), "routine mail is a routine item"),
        ],
    )
    def test_everything_else_goes_to_the_main_model(self, item: Item, why: str) -> None:
        assert must_see(item) == why


class TestReadDecision:
    """Every doubt goes to the main model; a clean 'not needed' settles every item."""

    def test_a_clean_no_settles_each_item_with_its_reason(self) -> None:
        answer = {
            "needs_main": False,
            "reason": "news",
            "items": [
                {"item": "message 7", "needs_main": False, "reason": "backup done"},
                {"item": "[Message 8]", "needs_main": False, "reason": ""},
            ],
        }
        verdict = read_decision(answer, ["message 7", "message 8"])
        assert not verdict.needs_main
        assert verdict.usable
        assert verdict.settled == (("message 7", "backup done"), ("message 8", "news"))

    def test_one_item_needs_no_item_decision(self) -> None:
        verdict = read_decision({"needs_main": False, "reason": "news"}, ["message 7"])
        assert verdict.settled == (("message 7", "news"),)

    def test_an_item_that_needs_the_main_model_wins_over_the_overall_no(self) -> None:
        answer = {
            "needs_main": False,
            "reason": "news",
            "items": [{"item": "12", "needs_main": True, "reason": "asks for a review"}],
        }
        verdict = read_decision(answer, ["message 12"])
        assert verdict.needs_main
        assert verdict.reason == "12: asks for a review"
        assert verdict.settled == ()

    def test_an_overall_yes_needs_the_main_model(self) -> None:
        verdict = read_decision({"needs_main": True, "reason": "a decision"}, ["message 1"])
        assert verdict.needs_main
        assert verdict.usable

    def test_an_item_left_undecided_in_a_batch_needs_the_main_model(self) -> None:
        answer = {
            "needs_main": False,
            "reason": "news",
            "items": [{"item": "message 1", "needs_main": False, "reason": "x"}],
        }
        verdict = read_decision(answer, ["message 1", "message 2"])
        assert verdict.needs_main
        assert verdict.reason == "no decision for message 2"

    @pytest.mark.parametrize(
        ("answer", "said"),
        [
            (None, f"no decision: the triage model did not call {TOOL}"),
            ({"reason": "x"}, "malformed decision (needs_main: Field required)"),
            ({"needs_main": "perhaps", "reason": "x"}, "malformed decision (needs_main: Input"),
            ({"needs_main": False, "reason": "x", "items": "all"}, "malformed decision (items:"),
            ("no", "malformed decision (the answer: Input should be a valid dictionary"),
        ],
    )
    def test_a_missing_or_malformed_answer_is_unusable(self, answer: object, said: str) -> None:
        verdict = read_decision(answer, ["message 1"])
        assert verdict.needs_main
        assert not verdict.usable
        assert verdict.reason.startswith(said)


class TestRoutes:
    """A triage model shares the agent's credential and route, or needs none."""

    @pytest.mark.parametrize(
        ("main", "triage", "base_url"),
        [
            ("anthropic", "anthropic", None),
            ("anthropic", "offline", None),
            ("offline", "offline", None),
            ("openai", "openai", None),
            ("anthropic", "openai", "http://127.0.0.1:11434/v1"),  # a local server of its own
        ],
    )
    def test_reachable(self, main: str, triage: str, base_url: str | None) -> None:
        assert route_problem(main, triage, base_url, None) is None

    @pytest.mark.parametrize(
        ("main", "triage", "base_url"),
        [
            ("openai", "anthropic", None),
            ("offline", "anthropic", None),
            ("anthropic", "openai", None),
        ],
    )
    def test_unreachable(self, main: str, triage: str, base_url: str | None) -> None:
        problem = route_problem(main, triage, base_url, None)
        assert problem is not None
        assert problem.startswith(f"a {triage} triage model needs the agent's model on {triage}")


def _fleet(tmp_path: Path, gene: str) -> Fleet:
    """The small template's fleet with ``gene``'s lines given (they replace the same keys)."""
    return write_fleet(tmp_path / "fleet", {"gene": gene})


CLAUDE = 'model = { provider = "anthropic", id = "claude-sonnet-5-5" }\nkey = "env:GENE_KEY"\n'


class TestFleetFile:
    """The fleet file is checked for its triage models at load, like for its models."""

    def test_an_unreachable_triage_model_is_refused_at_load(self, tmp_path: Path) -> None:
        gene = 'triage_model = { provider = "anthropic", id = "claude-haiku-5-5" }'
        with pytest.raises(ConfigErrors) as e:
            _fleet(tmp_path, gene)
        assert "agents.gene.triage_model.provider: gene: a anthropic triage model needs" in str(
            e.value
        )

    def test_an_unpriced_triage_model_under_a_dollar_budget_is_refused(
        self, tmp_path: Path
    ) -> None:
        gene = CLAUDE + 'triage_model = { provider = "anthropic", id = "claude-tiny-0" }'
        with pytest.raises(ConfigErrors) as e:
            _fleet(tmp_path, gene + "\nbudget = { daily_usd = 1.0 }")
        assert (
            "agents.gene.triage_model.id: gene: no price is known for triage model "
            "'claude-tiny-0' (anthropic), so the dollar budget cannot be kept"
        ) in str(e.value)
        assert _fleet(tmp_path / "uncapped", gene).agents["gene"].triage_model  # no cap: loads

    def test_a_deprecated_triage_model_is_named_with_its_replacement(self, tmp_path: Path) -> None:
        gene = CLAUDE + 'triage_model = { provider = "anthropic", id = "claude-sonnet-4-5" }'
        fleet = _fleet(tmp_path, gene)
        warnings = deprecation_warnings(fleet, date(2026, 12, 2))
        assert any(
            w.startswith("agents.gene.triage_model.id: claude-sonnet-4-5 is deprecated")
            for w in warnings
        )


class TestProviders:
    """The triage model as the factory builds it."""

    def test_the_same_provider_lends_its_client(self, tmp_path: Path) -> None:
        gene = CLAUDE + 'triage_model = { provider = "anthropic", id = "claude-haiku-5-5" }'
        fleet = _fleet(tmp_path, gene)
        agent, prices = fleet.agents["gene"], fleet.price_table()
        main = make_provider(agent, "sk-ant-k", prices)
        triage = make_triage_provider(agent, main, prices)
        assert isinstance(main, AnthropicModel)
        assert isinstance(triage, AnthropicModel)
        assert triage._client is main._client  # the same key and route
        assert (triage.model, main.model) == ("claude-haiku-5-5", "claude-sonnet-5-5")
        assert triage.price != main.price

    def test_the_offline_model_takes_a_first_look_for_any_agent(self, tmp_path: Path) -> None:
        gene = CLAUDE + 'triage_model = { provider = "offline", id = "offline-1" }'
        fleet = _fleet(tmp_path, gene)
        agent, prices = fleet.agents["gene"], fleet.price_table()
        triage = make_triage_provider(agent, make_provider(agent, "k", prices), prices)
        assert isinstance(triage, OfflineModel)

    def test_a_provider_that_cannot_lend_its_client_is_a_config_error(self, tmp_path: Path) -> None:
        gene = 'triage_model = { provider = "offline", id = "offline-1" }'
        fleet = _fleet(tmp_path, gene)
        agent = fleet.agents["gene"].model_copy(
            update={"triage_model": fleet.agents["gene"].model.model_copy(
                update={"provider": "anthropic", "id": "claude-haiku-5-5"})}
        )  # fmt: skip
        with pytest.raises(ConfigError, match="triage_model: a anthropic triage model"):
            make_triage_provider(agent, OfflineModel(), fleet.price_table())


def _triage_request(text: str) -> ModelRequest:
    return ModelRequest(
        stable="first look",
        volatile="",
        turns=(Turn.user(text),),
        tools=(ToolSpec(TOOL, "decide", {"type": "object"}),),
        tool_choice=TOOL,
    )


async def test_the_offline_model_answers_a_first_look_by_rule() -> None:
    text = (
        "2 item(s) woke gene:\n"
        "- [message 7] from jarvis (report, normal): nightly backup done\nAll green.\n"
        "- [message 8] from jarvis (reply, normal): disk\nShould we buy a bigger one?"
    )
    reply = await OfflineModel().complete(_triage_request(text))
    assert [c.name for c in reply.tool_calls] == [TOOL]
    verdict = read_decision(reply.tool_calls[0].input, ["message 7", "message 8"])
    assert verdict.needs_main
    assert verdict.reason == "message 8: asks for something"
    only_news = text.split("\n- [message 8]", maxsplit=1)[0]
    reply = await OfflineModel().complete(_triage_request(only_news))
    verdict = read_decision(reply.tool_calls[0].input, ["message 7"])
    assert not verdict.needs_main
    assert verdict.settled == (("message 7", "informational, nothing asked"),)


def test_a_forced_tool_is_sent_as_anthropics_tool_choice() -> None:
    body = request_body("claude-haiku-5-5", _triage_request("x"))
    assert body["tool_choice"] == {"type": "tool", "name": TOOL}
    assert "tool_choice" not in request_body("m", ModelRequest("s", "", (Turn.user("x"),)))
