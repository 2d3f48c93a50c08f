"""Which addresses an agent may browse: domain patterns, the runtime's checks before and after a
browser call, the flags given to @playwright/mcp, and the fleet-file errors that name the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from mcos.config import load_fleet
from mcos.domain.browsing import NOWHERE, check_pattern, origins_arg, pages_shown, refusal
from mcos.exceptions import ConfigErrors
from mcos.runtime.browser import CHECKOUT_BIN, BrowserGuard, locate
from tests.unit.test_fleet_config import BASE, messages, write

ALLOWED = ("example.com", "*.gov", "127.0.0.1")


class TestPatterns:
    """Domain patterns in the fleet file."""

    @pytest.mark.parametrize("good", ["example.com", "*.gov", "127.0.0.1", "Sub.Example.COM"])
    def test_hosts_and_suffixes_are_taken_lowercased(self, good: str) -> None:
        """A host or ``*.suffix`` passes, lowercased."""
        assert check_pattern(good) == good.lower()

    @pytest.mark.parametrize(
        "bad",
        ["*", "https://example.com", "example.com/path", "example.com:8080", "ex*ple.com",
         "a.*.com", "user@example.com", "-bad.com", "", "exa mple.com"],
    )  # fmt: skip
    def test_anything_else_is_refused_saying_why(self, bad: str) -> None:
        """Schemes, paths, ports, inner wildcards and junk are errors that show the pattern."""
        with pytest.raises(ValueError, match="is not a domain"):
            check_pattern(bad)


class TestAddresses:
    """What the runtime lets through to the browser."""

    @pytest.mark.parametrize(
        "url",
        ["https://example.com/", "http://EXAMPLE.com:8443/a?b", "https://www.irs.gov/forms",
         "http://127.0.0.1:5000/page", "about:blank"],
    )  # fmt: skip
    def test_allowed(self, url: str) -> None:
        """Exact hosts on any port, hosts under a ``*.`` suffix, and the blank page."""
        assert refusal(url, ALLOWED) is None

    @pytest.mark.parametrize(
        ("url", "why"),
        [
            ("https://www.example.com/", "www.example.com is not an allowed domain"),
            ("https://gov/", "gov is not an allowed domain"),
            ("https://example.com.evil.net/", "example.com.evil.net is not an allowed"),
            ("https://evilgov/", "evilgov is not an allowed domain"),
            ("http://a.gov:pw@evil.net/", "user name or password"),
            ("file:///etc/passwd", "only http and https"),
            ("javascript:alert(1)", "only http and https"),
            ("data:text/html,hi", "only http and https"),
            ("http://localhost:5000/", "localhost is not an allowed domain"),
            ("http://example.com:99999/", "is not a valid address"),
        ],
    )
    def test_refused(self, url: str, why: str) -> None:
        """Other hosts, look-alikes, credentials in the address and other schemes."""
        found = refusal(url, ALLOWED)
        assert found is not None
        assert why in found

    def test_origins_for_the_browser_cover_every_port(self) -> None:
        """Each pattern as itself and on any port; nothing allowed is one dead origin."""
        assert origins_arg(("example.com", "*.gov")) == "example.com;example.com:*;*.gov;*.gov:*"
        assert origins_arg(()) == NOWHERE


class TestGuard:
    """The runtime's check on each browser call."""

    guard = BrowserGuard("browser", ALLOWED)

    def test_url_arguments_are_checked_at_any_depth(self) -> None:
        """``browser_navigate`` and ``browser_tabs`` name a url; each one is checked."""
        assert self.guard.before("browser_navigate", {"url": "https://example.com"}) is None
        refused = self.guard.before("browser_tabs", {"action": "new", "url": "https://x.net/"})
        assert refused == ("x.net is not an allowed domain (allowed: example.com, *.gov, "
                           "127.0.0.1)", "https://x.net/")  # fmt: skip
        nested = {"fields": [{"name": "a", "url": "http://evil.net"}]}
        assert self.guard.before("browser_fill_form", nested) is not None

    def test_code_and_file_tools_are_never_forwarded(self) -> None:
        """Running code in the server or uploading host files could pass the allowlist."""
        for tool in ("browser_run_code_unsafe", "browser_file_upload"):
            refused = self.guard.before(tool, {})
            assert refused is not None
            assert "never allowed" in refused[0]

    def test_a_result_showing_a_page_outside_is_caught(self) -> None:
        """A redirect or script that left the allowlist shows in the result's page address."""
        ok = "### Page\n- Page URL: https://example.com/a\n- Page Title: A"
        assert self.guard.after(ok) is None
        out = "### Page\n- Page URL: https://evil.net/steal\n- Page Title: B"
        escaped = self.guard.after(out)
        assert escaped is not None
        assert escaped[1] == "https://evil.net/steal"
        assert pages_shown(out) == ["https://evil.net/steal"]

    def test_navigation_reads_and_page_actions_write(self) -> None:
        """Moving between allowed pages is reading; clicking and typing stay writes."""
        assert self.guard.reads("browser_navigate")
        assert not self.guard.reads("browser_click")
        assert self.guard.args(Path("/w/.mcos/b"))[:2] == [
            "--allowed-origins",
            "example.com;example.com:*;*.gov;*.gov:*;127.0.0.1;127.0.0.1:*",
        ]


