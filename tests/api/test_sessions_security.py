"""Dashboard sessions bound to their token, login throttling, security headers, the /metrics
token, and the modes of Mission Control's private files (issue 15, items 4 and 9)."""

from __future__ import annotations

import asyncio
import logging
import re
import secrets
import stat
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import httpx
import pytest

from mcos.client import Calls
from mcos.config import load_fleet
from mcos.domain import tokens
from mcos.domain.tokens import PrincipalKind
from mcos.ops.doctor import _metrics_exposure
from mcos.server import ServerSettings, create_app
from mcos.server.factory import proxy_options, settings_for
from mcos.server.security_headers import POLICY
from mcos.store import make_store
from mcos.store.sqlite import SqliteStore
from tests.api.conftest import LiveServer, migrate, serve
from tests.store.conftest import drop_pg_database, migrated_database
from tests.waiting import past

KEY = secrets.token_bytes(32)
METRICS_TOKEN = "metrics-" + secrets.token_urlsafe(16)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A migrated store of each kind."""
    url = migrated_database(request.param, tmp_path)
    try:
        yield url
    finally:
        if request.param == "postgres":
            drop_pg_database(url)


def _serve(url: str, tmp_path: Path) -> Iterator[LiveServer]:
    with serve(
        url,
        tmp_path,
        token_key=KEY,
        metrics_token=METRICS_TOKEN,
        login_failures_per_client="4/minute",
        login_failures_per_prefix="2/minute",
    ) as live:
        yield live


@pytest.fixture
def server(store_url: str, tmp_path: Path) -> Iterator[LiveServer]:
    """Mission Control on each store, with a known token key, a metrics token and tight login
    limits (for what the store keeps: sessions)."""
    yield from _serve(store_url, tmp_path)


@pytest.fixture
def one_server(tmp_path: Path) -> Iterator[LiveServer]:
    """The same on SQLite only, for what lives in the server process (limits, headers)."""
    url = f"sqlite:///{tmp_path}/mcos.db"
    asyncio.run(migrate(url))
    yield from _serve(url, tmp_path)


def _sign_in(server: LiveServer, web: httpx.Client, token: str | None = None) -> str:
    """Sign in; the page's CSRF token."""
    r = web.post("/login", data={"token": token or server.operator_token})
    assert r.status_code == 303, r.text
    assert r.headers["location"] == "/"
    csrf = re.search(r'name="csrf" value="([0-9a-f]+)"', web.get("/").text)
    assert csrf is not None
    return csrf[1]


def _web(server: LiveServer, **kw: object) -> httpx.Client:
    return httpx.Client(base_url=server.url, follow_redirects=False, timeout=10, **kw)  # type: ignore[arg-type]


def _incident(server: LiveServer) -> int:
    with server.client("sentinel") as sentinel:
        return sentinel.do(Calls.report_incident("P3", "disk 81% full", "df -h")).id


def _state(server: LiveServer, incident: int) -> str:
    with server.client() as op:
        return op.do(Calls.incident(incident)).state


def _refused(response: httpx.Response) -> bool:
    """Sent back to sign in (a page or a form post) or 401 (the event stream)."""
    return response.status_code == 401 or (
        response.status_code == 303 and response.headers["location"] == "/login"
    )


# --- sessions ------------------------------------------------------------------------------------
def test_an_old_cookie_is_dead_after_logout(server: LiveServer) -> None:
    incident = _incident(server)
    before = _state(server, incident)
    with _web(server) as web:
        csrf = _sign_in(server, web)
        stolen = web.cookies["mcos_session"]
        assert web.post("/logout", data={"csrf": csrf}).status_code == 303
    with _web(server, cookies={"mcos_session": stolen}) as thief:
        assert _refused(thief.get("/"))
        assert _refused(thief.get("/audit-log"))
        assert _refused(thief.get("/events"))
        dismiss = thief.post(
            f"/incidents/{incident}/dismiss", data={"reason": "replayed", "csrf": csrf}
        )
        assert _refused(dismiss)
    assert _state(server, incident) == before != "dismissed"
    with server.client() as op:
        assert [r.action for r in op.do(Calls.audit(action="dashboard.logout"))] == [
            "dashboard.logout"
        ]


