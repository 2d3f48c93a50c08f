"""The dashboard in a real browser (Playwright driving Debian's Chromium) over `mcos run` with
the business template: sign in, every agent; send a directive from the page and find the
agent's reply in the messages search; pause the agent (a message waits) and resume it (the
message is answered); an incident through its gates, an approval whose directive the agent
acknowledges while the page updates itself, the spend chart, CSRF.

``MCOS_UPDATE_SCREENSHOTS=1`` copies the screenshots of every page into docs/screenshots/."""

from __future__ import annotations

import os
import re
import shutil
from datetime import UTC, datetime
from pathlib import Path

import pytest

from mcos.client import Calls, Client
from mcos.config import load_fleet
from mcos.domain.messages import Priority
from mcos.domain.tokens import PrincipalKind
from tests.conftest import IN_CI
from tests.e2e.conftest import BusinessFleet
from tests.waiting import wait_until

CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
DOCS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"
HIGH = Priority.HIGH


@pytest.fixture
def fleet_running(business_fleet: BusinessFleet) -> tuple[str, Path]:
    """The shared `mcos run` of the business fleet (tests/e2e/conftest.py); (URL, folder)."""
    return business_fleet.url, business_fleet.home


@pytest.fixture(autouse=True)
def _chromium() -> None:
    """Debian's chromium, checked before the fleet is started for nothing."""
    if not Path(CHROMIUM).exists():
        if IN_CI:
            pytest.fail("chromium is missing (make system-deps installs it)")
        pytest.skip("Debian's chromium is not installed")


