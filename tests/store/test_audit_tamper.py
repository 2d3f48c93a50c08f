"""The audit log cannot be rewritten in place: each tampering with direct SQL is named.

Every test writes a few records through the store, checkpoints the head to a signed file (as
the server does), then tampers with the database the way an attacker with SQL access but
without the server's key file would, and asserts the finding verification names. On SQLite and
on PostgreSQL.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from mcos.domain.audit import (
    GENESIS,
    AuditEvent,
    Checkpoint,
    audit_key,
    checkpoint_key,
    record_hash,
)
from mcos.server.audit_checkpoint import AuditCheckpoints, read_file
from mcos.store import AuditVerification, Store, make_store
from mcos.store import rows as row_rules
from mcos.store.migrations import latest
from tests.store.conftest import AUDIT_KEY, DIRECTORY
from tests.store.raw import execute_raw

CP_KEY = checkpoint_key(b"t" * 32)
_SQLITE_TRIGGERS = (
    "CREATE TRIGGER IF NOT EXISTS audit_no_update BEFORE UPDATE ON audit "
    "BEGIN SELECT RAISE(ABORT, 'audit records are append-only'); END",
    "CREATE TRIGGER IF NOT EXISTS audit_no_delete BEFORE DELETE ON audit "
    "BEGIN SELECT RAISE(ABORT, 'audit records are append-only'); END",
)


async def behind_triggers(url: str, *statements: str) -> None:
    """Run ``statements`` with the append-only triggers out of the way, then put them back, so
    that only what the statements did is left to find."""
    if url.startswith("sqlite"):
        await execute_raw(url, "DROP TRIGGER audit_no_update")
        await execute_raw(url, "DROP TRIGGER audit_no_delete")
        for sql in statements:
            await execute_raw(url, sql)
        for sql in _SQLITE_TRIGGERS:
            await execute_raw(url, sql)
        return
    await execute_raw(url, "ALTER TABLE audit DISABLE TRIGGER USER")
    for sql in statements:
        await execute_raw(url, sql)
    await execute_raw(url, "ALTER TABLE audit ENABLE TRIGGER USER")


async def hashes(url: str) -> dict[int, str]:
    return dict(await execute_raw(url, "SELECT seq, hash FROM audit"))


async def write_and_checkpoint(store: Store, tmp_path: Path, n: int = 6) -> AuditCheckpoints:
    """``n`` records after a begun checkpoint file, and a checkpoint of the newest."""
    checkpoints = AuditCheckpoints(store, tmp_path / "audit.checkpoint", CP_KEY)
    await checkpoints.begin()
    for i in range(n):
        await store.record(AuditEvent("agent:gene", f"step.{i}", {"i": i}))
    assert (await checkpoints.checkpoint()) is not None
    return checkpoints


async def verify(store: Store, checkpoints: AuditCheckpoints) -> AuditVerification:
    file = await checkpoints.read()
    assert file.problems == []
    return await store.verify_audit(file.checkpoints)


def kinds(result: AuditVerification) -> set[str]:
    return {f.kind for f in result.findings}


class TestIntact:
    """An untouched log verifies against its checkpoints, on the derived key."""

    async def test_keyed_chain_and_checkpoints_verify(self, store: Store, tmp_path: Path) -> None:
        """Records are HMAC-keyed from seq 1; the checkpoint file has signed lines."""
        checkpoints = await write_and_checkpoint(store, tmp_path)
        result = await verify(store, checkpoints)
        assert result.intact, result.findings
        assert (result.records, result.head_seq, result.keyed_from) == (6, 6, 1)
        lines = (tmp_path / "audit.checkpoint").read_text().splitlines()
        assert [line.split(" ")[0] for line in lines] == ["0", "6"]
        assert (tmp_path / "audit.checkpoint").stat().st_mode & 0o777 == 0o600

    async def test_replicas_sharing_the_token_key_verify_each_others_rows(
        self, store: Store, store_url: str
    ) -> None:
        """A second store given the key derived from the same token key verifies the rows; one
        with another key finds every record rewritten."""
        await store.record(AuditEvent("agent:gene", "on.replica.one"))
        replica = make_store(store_url, audit_key=audit_key(b"t" * 32))
        stranger = make_store(store_url, audit_key=audit_key(b"u" * 32))
        try:
            await replica.open()
            await replica.record(AuditEvent("agent:jarvis", "on.replica.two"))
            assert (await store.verify_audit()).intact
            assert (await replica.verify_audit()).intact
            await stranger.open()
            assert kinds(await stranger.verify_audit()) == {"rewritten"}
        finally:
            await replica.close()
            await stranger.close()


class TestTampering:
    """Each tampering the issue lists, done with direct SQL, is found and named."""

    async def test_truncate_and_reset_head(
        self, store: Store, store_url: str, tmp_path: Path
    ) -> None:
        """Emptying the table and resetting the head is `truncated` and `head_moved_back`;
        without the checkpoint the store alone cannot tell (which is why it exists)."""
        checkpoints = await write_and_checkpoint(store, tmp_path)
        wipe = "DELETE FROM audit" if store_url.startswith("sqlite") else "TRUNCATE audit"
        if not store_url.startswith("sqlite"):
            with pytest.raises(Exception, match="append-only"):
                await execute_raw(store_url, "TRUNCATE audit")
        await behind_triggers(store_url, wipe, f"UPDATE audit_head SET seq = 0, hash = '{GENESIS}'")
        assert (await store.verify_audit()).intact  # the store alone is fooled
        result = await verify(store, checkpoints)
        assert kinds(result) == {"truncated", "head_moved_back"}
        [truncated] = [f for f in result.findings if f.kind == "truncated"]
        assert "the audit table is empty" in truncated.message
        assert truncated.seq == 6

    async def test_delete_newest_rows_and_move_head_back(
        self, store: Store, store_url: str, tmp_path: Path
    ) -> None:
        """Cutting off the newest records and moving the head back to the last one left."""
        checkpoints = await write_and_checkpoint(store, tmp_path)
        fourth = (await hashes(store_url))[4]
        await behind_triggers(
            store_url,
            "DELETE FROM audit WHERE seq > 4",
            f"UPDATE audit_head SET seq = 4, hash = '{fourth}'",
        )
        assert (await store.verify_audit()).intact
        result = await verify(store, checkpoints)
        assert kinds(result) == {"truncated", "head_moved_back"}
        [truncated] = [f for f in result.findings if f.kind == "truncated"]
        assert "records 5..6 were removed" in truncated.message

    async def test_head_moved_back_alone(
        self, store: Store, store_url: str, tmp_path: Path
    ) -> None:
        """A head moved back behind records that are still there."""
        checkpoints = await write_and_checkpoint(store, tmp_path)
        third = (await hashes(store_url))[3]
        await execute_raw(store_url, f"UPDATE audit_head SET seq = 3, hash = '{third}'")
        result = await verify(store, checkpoints)
        assert kinds(result) == {"head_moved_back"}
        assert {f.seq for f in result.findings} == {3}

    async def test_delete_a_range(self, store: Store, store_url: str, tmp_path: Path) -> None:
        """Deleting records 2..3 from the middle is a `gap` and a `broken_link` at 4."""
        checkpoints = await write_and_checkpoint(store, tmp_path)
        await behind_triggers(store_url, "DELETE FROM audit WHERE seq IN (2, 3)")
        result = await verify(store, checkpoints)
        assert kinds(result) == {"gap", "broken_link"}
        assert {(f.kind, f.seq) for f in result.findings} == {("gap", 4), ("broken_link", 4)}

    async def test_rewrite_with_recomputed_hashes(
        self, store: Store, store_url: str, tmp_path: Path
    ) -> None:
        """Editing record 3 and recomputing every hash after it (the only hash an attacker
        without the key can compute) is `rewritten` at 3..6, and at 6 against the checkpoint."""
        checkpoints = await write_and_checkpoint(store, tmp_path)
        records = await store.verify_audit()
        assert records.intact
        rows = await rows_of(store_url)
        prev = rows[2]["hash"]
        statements = []
        for seq in range(3, 7):
            r = rows[seq] | {"prev_hash": prev}
            if seq == 3:
                r["actor"] = "agent:evil"
            r["hash"] = unkeyed(r)
            prev = r["hash"]
            statements.append(
                f"UPDATE audit SET actor = '{r['actor']}', prev_hash = '{r['prev_hash']}', "
                f"hash = '{r['hash']}' WHERE seq = {seq}"
            )
        statements.append(f"UPDATE audit_head SET hash = '{prev}'")
        await behind_triggers(store_url, *statements)
        result = await verify(store, checkpoints)
        assert kinds(result) == {"rewritten"}
        assert sorted(f.seq for f in result.findings) == [3, 4, 5, 6, 6]
        assert any("checkpointed" in f.message for f in result.findings)

    async def test_downgrade_to_unkeyed_hashes(
        self, store: Store, store_url: str, tmp_path: Path
    ) -> None:
        """Moving `keyed_from` past the end and re-hashing every record with plain SHA-256 (as
        if all were written by an older mcos) is `rewritten`: the checkpoints repeat where keyed
        hashing began and the hash of the newest record."""
        checkpoints = await write_and_checkpoint(store, tmp_path)
        rows = await rows_of(store_url)
        prev = GENESIS
        statements = []
        for seq in sorted(rows):
            r = rows[seq] | {"prev_hash": prev}
            r["hash"] = unkeyed(r)
            prev = r["hash"]
            statements.append(
                f"UPDATE audit SET prev_hash = '{r['prev_hash']}', hash = '{r['hash']}' "
                f"WHERE seq = {seq}"
            )
        statements.append(f"UPDATE audit_head SET hash = '{prev}', keyed_from = 1000")
        await behind_triggers(store_url, *statements)
        assert (await store.verify_audit()).intact  # the store alone is fooled
        result = await verify(store, checkpoints)
        assert kinds(result) == {"rewritten"}
        assert any("keyed hashing began at seq 1000" in f.message for f in result.findings)

    async def test_dropped_triggers(self, store: Store, store_url: str, tmp_path: Path) -> None:
        """Dropping (or, on PostgreSQL, disabling) the append-only triggers is named."""
        checkpoints = await write_and_checkpoint(store, tmp_path)
        if store_url.startswith("sqlite"):
            await execute_raw(store_url, "DROP TRIGGER audit_no_delete")
            missing = {"audit_no_delete"}
        else:
            await execute_raw(store_url, "DROP TRIGGER audit_no_update ON audit")
            await execute_raw(store_url, "ALTER TABLE audit DISABLE TRIGGER audit_no_truncate")
            missing = {"audit_no_update", "audit_no_truncate"}
        result = await verify(store, checkpoints)
        assert kinds(result) == {"triggers_missing"}
        assert {name for f in result.findings for name in missing if name in f.message} == missing


class TestCheckpointFile:
    """An edited or deleted checkpoint file is reported, and never silently recreated."""

    async def test_edited_line_has_a_bad_signature(self, store: Store, tmp_path: Path) -> None:
        """A line whose seq was lowered, or one signed with another key, is named with its line
        number and is not used."""
        checkpoints = await write_and_checkpoint(store, tmp_path)
        path = tmp_path / "audit.checkpoint"
        first, second = path.read_text().splitlines()
        forged = Checkpoint(99, "f" * 64, datetime.now(UTC), 1)
        path.write_text(
            f"{first}\n{second.replace('6 ', '2 ', 1)}\n{forged.line(b'another key')}\n"
        )
        file = await checkpoints.read()
        assert [(f.kind, f.seq) for f in file.problems] == [
            ("checkpoint_bad_signature", 2),
            ("checkpoint_bad_signature", 99),
        ]
        assert "line 2 of" in file.problems[0].message
        assert [c.seq for c in file.checkpoints] == [0]

    async def test_deleted_file_is_missing_and_not_recreated(
        self, store: Store, tmp_path: Path
    ) -> None:
        """A deleted file is `checkpoint_missing`; the server does not quietly start a new one
        over it while running."""
        checkpoints = await write_and_checkpoint(store, tmp_path)
        path = tmp_path / "audit.checkpoint"
        path.unlink()
        await store.record(AuditEvent("agent:gene", "after.deletion"))
        assert await checkpoints.checkpoint() is None
        assert not path.exists()
        file = read_file(path, CP_KEY)
        assert [f.kind for f in file.problems] == ["checkpoint_missing"]
        assert str(path) in file.problems[0].message


class TestOlderInstalls:
    """Records written before keyed hashing began still verify, and say so."""

    async def test_legacy_rows_then_keyed_rows(self, store_url: str, tmp_path: Path) -> None:
        """Two unkeyed records written at schema 8 verify after the upgrade; new records are
        keyed from seq 3; editing a legacy record is still found."""
        store = make_store(store_url, audit_key=AUDIT_KEY)
        try:
            await store.upgrade(target=8)
            prev = GENESIS
            for seq in (1, 2):
                r = {
                    "seq": seq,
                    "at": 1_700_000_000_000_000 + seq,
                    "actor": "system",
                    "action": "legacy",
                    "targets": "{}",
                    "detail": "{}",
                    "outcome": "ok",
                    "prev_hash": prev,
                }
                r["hash"] = unkeyed(r)
                at = (
                    str(r["at"])
                    if store_url.startswith("sqlite")
                    else f"'{_at(r['at']).isoformat()}'::timestamptz"
                )
                await execute_raw(
                    store_url,
                    "INSERT INTO audit (seq, at, actor, action, targets, detail, outcome, "
                    f"prev_hash, hash) VALUES ({seq}, {at}, 'system', 'legacy', '{{}}', '{{}}', "
                    f"'ok', '{prev}', '{r['hash']}')",
                )
                prev = str(r["hash"])
            await execute_raw(store_url, f"UPDATE audit_head SET seq = 2, hash = '{prev}'")
            await store.upgrade()
            assert await store.schema_version() == latest(store.dialect)
            await store.open()
            await store.sync_directory(DIRECTORY)
            checkpoints = await write_and_checkpoint(store, tmp_path, n=2)
            result = await verify(store, checkpoints)
            assert result.intact, result.findings
            assert (result.records, result.keyed_from) == (4, 3)
            await behind_triggers(store_url, "UPDATE audit SET actor = 'evil' WHERE seq = 1")
            result = await verify(store, checkpoints)
            assert [(f.kind, f.seq) for f in result.findings] == [("rewritten", 1)]
            assert "its hash does not match" in result.findings[0].message
        finally:
            await store.close()


# --- helpers -------------------------------------------------------------------------------------
async def rows_of(url: str) -> dict[int, dict[str, object]]:
    names = ["seq", "at", "actor", "action", "targets", "detail", "outcome", "prev_hash", "hash"]
    got = await execute_raw(url, f"SELECT {', '.join(names)} FROM audit ORDER BY seq")
    return {row[0]: dict(zip(names, row, strict=True)) for row in got}


def unkeyed(row: dict[str, object]) -> str:
    """What an attacker without the key computes: the plain SHA-256 of the record (the rule of
    records written before keyed hashing began)."""
    record = row_rules.audit({"hash": "", **row}, _at(row["at"]))
    return record_hash(
        seq=record.seq,
        at=record.at,
        actor=record.actor,
        action=record.action,
        targets=record.targets,
        detail=record.detail,
        outcome=record.outcome,
        prev_hash=str(row["prev_hash"]),
    )


def _at(value: object) -> datetime:
    """A stored ``at`` as the store reads it (SQLite: integer microseconds)."""
    if isinstance(value, int):
        return datetime.fromtimestamp(value // 1_000_000, UTC) + timedelta(
            microseconds=value % 1_000_000
        )
    assert isinstance(value, datetime)
    return value.astimezone(UTC)
