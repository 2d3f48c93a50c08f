"""Two hosts' copies of one agent's workspace kept in step through a real Mission Control:
what is pushed (and what never is), what a pull writes, keeps aside and deletes."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any, TypeVar, cast

import pytest

from mcos.api_workspace import FetchOut
from mcos.client import AsyncClient, Call
from mcos.config.models import WorkspaceSyncConfig
from mcos.domain.workspace_sync import Action, SyncLimits
from mcos.exceptions import InvalidRequest
from mcos.runtime.sync import KEPT, STATE, WorkspaceSync
from tests.api.conftest import serve_on

LOG = "memory/2026-12-03.md"
T = TypeVar("T")


def workspace(root: Path, files: dict[str, bytes]) -> Path:
    for path, content in files.items():
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_bytes(content)
    return root


def test_push_on_one_host_pull_on_another(tmp_path: Path) -> None:
    config = WorkspaceSyncConfig(max_file_bytes=100, max_total_bytes=10_000)
    mini = workspace(
        tmp_path / "mini",
        {
            "MEMORY.md": b"door code 4711\n",
            LOG: b"- 09:00:00 started\n",
            "WORKSTATE.md": b"halfway\n",
            "big.md": b"x" * 101,  # over max_file_bytes: skipped, not an error
            "knowledge/contract.md": b"excluded folder",
            "scan.pdf": b"%PDF excluded",
            ".mcos/memory.db": b"never synced",
        },
    )
    os.symlink("/etc/hostname", mini / "link.md")  # not followed
    vps = workspace(tmp_path / "vps", {"MEMORY.md": b"stale copy\n", "own.md": b"vps only\n"})

    with serve_on("sqlite", tmp_path / "mc") as (server, _):

        async def run() -> None:
            token = server.tokens["gene"]
            async with AsyncClient(server.url, token) as a, AsyncClient(server.url, token) as b:
                on_mini = WorkspaceSync("gene", mini, config, a)
                on_vps = WorkspaceSync("gene", vps, config, b)
                assert await on_mini.pull() == {}  # nothing pushed yet
                pushed = await on_mini.push()
                assert pushed is not None
                assert {f.path for f in pushed.files} == {LOG, "MEMORY.md", "WORKSTATE.md"}
                assert "big.md" in on_mini.scan().skipped
                assert await on_mini.push() is None  # nothing changed: nothing sent

                plan = await on_vps.pull()
                assert plan == {
                    "MEMORY.md": Action.WRITE_KEEP_LOCAL,
                    LOG: Action.WRITE,
                    "WORKSTATE.md": Action.WRITE,
                }
                assert (vps / "MEMORY.md").read_bytes() == b"door code 4711\n"
                assert (vps / LOG).read_bytes() == b"- 09:00:00 started\n"
                assert (vps / "own.md").exists()  # never synced anywhere: left alone
                kept = list((vps / KEPT).rglob("MEMORY.md"))
                assert [k.read_bytes() for k in kept] == [b"stale copy\n"]
                assert (vps / STATE).exists()

                # vps runs the agent now: it appends to the log and deletes WORKSTATE.md.
                with (vps / LOG).open("ab") as f:
                    f.write(b"- 10:00:00 on vps\n")
                (vps / "WORKSTATE.md").unlink()
                second = await on_vps.push()
                assert second is not None
                assert second.version == 2
                assert {f.path for f in second.files} == {LOG, "MEMORY.md", "own.md"}
                # mini (its files unchanged since its push) follows: written and deleted.
                plan = await on_mini.pull()
                assert plan == {
                    LOG: Action.WRITE,
                    "WORKSTATE.md": Action.DELETE,
                    "own.md": Action.WRITE,
                }
                assert (mini / LOG).read_bytes().endswith(b"on vps\n")
                assert not (mini / "WORKSTATE.md").exists()
                assert list((mini / KEPT).rglob("WORKSTATE.md"))  # deleted, but kept aside

        asyncio.run(run())


def test_a_pull_never_writes_through_a_symlink(tmp_path: Path) -> None:
    """A folder of the workspace that is a symlink out of it is not written through."""
    config = WorkspaceSyncConfig()
    mini = workspace(tmp_path / "mini", {LOG: b"- 09:00:00 started\n", "MEMORY.md": b"m\n"})
    outside = tmp_path / "outside"
    outside.mkdir()
    vps = tmp_path / "vps"
    vps.mkdir()
    os.symlink(outside, vps / "memory")
    with serve_on("sqlite", tmp_path / "mc") as (server, _):

        async def run() -> None:
            token = server.tokens["gene"]
            async with AsyncClient(server.url, token) as a, AsyncClient(server.url, token) as b:
                await WorkspaceSync("gene", mini, config, a).push()
                await WorkspaceSync("gene", vps, config, b).pull()

        asyncio.run(run())
    assert (vps / "MEMORY.md").read_bytes() == b"m\n"
    assert list(outside.iterdir()) == []


class Counting(AsyncClient):
    """A client that records each request it makes: (method, path, blobs named)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.sent: list[tuple[str, str, int]] = []

    async def do(self, call: Call[T]) -> T:
        body = call.json if isinstance(call.json, dict) else {}
        named = len(body.get("blobs", body.get("sha256", [])))
        self.sent.append((call.method, call.path, named))
        return await super().do(call)


