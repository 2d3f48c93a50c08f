"""The dashboard in a real browser (Playwright driving Debian's Chromium) over `mcos run` with
the business template: sign in, every agent, an incident through its gates, an approval whose
directive the agent acknowledges while the page updates itself, the spend chart, CSRF."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from mcos.client import Calls, Client
from mcos.config.scaffold import init_fleet
from mcos.domain.tokens import PrincipalKind
from tests.api.conftest import free_port
from tests.conftest import IN_CI
from tests.e2e.cli_helpers import MCOS
from tests.waiting import wait_until

CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
DOCS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"


@pytest.fixture
def fleet_running(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """`mcos run` of the business fleet on a free port; (URL, fleet folder)."""
    if not Path(CHROMIUM).exists():
        if IN_CI:
            pytest.fail("chromium is missing (make system-deps installs it)")
        pytest.skip("Debian's chromium is not installed")
    home = tmp_path / "biz"
    path = init_fleet(home, template="business")
    port = free_port()
    path.write_text(path.read_text().replace("127.0.0.1:8700", f"127.0.0.1:{port}"))
    out = (tmp_path / "run.out").open("wb")
    run = subprocess.Popen(
        [*MCOS, "run", str(home)],
        stdout=out,
        stderr=subprocess.STDOUT,
        env={**os.environ, "COLUMNS": "200"},
    )
    url = f"http://127.0.0.1:{port}"
    token = home / "state" / "operator.token"

    def all_idle() -> bool:
        if run.poll() is not None:
            pytest.fail(f"mcos run exited {run.returncode}")
        if not token.exists():
            return False
        with Client(url, token.read_text().strip()) as op:
            try:
                agents = op.do(Calls.agents())
            except Exception:
                return False
        return len(agents) == 12 and all(a.state == "idle" for a in agents)

    try:
        wait_until("the twelve agents idle", all_idle, timeout=90, interval=0.3)
        yield url, home
    finally:
        run.send_signal(signal.SIGINT)
        try:
            run.wait(60)
        except subprocess.TimeoutExpired:
            run.kill()
            run.wait()
        out.close()


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
        page.goto(url + "/")
        expect(page).to_have_url(url + "/login")
        page.fill("input[name=token]", operator)
        page.click("form.login button")
        for name in (
            "jarvis",
            "donna",
            "elon",
            "gene",
            "forge",
            "atlas",
            "sentinel",
            "vault",
            "scout",
            "ledger",
            "claw",
            "pulse",
        ):
            expect(page.locator(f"a[href='/agents/{name}']")).to_be_visible()
        page.screenshot(path=str(shots / "fleet.png"), full_page=True)

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
        page.goto(url + "/agents/forge")
        expect(page.locator("h1")).to_contain_text("forge")
        page.screenshot(path=str(shots / "agent.png"), full_page=True)
        page.goto(url + "/audit-log?action=dashboard.login")
        page.screenshot(path=str(shots / "audit.png"), full_page=True)

        # A state-changing request without the CSRF token is refused.
        refused = page.request.post(url + f"/approvals/{req.id}/veto", form={"reason": "x"})
        assert refused.status == 403
        browser.close()
    if os.environ.get("MCOS_UPDATE_SCREENSHOTS"):
        DOCS.mkdir(parents=True, exist_ok=True)
        for shot in shots.iterdir():
            shutil.copy(shot, DOCS / shot.name)