class TestProgram:
    """Where the browser server's program is found."""

    def test_paths_and_bare_names(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        """A relative path from the fleet's folder, an absolute one as is; a bare name from
        PATH, else from this checkout's tools/browser (make browser-mcp)."""
        assert locate("bin/x", tmp_path) == str(tmp_path / "bin" / "x")
        assert locate("/opt/x", tmp_path) == "/opt/x"
        monkeypatch.setenv("PATH", str(tmp_path))
        assert locate("no-such-program", tmp_path) == "no-such-program"
        if (CHECKOUT_BIN / "playwright-mcp").exists():
            assert locate("playwright-mcp", tmp_path) == str(CHECKOUT_BIN / "playwright-mcp")
        (tmp_path / "playwright-mcp").write_text("#!/bin/sh\n")
        (tmp_path / "playwright-mcp").chmod(0o755)
        assert locate("playwright-mcp", tmp_path) == "playwright-mcp"  # PATH first


BROWSER = """
[mcp.browser]
kind = "browser"
command = ["tools/browser/node_modules/.bin/playwright-mcp", "--headless"]
"""


class TestFleetFile:
    """The fleet file's browser settings."""

    def test_domains_load(self, tmp_path: Path) -> None:
        """``[agents.X.browser] allowed_domains`` loads, lowercased."""
        text = BASE + 'allowed_tools = ["browser__*"]\n[agents.jarvis.browser]\n'
        text += 'allowed_domains = ["Example.com", "*.gov"]\n' + BROWSER
        fleet = load_fleet(write(tmp_path, text))
        browsing = fleet.agents["jarvis"].browser
        assert browsing is not None
        assert browsing.allowed_domains == ["example.com", "*.gov"]

    def test_browser_tools_without_domains_is_an_error(self, tmp_path: Path) -> None:
        """An agent allowed a browser server's tools must say where it may go."""
        text = BASE + 'allowed_tools = ["browser__browser_navigate"]\n' + BROWSER
        [problem] = messages(write(tmp_path, text))
        assert "agents.jarvis.browser" in problem
        assert "allowed_domains" in problem

    def test_a_bad_pattern_names_its_key(self, tmp_path: Path) -> None:
        """A URL where a domain belongs is refused at its key."""
        text = BASE + '[agents.jarvis.browser]\nallowed_domains = ["https://example.com"]\n'
        [problem] = messages(write(tmp_path, text))
        assert "agents.jarvis.browser.allowed_domains" in problem
        assert "give the host only" in problem

    def test_the_command_may_not_set_what_mcos_sets(self, tmp_path: Path) -> None:
        """Origins and the output folder are mcos's, per agent; a URL transport is refused."""
        text = BASE + BROWSER.replace('"--headless"', '"--headless", "--allowed-origins=*"')
        [problem] = messages(write(tmp_path, text))
        assert "may not set --allowed-origins" in problem
        remote = BASE + '[mcp.browser]\nkind = "browser"\nurl = "http://127.0.0.1:9/mcp"\n'
        with pytest.raises(ConfigErrors, match="needs command"):
            load_fleet(write(tmp_path, remote))