def test_a_session_ends_the_moment_its_token_expires(server: LiveServer, store_url: str) -> None:
    incident = _incident(server)
    before = _state(server, incident)

    async def short_lived(clear: str, prefix: str, seconds: float) -> datetime:
        """An operator token that expires in ``seconds``, stored under the server's key."""
        store = make_store(store_url)
        try:
            expires = await store.now() + timedelta(seconds=seconds)
            await store.create_token(
                prefix=prefix,
                digest=tokens.digest(KEY, clear),
                kind=PrincipalKind.OPERATOR,
                name="founder",
                label="short",
                expires_at=expires,
            )
            return expires
        finally:
            await store.close()

    async def wait_out(expires: datetime) -> None:
        store = make_store(store_url)
        try:
            await past(store.now, expires + timedelta(milliseconds=100))
        finally:
            await store.close()

    # 2 s, and longer only if Mission Control's clock passed the expiry before the sign-in and
    # the first page were done (a loaded machine): the session must work while the token does.
    for seconds in (2, 10, 40):
        clear, prefix = tokens.new_token()
        expires = asyncio.run(short_lived(clear, prefix, seconds))
        with _web(server) as web:
            signed_in = web.post("/login", data={"token": clear})
            csrf = re.search(r'name="csrf" value="([0-9a-f]+)"', web.get("/").text)
            page = web.get("/incidents")  # the session works while the token does
            if signed_in.headers.get("location") != "/" or csrf is None or page.status_code != 200:
                with server.client() as op:
                    assert op.do(Calls.time()).now > expires, (signed_in.text, page.status_code)
                continue  # refused only because the token had expired by then: a longer one
            asyncio.run(wait_out(expires))
            dismiss = web.post(
                f"/incidents/{incident}/dismiss", data={"reason": "after expiry", "csrf": csrf[1]}
            )
            assert _refused(dismiss)
            assert _refused(web.get("/incidents"))
            break
    else:
        pytest.fail("no sign-in within 40 s of a token's creation")
    assert _state(server, incident) == before != "dismissed"


def test_a_session_ends_when_its_token_is_revoked(server: LiveServer) -> None:
    with server.client() as op:
        second = op.do(Calls.create_token(PrincipalKind.OPERATOR, "founder", label="laptop"))
    with _web(server) as web:
        _sign_in(server, web, second.token)
        assert web.get("/").status_code == 200
        with server.client() as op:
            op.do(Calls.revoke_token(second.record.id))
        assert _refused(web.get("/"))


# --- login throttling ----------------------------------------------------------------------------
def _metric(server: LiveServer, name: str, labels: str = "") -> float:
    text = httpx.get(
        server.url + "/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"}
    ).text
    found = re.search(rf"^{re.escape(name + labels)} (\S+)$", text, re.MULTILINE)
    return float(found[1]) if found else 0.0


