"""``/v1/workspace``: an agent's files, content-addressed and versioned in Mission Control;
a push of a fenced-out instance is refused and overwrites nothing; bad paths, hashes and sizes
are refused naming what is wrong."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from mcos.api_workspace import FileIn
from mcos.client import Calls, Client
from mcos.domain.workspace_sync import SyncLimits
from mcos.exceptions import Fenced, InvalidRequest, McosError
from tests.api.conftest import LiveServer, raw, serve_on


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def push(client: Client, files: dict[str, bytes]) -> int:
    """Upload every blob and commit the manifest; the new version."""
    for content in files.values():
        client.do(Calls.put_workspace_blob(sha(content), content))
    entries = [FileIn(path=p, sha256=sha(c), size=len(c)) for p, c in files.items()]
    return client.do(Calls.commit_workspace(entries)).version


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def small(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[LiveServer]:
    """A server whose limits for gene are tiny: 10 bytes a file, 15 in all; sentinel's sync off."""
    limits = {
        "gene": SyncLimits(max_file_bytes=10, max_total_bytes=15),
        "sentinel": SyncLimits(enabled=False),
    }
    with serve_on(request.param, tmp_path, workspace_sync=limits) as (server, _):
        yield server


def test_push_then_read_back_versions_and_blobs(live_server: LiveServer) -> None:
    """Each changed manifest is a new version; a repeated one is not; blobs come back intact;
    a blob no manifest names any more is swept."""
    with live_server.client("gene") as gene, live_server.client() as op:
        assert gene.do(Calls.workspace()).version == 0
        files = {"MEMORY.md": b"# Memory\nthe door code is 4711\n", "memory/2026-12-03.md": b"- a"}
        assert push(gene, files) == 1
        assert push(gene, files) == 1  # a retried push changes nothing
        latest = gene.do(Calls.workspace())
        assert {f.path: f.sha256 for f in latest.files} == {p: sha(c) for p, c in files.items()}
        assert latest.bytes == sum(len(c) for c in files.values())
        blob = gene.do(Calls.workspace_blob(sha(files["MEMORY.md"])))
        assert blob.data() == files["MEMORY.md"]
        # The operator reads it too (naming the agent); another agent may not.
        assert op.do(Calls.workspace("gene")).version == 1
        with live_server.client("jarvis") as jarvis, pytest.raises(McosError, match="own"):
            jarvis.do(Calls.workspace("gene"))
        # MEMORY.md changes, the log goes: version 2, and the old MEMORY.md blob is swept.
        assert push(gene, {"MEMORY.md": b"# Memory\nnew\n"}) == 2
        assert [f.path for f in gene.do(Calls.workspace()).files] == ["MEMORY.md"]
        with pytest.raises(McosError, match="no workspace blob"):
            gene.do(Calls.workspace_blob(sha(files["MEMORY.md"])))
        # Agents' blobs are their own.
        with live_server.client("jarvis") as jarvis, pytest.raises(McosError, match="404"):
            jarvis.do(Calls.workspace_blob(sha(b"# Memory\nnew\n")))


def test_a_fenced_out_instance_cannot_overwrite(live_server: LiveServer) -> None:
    """Once another supervisor took the agent (a newer fence), the old instance's upload and
    commit are refused (409 fenced); the version stays the new instance's."""
    with live_server.client() as op:
        old = op.do(Calls.acquire_lease("gene", "sup-a", "mini", 15))
        with Client(live_server.url, live_server.tokens["gene"], fence=old.fence) as before:
            assert push(before, {"MEMORY.md": b"mini"}) == 1
        op.do(Calls.release_lease("gene", "sup-a", old.fence))
        new = op.do(Calls.acquire_lease("gene", "sup-b", "vps", 15))
        assert new.fence > old.fence
    with (
        Client(live_server.url, live_server.tokens["gene"], fence=old.fence) as stale,
        Client(live_server.url, live_server.tokens["gene"], fence=new.fence) as current,
        Client(live_server.url, live_server.tokens["gene"]) as unfenced,
    ):
        assert push(current, {"MEMORY.md": b"vps"}) == 2
        with pytest.raises(Fenced, match="stale"):
            stale.do(Calls.put_workspace_blob(sha(b"late"), b"late"))
        held = [FileIn(path="MEMORY.md", sha256=sha(b"mini"), size=4)]
        with pytest.raises(Fenced, match="stale"):
            stale.do(Calls.commit_workspace(held))
        with pytest.raises(Fenced, match="without a fencing token"):
            unfenced.do(Calls.commit_workspace(held))
        latest = current.do(Calls.workspace())
        assert (latest.version, latest.fence) == (2, new.fence)
        assert latest.files[0].sha256 == sha(b"vps")


