"""Local recovery of a locked-out fleet: `mcos token create --operator NAME --local` on the
server's machine writes a token straight into the store with the server's key — while the
server runs (SQLite) or with no server at all (PostgreSQL) — audited, printed once."""

from __future__ import annotations

import asyncio
import getpass
from pathlib import Path

import pytest

from mcos.client import Calls, Client
from mcos.config import load_fleet
from mcos.config.scaffold import init_fleet
from mcos.domain import tokens
from mcos.domain.audit import AuditRecord
from mcos.domain.tokens import PrincipalKind, TokenRecord
from mcos.server.factory import token_key
from mcos.store import AuditQuery, make_store
from tests.api.conftest import free_port
from tests.e2e.cli_helpers import mcos, start_server
from tests.store.conftest import create_pg_database, drop_pg_database


def test_recovery_while_the_server_runs_on_sqlite(tmp_path: Path) -> None:
    fleet = init_fleet(tmp_path / "fleet", template="small")
    port = free_port()
    fleet.write_text(fleet.read_text().replace("127.0.0.1:8700", f"127.0.0.1:{port}"))
    server = start_server(fleet, port, tmp_path / "server.log")
    try:
        # The operator token is gone (lost laptop, expired): the server still runs.
        (tmp_path / "fleet" / "state" / "operator.token").unlink()
        done = mcos("token", "create", "--operator", "founder", "--local", "-f", str(fleet))
        assert "token.recovered_locally" in done.stdout
        recovered = done.stdout.strip().splitlines()[-1]
        assert tokens.parse_prefix(recovered) is not None
        with Client(server.url, recovered) as op:
            mine = [t for t in op.do(Calls.tokens("founder")) if t.label == "recovered locally"]
            (event,) = op.do(Calls.audit(action="token.recovered_locally"))
        assert [t.kind for t in mine] == [PrincipalKind.OPERATOR]
        assert event.actor == f"local:{getpass.getuser()}"
        assert event.targets["principal"] == "operator:founder"
        refused = mcos(
            "token", "create", "--operator", "mallory", "--local", "-f", str(fleet), check=False
        )
        assert refused.returncode == 78
        assert "no human 'mallory' to recover (humans: founder)" in refused.stderr
    finally:
        server.stop()


@pytest.mark.postgres
def test_recovery_without_a_server_on_postgresql(tmp_path: Path) -> None:
    url = create_pg_database()
    try:
        fleet = init_fleet(tmp_path / "fleet", template="small")
        fleet.write_text(fleet.read_text().replace("sqlite:///state/mcos.db", url))
        no_key = mcos("token", "create", "--operator", "founder", "--local", "-f", str(fleet),
                      check=False)  # fmt: skip
        assert no_key.returncode == 78
        assert "no token key here: run this on Mission Control's machine" in no_key.stderr
        key = token_key(load_fleet(fleet).state_dir)  # as the server made it on first start
        asyncio.run(_migrate(url))
        done = mcos("token", "create", "--operator", "founder", "--local", "-f", str(fleet))
        recovered = done.stdout.strip().splitlines()[-1]
        record, audit = asyncio.run(_stored(url, recovered))
        assert record is not None
        assert tokens.matches(key, recovered, record.digest)
        assert (record.kind, record.name) == (PrincipalKind.OPERATOR, "founder")
        assert [a.action for a in audit] == ["token.recovered_locally"]
    finally:
        drop_pg_database(url)


async def _migrate(url: str) -> None:
    store = make_store(url)
    try:
        await store.upgrade()
    finally:
        await store.close()


async def _stored(url: str, token: str) -> tuple[TokenRecord | None, list[AuditRecord]]:
    store = make_store(url)
    await store.open()
    try:
        prefix = tokens.parse_prefix(token)
        assert prefix is not None
        found = await store.find_token(prefix)
        audit = await store.audit(AuditQuery(action="token.recovered_locally"))
        return found, audit
    finally:
        await store.close()