def test_failed_sign_ins_are_throttled_per_prefix_and_per_client_audited_and_counted(
    one_server: LiveServer,
) -> None:
    op_prefix = tokens.parse_prefix(one_server.operator_token)
    assert op_prefix is not None
    guesses = [f"mcos_{op_prefix}_{secrets.token_urlsafe(32)}" for _ in range(3)]
    with _web(one_server) as web:
        for guess in guesses[:2]:  # two wrong secrets for the operator's own prefix
            assert "not+valid" in web.post("/login", data={"token": guess}).headers["location"]
        third = web.post("/login", data={"token": guesses[2]})
        assert third.status_code == 429
        assert 1 <= int(third.headers["retry-after"]) <= 60
        # that prefix is locked, whoever presents it — even with the right secret
        assert web.post("/login", data={"token": one_server.operator_token}).status_code == 429
        # another operator token still signs in from this client (2 failures of 4)
        with one_server.client() as op:
            other = op.do(Calls.create_token(PrincipalKind.OPERATOR, "founder")).token
        assert web.post("/login", data={"token": other}).status_code == 303
        for _ in range(2):  # two more failures: the client reaches its limit
            assert web.post("/login", data={"token": "nope"}).status_code == 303
        assert web.post("/login", data={"token": other}).status_code == 429
    with one_server.client() as op:
        failed = op.do(Calls.audit(action="dashboard.login_failed"))
    assert [r.outcome for r in failed] == ["refused"] * 4
    assert [r.targets["prefix"] for r in failed] == [op_prefix, op_prefix] + ["(malformed)"] * 2
    assert failed[0].actor == "client:127.0.0.1"
    dumped = repr([(r.targets, r.detail) for r in failed])
    assert not any(g.split("_", 2)[2] in dumped for g in guesses)  # never the secret
    assert _metric(one_server, "mcos_login_failures_total", '{reason="bad_token"}') == 4
    assert _metric(one_server, "mcos_login_failures_total", '{reason="throttled"}') == 3