@pytest.mark.parametrize(
    ("path", "problem"),
    [
        ("../../etc/passwd", "climbs out"),
        ("memory/../../x", "climbs out"),
        ("/etc/passwd", "absolute"),
        ("C:/Windows/x", "absolute"),
        ("a\\b.md", "backslash"),
        (".mcos/memory.db", ".mcos"),
        ("a//b", "empty"),
        ("x\u0000y", "control"),
    ],
)
def test_bad_paths_are_refused_naming_them(
    live_server: LiveServer, path: str, problem: str
) -> None:
    token = live_server.tokens["gene"]
    body = {"files": [{"path": "ok.md", "sha256": sha(b""), "size": 0},
                      {"path": path, "sha256": sha(b""), "size": 0}]}  # fmt: skip
    r = raw(live_server, "PUT", "/v1/workspace", token, json=body)
    assert r.status_code == 422, r.text
    error = r.json()["error"]
    assert error["details"]["field"] == "files[1].path"
    assert problem in error["message"]


def test_bad_hashes_and_unknown_blobs_are_refused(live_server: LiveServer) -> None:
    token = live_server.tokens["gene"]
    with live_server.client("gene") as gene:
        with pytest.raises(InvalidRequest, match="bad hash"):
            gene.do(Calls.put_workspace_blob(sha(b"one"), b"two"))
        with pytest.raises(InvalidRequest, match="not a sha256"):
            gene.do(Calls.put_workspace_blob("abc", b"two"))
        with pytest.raises(InvalidRequest, match=r"files\[0\] \(notes.md\): no blob"):
            gene.do(Calls.commit_workspace([FileIn(path="notes.md", sha256=sha(b"x"), size=1)]))
    body = {"files": [{"path": "a.md", "sha256": "Z" * 64, "size": 1}]}
    r = raw(live_server, "PUT", "/v1/workspace", token, json=body)
    assert r.status_code == 422
    assert r.json()["error"]["details"]["field"] == "files[0].sha256"
    r = raw(live_server, "PUT", f"/v1/workspace/blobs/{sha(b'x')}", token, json={"content": "%%"})
    assert r.status_code == 422  # not base64


def test_limits_and_switched_off_sync(small: LiveServer) -> None:
    with small.client("gene") as gene:
        with pytest.raises(InvalidRequest, match="max_file_bytes is 10"):
            gene.do(Calls.put_workspace_blob(sha(b"x" * 11), b"x" * 11))
        big = [FileIn(path="big.md", sha256=sha(b"x" * 11), size=11)]
        with pytest.raises(InvalidRequest, match=r"files\[0\].size: big.md is 11 bytes"):
            gene.do(Calls.commit_workspace(big))
        assert push(gene, {"a.md": b"x" * 8}) == 1
        with pytest.raises(InvalidRequest, match="max_total_bytes is 15"):
            push(gene, {"a.md": b"x" * 8, "b.md": b"y" * 8})
        assert gene.do(Calls.workspace()).version == 1
    with small.client("sentinel") as sentinel, pytest.raises(McosError, match="sync is off"):
        push(sentinel, {"a.md": b"x"})