@pytest.mark.slow
@pytest.mark.xdist_group("business-fleet")  # one worker: the fleet is shared (e2e/conftest.py)
@pytest.mark.timeout(480)  # 23 agents starting, then two model turns and a pause
def test_the_dashboard_in_a_browser(fleet_running: tuple[str, Path], tmp_path: Path) -> None:
    from playwright.sync_api import expect, sync_playwright

    url, home = fleet_running
    operator = (home / "state" / "operator.token").read_text().strip()
    shots = tmp_path / "screenshots"
    shots.mkdir()
    with Client(url, operator) as op:
        tokens = {
            n: op.do(Calls.create_token(PrincipalKind.AGENT, n)).token
            for n in ("sentinel", "jarvis")
        }
        # Supervised agents write under their instance's fence (409 fenced without it).
        fences = {x.agent: x.fence for x in op.do(Calls.leases())}
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        missing: list[str] = []
        page.on("response", lambda r: missing.append(r.url) if r.status == 404 else None)
        page.goto(url + "/")
        expect(page).to_have_url(url + "/login")
        page.screenshot(path=str(shots / "login.png"))
        # Keyboard only: the token field, then Enter.
        page.focus("input[name=token]")
        page.keyboard.type(operator)
        page.keyboard.press("Enter")
        for name in load_fleet(home / "fleet.toml").agents:
            expect(page.locator(f"a[href='/agents/{name}']")).to_be_visible()
        expect(page.locator(".health")).to_be_visible()
        page.screenshot(path=str(shots / "fleet.png"), full_page=True)

        # A directive from the page, as the signed-in human, through the API's own send.
        page.goto(url + "/messages")
        form = page.locator("form.compose")
        form.locator("input[name=to]").fill("elon")
        form.locator("select[name=kind]").select_option("directive")
        form.locator("select[name=priority]").select_option("high")
        form.locator("input[name=subject]").fill("Ship the pricing page 7Q4")
        form.locator("textarea[name=body]").fill("Staging first, then production on Friday.")
        form.locator("button").click()
        expect(page).to_have_url(re.compile(r"/messages\?thread=\d+&sent=\d+"))
        expect(page.locator("section.message.sent")).to_contain_text("founder → elon")
        thread = int(re.search(r"thread=(\d+)", page.url)[1])  # type: ignore[index]

        # Elon's turn for this directive appears in its trace: what woke it, the prompt by
        # section with token counts, its tool calls and its cost.
        sent = int(re.search(r"sent=(\d+)", page.url)[1])  # type: ignore[index]

        def turn_recorded() -> bool:
            page.goto(url + f"/turns?message={sent}")
            return page.locator("td.outcome-ok").count() > 0

        wait_until("elon's turn for the directive in the trace", turn_recorded, timeout=90)
        page.locator("tbody tr a[href^='/turns/']").first.click()
        main = page.locator("main")
        expect(main).to_contain_text("elon: main turn")
        expect(main).to_contain_text(f"message #{sent}")
        expect(main.locator("h2", has_text="Prompt by section")).to_be_visible()
        expect(main).to_contain_text("SOUL.md")
        expect(main.locator("details summary strong").first).to_be_visible()  # a tool call
        expect(main).to_contain_text("cost $")
        page.screenshot(path=str(shots / "turn.png"), full_page=True)

        # The reply, found with the messages search (from elon, text of the subject).
        def search_reply() -> bool:
            page.goto(url + "/messages")
            search = page.locator("form.search")
            search.locator("input[name=q]").fill("7Q4")
            search.locator("input[name=from]").fill("elon")
            search.locator("button").click()
            return page.locator(f"tr.msg a[href^='/messages?thread={thread}#']").count() > 0

        wait_until("elon's reply in the messages search", search_reply, timeout=90, interval=1)
        expect(page.locator("tr.msg").first).to_contain_text("Acknowledged")
        page.screenshot(path=str(shots / "messages.png"), full_page=True)

        # Pause elon from its page: a message sent now waits; resume: it is answered.
        page.goto(url + "/agents/elon")
        page.locator("form.control input[name=reason]").fill("checking its budget")
        page.locator("form.control button.pause").click()
        expect(page.locator(".flash.done")).to_contain_text("paused")
        expect(page.locator("main")).to_contain_text("paused by founder: checking its budget")
        page.screenshot(path=str(shots / "agent.png"), full_page=True)
        with Client(url, operator) as op:
            waiting = op.do(
                Calls.send("elon", "are the numbers in?", subject="numbers 5R8", priority=HIGH)
            )
        log = home / "agents" / "elon" / "memory" / f"{datetime.now(UTC):%Y-%m-%d}.md"
        wait_until(
            "elon's runtime to stop for the pause",
            lambda: log.exists() and "paused by Mission Control" in log.read_text(),
            timeout=60,
        )
        with Client(url, operator) as op:
            answered = op.do(Calls.search_messages(q="5R8", sender="elon"))
            assert answered.messages == []  # held while paused
        page.goto(url + "/agents/elon")
        page.locator("form.control button.resume").click()
        expect(page.locator(".flash.done")).to_contain_text("resumed")
        with Client(url, operator) as op:
            reply = wait_until(
                "elon to answer once resumed",
                lambda: op.do(Calls.search_messages(q="5R8", sender="elon")).messages,
                timeout=90,
                interval=1,
            )
            assert reply[0].reply_to == waiting.message.id
            actions = [r.action for r in op.do(Calls.audit(actor="operator:founder"))]
        assert {"agent.pause", "agent.resume"} <= set(actions)

        # An incident from an agent, through its gates: the orchestrator, then this human.
        with Client(url, tokens["sentinel"], fence=fences["sentinel"]) as sentinel:
            made = sentinel.do(Calls.report_incident("P0", "metric directories missing", "ls"))
        with Client(url, tokens["jarvis"], fence=fences["jarvis"]) as jarvis:
            jarvis.do(Calls.decide_incident(made.id, "confirm", "checked two hosts"))
        page.goto(url + "/incidents")
        card = page.locator(f"#incident-{made.id}")
        expect(card).to_contain_text("reported")
        card.locator("input[name=reason]").fill("confirmed by phone with the DC")
        card.locator("button", has_text="Confirm").click()
        expect(page.locator(f"#incident-{made.id}")).to_contain_text("confirmed")
        page.screenshot(path=str(shots / "incidents.png"), full_page=True)

        # A request waiting for a human; the directive reaches the agent, whose runtime
        # acknowledges it, and the page shows it without being reloaded.
        with Client(url, tokens["jarvis"], fence=fences["jarvis"]) as jarvis:
            req = jarvis.do(
                Calls.request_approval(
                    "issue_directive",
                    {"plan": "billing rewrite"},
                    "phase one, staging only",
                    executor="forge",
                    constraints="staging only; weekly reports",
                )
            )
        page.goto(url + "/approvals")
        box = page.locator(f"#approval-{req.id}")
        box.locator("input[name=reason]").fill("go ahead")
        box.locator("button", has_text="Approve").click()
        expect(page.locator(f"#approval-{req.id}")).to_contain_text("approved")
        page.evaluate("window.__stayed = true")
        expect(page.locator(f"#approval-{req.id}")).to_contain_text(
            "directive acknowledged", timeout=40_000
        )
        assert page.evaluate("window.__stayed") is True  # updated in place, not reloaded
        page.screenshot(path=str(shots / "approvals.png"), full_page=True)

        page.goto(url + "/spend")
        expect(page.locator("svg.chart")).to_be_visible()
        page.screenshot(path=str(shots / "spend.png"), full_page=True)
        page.goto(url + "/pages")
        page.screenshot(path=str(shots / "pages.png"), full_page=True)
        page.goto(url + "/audit-log")
        expect(page.locator("table.audit dl.kv").first).to_be_visible()
        page.screenshot(path=str(shots / "audit.png"))  # the newest records: the log is long
        page.goto(url + "/docs")  # Swagger UI from the package: no CDN
        expect(page.locator(".swagger-ui .info .title")).to_contain_text(
            "Mission Control", timeout=30_000
        )
        assert not missing, missing  # no 404: favicon, static files, docs assets

        # A state-changing request without the CSRF token is refused.
        refused = page.request.post(url + f"/approvals/{req.id}/veto", form={"reason": "x"})
        assert refused.status == 403
        browser.close()
    if os.environ.get("MCOS_UPDATE_SCREENSHOTS"):
        DOCS.mkdir(parents=True, exist_ok=True)
        for shot in shots.iterdir():
            shutil.copy(shot, DOCS / shot.name)