def test_bad_bearer_tokens_on_the_api_are_counted(one_server: LiveServer) -> None:
    before = _metric(one_server, "mcos_auth_failures_total")
    for token in ("nope", "mcos_aaaaaaaaaaaa_" + "x" * 43):
        r = httpx.get(one_server.url + "/v1/agents", headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 401
    assert _metric(one_server, "mcos_auth_failures_total") == before + 2


# --- headers -------------------------------------------------------------------------------------
def test_every_response_carries_the_security_headers(one_server: LiveServer) -> None:
    with _web(one_server) as web:
        csrf = _sign_in(one_server, web)
        responses = {
            "dashboard page": web.get("/"),
            "login page": web.get("/login"),
            "static script": web.get("/static/live.js"),
            "refused form": web.post("/logout", data={"csrf": "00"}),
            "API": web.get("/v1/time"),
            "API 401": web.get("/v1/agents"),
            "API 404": web.get("/v1/nowhere"),
            "oversized body": web.post("/v1/messages", content=b"x" * (65 * 1024)),
            "health": web.get("/healthz"),
        }
        page = web.get("/approvals").text
    for what, r in responses.items():
        assert r.headers.get("content-security-policy") == POLICY, what
        assert r.headers.get("x-frame-options") == "DENY", what
        assert r.headers.get("x-content-type-options") == "nosniff", what
        assert r.headers.get("referrer-policy") == "same-origin", what
    assert responses["oversized body"].status_code == 413
    assert "'unsafe-inline'" not in POLICY
    assert "frame-ancestors 'none'" in POLICY
    # the dashboard needs nothing the policy forbids: no inline script, style or handler
    assert not re.search(r"<script(?![^>]*\bsrc=)|<style|\sstyle=|\son[a-z]+=", page)
    assert csrf


def test_the_cookie_is_secure_over_https_from_a_trusted_proxy(
    one_server: LiveServer, tmp_path: Path
) -> None:
    # the test one_server runs uvicorn's defaults: X-Forwarded-Proto believed from 127.0.0.1
    with _web(one_server) as web:
        plain = web.post("/login", data={"token": one_server.operator_token})
        proxied = web.post(
            "/login",
            data={"token": one_server.operator_token},
            headers={"X-Forwarded-Proto": "https"},
        )
    assert "secure" not in plain.headers["set-cookie"].lower()
    assert "; secure" in proxied.headers["set-cookie"].lower()
    # `mcos server` believes those headers only from [server] trusted_proxies
    fleet = tmp_path / "fleet.toml"
    fleet.write_text(FLEET)
    assert proxy_options(load_fleet(fleet)) == {"proxy_headers": False, "forwarded_allow_ips": None}
    fleet.write_text(FLEET.replace("[server]", '[server]\ntrusted_proxies = ["10.0.0.5"]'))
    assert proxy_options(load_fleet(fleet)) == {
        "proxy_headers": True,
        "forwarded_allow_ips": "10.0.0.5",
    }


# --- /metrics ------------------------------------------------------------------------------------
def test_metrics_need_the_metrics_token_when_one_is_set(one_server: LiveServer) -> None:
    url = one_server.url + "/metrics"
    assert httpx.get(url).status_code == 401
    assert httpx.get(url, headers={"Authorization": "Bearer wrong"}).status_code == 401
    agent = httpx.get(url, headers={"Authorization": f"Bearer {one_server.tokens['gene']}"})
    assert agent.status_code == 401
    assert "mcos_model_cost_usd_today" not in agent.text
    ok = httpx.get(url, headers={"Authorization": f"Bearer {METRICS_TOKEN}"})
    assert ok.status_code == 200
    assert "mcos_login_failures_total" in ok.text or "mcos_queue_depth" in ok.text


FLEET = """
[server]
url = "http://0.0.0.0:8700"
[humans.founder]
role = "founder"
[hosts.mini]
[agents.jarvis]
role = "orchestrator"
host = "mini"
reports_to = "founder"
"""


def test_doctor_warns_of_open_metrics_beyond_loopback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "fleet.toml"
    path.write_text(FLEET)
    [warning] = _metrics_exposure(load_fleet(path))
    assert warning.status == "warn"
    assert "metrics_token" in warning.fix
    path.write_text(FLEET.replace("0.0.0.0", "127.0.0.1"))
    assert _metrics_exposure(load_fleet(path)) == []
    path.write_text(FLEET.replace("[server]", '[server]\nmetrics_token = "env:MCOS_METRICS"'))
    assert _metrics_exposure(load_fleet(path)) == []
    monkeypatch.setenv("MCOS_METRICS", "from-the-environment")
    assert settings_for(load_fleet(path)).metrics_token == "from-the-environment"


# --- file modes ----------------------------------------------------------------------------------
def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_state_files_are_private_at_creation(tmp_path: Path) -> None:
    (tmp_path / "fleet.toml").write_text(FLEET)
    fleet = load_fleet(tmp_path / "fleet.toml")
    settings_for(fleet)
    state = fleet.state_dir

    async def open_store() -> list[int]:
        store = SqliteStore(state / "mcos.db")
        try:
            await store.upgrade()
            return [_mode(state / f"mcos.db{s}") for s in ("", "-wal", "-shm")]
        finally:
            await store.close()

    assert _mode(state) == 0o700
    assert _mode(state / "server.key") == 0o600
    assert asyncio.run(open_store()) == [0o600, 0o600, 0o600]
    # a server built from settings alone (no fleet file) makes its state directory private too
    create_app(
        make_store(f"sqlite:///{tmp_path}/other.db"),
        ServerSettings(KEY, state_dir=str(tmp_path / "s2")),
    )
    assert _mode(tmp_path / "s2") == 0o700


def test_loose_state_files_are_tightened_at_start_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "fleet.toml").write_text(FLEET)
    fleet = load_fleet(tmp_path / "fleet.toml")
    state = fleet.state_dir
    settings_for(fleet)
    asyncio.run(migrate(f"sqlite:///{state}/mcos.db"))
    (state / "operator.token").write_text("mcos_x_y\n")
    loose = [state / "mcos.db", state / "server.key", state / "operator.token"]
    for path in loose:
        path.chmod(0o644)
    state.chmod(0o755)
    caplog.set_level(logging.WARNING, logger="mcos.files")
    settings_for(fleet)
    asyncio.run(migrate(f"sqlite:///{state}/mcos.db"))
    assert _mode(state) == 0o700
    assert [_mode(p) for p in loose] == [0o600, 0o600, 0o600]
    assert f"{state} was mode 0o755" in caplog.text
    for path in loose:
        assert f"{path} was mode 0o644" in caplog.text