def test_blobs_travel_in_batches_both_ways(tmp_path: Path) -> None:
    """A first push sends its blobs in as few requests as fit 4 MiB of files each (a file
    larger than that alone), then commits; a host with nothing pulls them in as few."""
    kib = 1024
    files = {f"memory/2026-01-{d:02d}.md": bytes([d]) * 200 * kib for d in range(1, 31)}
    files["a-scan.bin"] = b"s" * 5 * kib * kib  # over a batch, under max_file_bytes
    config = WorkspaceSyncConfig(max_file_bytes=6 * kib * kib, exclude=[])
    limits = {"gene": SyncLimits(max_file_bytes=6 * kib * kib)}
    mini = workspace(tmp_path / "mini", files)
    vps = tmp_path / "vps"
    vps.mkdir()
    with serve_on("sqlite", tmp_path / "mc", workspace_sync=limits) as (server, _):

        async def run() -> tuple[list[tuple[str, str, int]], list[tuple[str, str, int]]]:
            token = server.tokens["gene"]
            async with Counting(server.url, token) as a, Counting(server.url, token) as b:
                assert await WorkspaceSync("gene", mini, config, a).push() is not None
                plan = await WorkspaceSync("gene", vps, config, b).pull()
                assert set(plan) == set(files)
                return a.sent, b.sent

        pushed, pulled = asyncio.run(run())
    upload = "/v1/workspace/blobs"
    assert pushed == [
        ("GET", "/v1/workspace", 0),  # a push first pulls what it has not seen
        ("POST", upload, 1),  # the 5 MiB scan alone
        ("POST", upload, 20),  # 20 logs of 200 KiB: a 21st would pass 4 MiB
        ("POST", upload, 10),
        ("PUT", "/v1/workspace", 0),
    ]
    fetch = "/v1/workspace/blobs/fetch"
    assert pulled == [
        ("GET", "/v1/workspace", 0),
        ("POST", fetch, 1),
        ("POST", fetch, 20),
        ("POST", fetch, 10),
    ]
    for path, content in files.items():
        assert (vps / path).read_bytes() == content


class Tampering(AsyncClient):
    """A client whose batched fetches come back with the first blob's bytes altered (a
    corrupting proxy, a damaged store)."""

    async def do(self, call: Call[T]) -> T:
        answer = await super().do(call)
        if not isinstance(answer, FetchOut):
            return answer
        first = answer.blobs[0].model_copy(update={"content": "dGFtcGVyZWQ="})  # "tampered"
        return cast(T, answer.model_copy(update={"blobs": [first, *answer.blobs[1:]]}))


def test_a_pull_never_writes_a_blob_that_does_not_match_its_hash(tmp_path: Path) -> None:
    """Bytes that do not hash to what the manifest names are refused, naming the file, and
    not written; the host keeps its base, so the next pull tries again."""
    config = WorkspaceSyncConfig()
    mini = workspace(tmp_path / "mini", {"MEMORY.md": b"door code 4711\n", LOG: b"- a\n"})
    vps = workspace(tmp_path / "vps", {})
    with serve_on("sqlite", tmp_path / "mc") as (server, _):

        async def run() -> None:
            token = server.tokens["gene"]
            async with AsyncClient(server.url, token) as a, Tampering(server.url, token) as b:
                await WorkspaceSync("gene", mini, config, a).push()
                with pytest.raises(InvalidRequest, match=r"MEMORY\.md does not match its hash"):
                    await WorkspaceSync("gene", vps, config, b).pull()

        asyncio.run(run())
    assert not (vps / "MEMORY.md").exists()
    assert not (vps / LOG).exists()  # a batch is checked whole before anything is written
    assert not (vps / STATE).exists()
