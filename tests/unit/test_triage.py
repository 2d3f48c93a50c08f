"""The e-mail triage rules: first match wins, every given field must match, content alone
never makes a mail urgent."""

from __future__ import annotations

from mcos.config.models import TriageRule
from mcos.domain.triage import Triage, triage


def rule(**fields: object) -> TriageRule:
    """A rule as the fleet file writes it (``from`` for the sender)."""
    return TriageRule.model_validate(fields)


BANK = rule(**{"from": "*@bank.example", "action": "urgent", "flag": True, "move_to": "Urgent"})
NEWSLETTER = rule(subject="newsletter", action="ignore", move_to="Archive")


class TestTriage:
    """triage() over plain strings."""

    def test_no_rules_sends_everything_to_the_model(self) -> None:
        """Without rules a mail goes to the model, unflagged, unmoved."""
        assert triage([], "a@b.example", "Hi", "text") == Triage("model")

    def test_sender_glob_is_case_insensitive(self) -> None:
        """``*@bank.example`` matches ``Alerts@BANK.example``."""
        decision = triage([BANK], "Alerts@BANK.example", "Statement", "")
        assert decision == Triage("urgent", "Urgent", flag=True, rule=0)

    def test_sender_glob_matches_the_whole_address(self) -> None:
        """A look-alike domain does not match."""
        assert triage([BANK], "x@bank.example.evil.test", "", "").action == "model"

    def test_first_matching_rule_wins(self) -> None:
        """A bank newsletter is urgent when the bank rule comes first, ignored otherwise."""
        assert triage([BANK, NEWSLETTER], "n@bank.example", "Newsletter", "").rule == 0
        assert triage([NEWSLETTER, BANK], "n@bank.example", "Newsletter", "").action == "ignore"

    def test_subject_and_body_are_regex_searches(self) -> None:
        """Subject and body patterns are searched anywhere, ignoring case."""
        invoices = rule(subject=r"invoice\s+#\d+", action="urgent")
        assert triage([invoices], "a@b", "Re: INVOICE  #42 overdue", "").action == "urgent"
        body = rule(body="unsubscribe", action="ignore")
        assert triage([body], "a@b", "News", "Click to Unsubscribe.").action == "ignore"

    def test_all_given_fields_must_match(self) -> None:
        """A rule with sender and subject needs both."""
        both = rule(**{"from": "*@bank.example", "subject": "fraud", "action": "urgent"})
        assert triage([both], "a@bank.example", "Fraud alert", "").action == "urgent"
        assert triage([both], "a@bank.example", "Statement", "").action == "model"
        assert triage([both], "a@other.example", "Fraud alert", "").action == "model"

    def test_a_rule_without_fields_matches_everything(self) -> None:
        """A catch-all rule at the end decides for the rest."""
        catch_all = rule(action="ignore")
        assert triage([BANK, catch_all], "a@b", "", "").rule == 1

    def test_urgent_words_do_not_make_urgent(self) -> None:
        """A mail shouting URGENT is urgent only if a rule says so."""
        decision = triage([BANK, NEWSLETTER], "attacker@evil.example", "URGENT!!!", "urgent")
        assert decision == Triage("model")

    def test_missing_sender_matches_no_sender_glob(self) -> None:
        """A mail without From is not taken for the bank's."""
        assert triage([BANK], "", "", "").action == "model"
