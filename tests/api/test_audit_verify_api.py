"""`GET /v1/audit/verify` and `mcos audit verify` against a live server, on both stores: the
signed checkpoint file is shown, and a tail cut off with direct SQL is named."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from mcos.cli import app
from mcos.client import Calls
from mcos.domain.audit import AuditEvent, audit_key, checkpoint_key
from mcos.server import ServerSettings, create_app
from mcos.server.audit_checkpoint import read_file
from mcos.store import make_store
from tests.api.conftest import LiveServer, migrate, serve
from tests.store.conftest import drop_pg_database, migrated_database
from tests.store.raw import execute_raw
from tests.store.test_audit_tamper import behind_triggers
from tests.waiting import wait_until


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def audited(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[LiveServer, str]]:
    """A live server checkpointing every 0.1 s, and its store's URL (for tampering)."""
    url = migrated_database(request.param, tmp_path)
    try:
        with serve(url, tmp_path, audit_checkpoint_seconds=0.1) as server:
            yield server, url
    finally:
        if request.param == "postgres":
            drop_pg_database(url)


def test_verify_shows_the_checkpoint_and_names_a_cut_tail(
    audited: tuple[LiveServer, str],
) -> None:
    """Intact with the checkpoint file shown (API and CLI); after the newest records are deleted
    and the head moved back, both name `truncated` and `head_moved_back` and the CLI exits 1."""
    server, url = audited
    cli = ["audit", "verify", "--url", server.url, "--token", server.operator_token]
    with server.client() as op:
        first = op.do(Calls.audit_verify())
        assert first.intact, first.findings
        assert first.checkpoint.path == str(server.state_dir / "audit.checkpoint")
        assert (first.keyed_from, first.legacy_records) == (1, 0)

        def caught_up() -> bool:
            result = op.do(Calls.audit_verify())
            return result.checkpoint.latest_seq == result.head_seq

        wait_until("the head to be checkpointed", caught_up, timeout=10, interval=0.05)
        ok = CliRunner().invoke(app, cli)
        assert ok.exit_code == 0, ok.output
        assert "audit log intact" in ok.output
        assert "HMAC-SHA256 from seq 1" in ok.output
        assert "audit.checkpoint" in ok.output

        head = op.do(Calls.audit_verify()).head_seq
        [(kept,)] = asyncio.run(execute_raw(url, f"SELECT hash FROM audit WHERE seq = {head - 2}"))
        asyncio.run(
            behind_triggers(
                url,
                f"DELETE FROM audit WHERE seq > {head - 2}",
                f"UPDATE audit_head SET seq = {head - 2}, hash = '{kept}'",
            )
        )
        tampered = op.do(Calls.audit_verify())
        assert not tampered.intact
        assert {"truncated", "head_moved_back"} <= {f.kind for f in tampered.findings}
        bad = CliRunner().invoke(app, cli)
        assert bad.exit_code == 1
        assert "truncated" in bad.output
        assert "head_moved_back" in bad.output
        assert f"records {head - 1}..{head} were removed" in bad.output


@pytest.mark.parametrize("audited", ["sqlite"], indirect=True)
def test_verify_is_a_valid_openapi_object(audited: tuple[LiveServer, str]) -> None:
    """The response is a named model with findings (no tuple the OpenAPI document mangles)."""
    server, _ = audited
    schema = httpx.get(server.url + "/openapi.json").json()
    verify = schema["paths"]["/v1/audit/verify"]["get"]["responses"]["200"]
    ref = verify["content"]["application/json"]["schema"]["$ref"]
    assert ref.endswith("/AuditVerifyResult")
    result = schema["components"]["schemas"]["AuditVerifyResult"]["properties"]
    assert result["findings"]["items"]["$ref"].endswith("/AuditFinding")
    assert "prefixItems" not in str(result)


async def test_checkpoint_at_start_and_shutdown(tmp_path: Path) -> None:
    """The server begins the file at start and checkpoints the newest record at shutdown, even
    when the periodic checkpoint has not come round (an hour here)."""
    url = f"sqlite:///{tmp_path}/mcos.db"
    await migrate(url)
    settings = ServerSettings(
        token_key=b"k" * 32, state_dir=str(tmp_path / "state"), audit_checkpoint_seconds=3600
    )
    app = create_app(make_store(url), settings)
    path = tmp_path / "state" / "audit.checkpoint"
    async with app.router.lifespan_context(app):
        assert path.stat().st_mode & 0o777 == 0o600
        for i in range(3):
            await app.state.mc.store.record(AuditEvent("agent:gene", f"step.{i}"))
    file = read_file(path, checkpoint_key(b"k" * 32))
    assert file.problems == []
    assert file.latest is not None
    assert [c.seq for c in file.checkpoints][-1] == file.latest.seq >= 3
    store = make_store(url, audit_key=audit_key(b"k" * 32))
    try:
        await store.open()
        assert (await store.verify_audit(file.checkpoints)).intact
        assert file.latest.seq == (await store.audit_tip()).seq
    finally:
        await store.close()


@pytest.mark.parametrize("audited", ["sqlite"], indirect=True)
def test_agents_neither_read_nor_forge_the_log(audited: tuple[LiveServer, str]) -> None:
    """An agent cannot read or verify the log (403), cannot write a record that looks like
    Mission Control's own or claim another actor (422), and what it may write (`runtime.*`,
    stamped with its own name) is chained like every other record."""
    server, _ = audited
    gene = {"Authorization": f"Bearer {server.tokens['gene']}"}
    with httpx.Client(base_url=server.url, headers=gene) as c:
        assert c.get("/v1/audit").status_code == 403
        assert c.get("/v1/audit/verify").status_code == 403
        forged = {"action": "token.revoke", "targets": {"token": "1"}}
        assert c.post("/v1/audit/events", json=forged).status_code == 422
        as_jarvis = {"action": "runtime.tool.refused", "actor": "agent:jarvis"}
        assert c.post("/v1/audit/events", json=as_jarvis).status_code == 422
        ok = c.post("/v1/audit/events", json={"action": "runtime.tool.refused"})
        assert ok.status_code == 201
        assert ok.json()["actor"] == "agent:gene"
    with server.client() as op:
        assert op.do(Calls.audit_verify()).intact
