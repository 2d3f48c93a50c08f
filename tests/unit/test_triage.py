"""The e-mail triage rules: first match wins, every given field must match, content alone
never makes a mail urgent."""

from __future__ import annotations

from mcos.channels.email import parse_mail, sender_authenticated
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
        decision = triage([BANK], "Alerts@BANK.example", "Statement", "", authenticated=True)
        assert decision == Triage("urgent", "Urgent", flag=True, rule=0)

    def test_sender_glob_matches_the_whole_address(self) -> None:
        """A look-alike domain does not match."""
        assert triage([BANK], "x@bank.example.evil.test", "", "", authenticated=True).action == (
            "model"
        )

    def test_first_matching_rule_wins(self) -> None:
        """A bank newsletter is urgent when the bank rule comes first, ignored otherwise."""
        assert (
            triage([BANK, NEWSLETTER], "n@bank.example", "Newsletter", "", authenticated=True).rule
            == 0
        )
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
        for sender, subject, action in (
            ("a@bank.example", "Fraud alert", "urgent"),
            ("a@bank.example", "Statement", "model"),
            ("a@other.example", "Fraud alert", "model"),
        ):
            assert triage([both], sender, subject, "", authenticated=True).action == action

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


MX = "mx.example.com"


def vouched(
    *headers: str, address: str = "alerts@bank.example", serv: str | None = MX
) -> str | None:
    return sender_authenticated(headers, serv, address)


class TestSenderAuthentication:
    """A ``from`` rule trusts the From address only when the receiving server authenticated
    it (RFC 8601 Authentication-Results, only its own header)."""

    def test_a_from_rule_needs_the_sender_authenticated(self) -> None:
        """The same mail from the bank: urgent when vouched for, to the model when not."""
        assert triage([BANK], "alerts@bank.example", "Due", "").action == "model"
        assert triage([BANK], "alerts@bank.example", "Due", "", authenticated=True).action == (
            "urgent"
        )
        assert triage([NEWSLETTER], "x@y.example", "newsletter", "").action == "ignore"

    def test_dkim_spf_or_dmarc_aligned_with_from_pass(self) -> None:
        """Each method vouches when it passed for the From domain (or a parent of it)."""
        assert vouched(f"{MX}; dkim=pass header.d=bank.example") == "dkim"
        assert vouched(f"{MX}; dkim=pass header.i=@bank.example") == "dkim"
        assert vouched(f"{MX}; spf=pass smtp.mailfrom=bounce@bank.example") == "spf"
        assert vouched(f"{MX}; dmarc=pass (p=reject) header.from=bank.example") == "dmarc"
        sub = "alerts@mail.bank.example"
        assert vouched(f"{MX}; dkim=pass header.d=bank.example", address=sub) == "dkim"
        assert vouched(f"{MX.upper()};\r\n  spf=fail smtp.mailfrom=x@bank.example;\r\n"
                       "  dkim=pass header.d=Bank.Example") == "dkim"  # fmt: skip

    def test_unaligned_failed_or_absent_results_do_not(self) -> None:
        """A pass for another domain, a fail, none, or a TLD-wide signature: not vouched."""
        assert vouched(f"{MX}; dkim=pass header.d=evil.example") is None
        assert vouched(f"{MX}; dkim=pass header.d=example") is None  # no bare parent
        assert vouched(f"{MX}; dkim=pass header.d=bank.example.evil.test") is None
        assert vouched(f"{MX}; spf=softfail smtp.mailfrom=bank.example") is None
        assert vouched(f"{MX}; dmarc=fail header.from=bank.example") is None
        assert vouched(f"{MX}; dmarc=pass header.from=evil.example") is None
        assert vouched(f"{MX}; none") is None
        assert vouched() is None
        assert vouched(f"{MX}; ;;garbage") is None

    def test_only_the_receiving_servers_own_header_counts(self) -> None:
        """A header naming another server (the sender can write one) is ignored; the topmost
        one of the receiving server decides, so a forged pass below its fail does not help;
        without a configured authserv_id nothing is believed."""
        forged = "mx.evil.example; dkim=pass header.d=bank.example"
        assert vouched(forged) is None
        assert (
            vouched(
                f"{MX}; dkim=fail header.d=bank.example", f"{MX}; dkim=pass header.d=bank.example"
            )
            is None
        )
        assert vouched(f"{MX}; dkim=pass header.d=bank.example", serv=None) is None

    def test_headers_are_read_from_the_mail_topmost_first(self) -> None:
        """parse_mail keeps every Authentication-Results header, in order."""
        raw = (
            f"Authentication-Results: {MX}; dkim=pass header.d=bank.example\r\n"
            "Authentication-Results: mx.evil.example; dkim=fail\r\n"
            "From: Bank <alerts@bank.example>\r\nSubject: Due\r\n\r\nPay.\r\n"
        ).encode()
        mail = parse_mail(raw)
        assert [r.split(";")[0] for r in mail.auth_results] == [MX, "mx.evil.example"]
        assert sender_authenticated(mail.auth_results, MX, mail.address) == "dkim"
