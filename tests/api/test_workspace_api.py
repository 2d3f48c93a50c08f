"""``/v1/workspace``: an agent's files, content-addressed and versioned in Mission Control;
a push of a fenced-out instance is refused and overwrites nothing; bad paths, hashes and sizes
are refused naming what is wrong."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from mcos.api_workspace import BlobUpload, FileIn
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


MiB = 1024 * 1024


def upload(*contents: bytes) -> list[BlobUpload]:
    return [BlobUpload.of(sha(c), c, f"f{i}.md") for i, c in enumerate(contents)]


class TestBatchedUpload:
    """``POST /v1/workspace/blobs``: many blobs in one request, all kept or none."""

    def test_many_blobs_in_one_request(self, live_server: LiveServer) -> None:
        """Every blob is kept and said new once; the manifest naming them commits."""
        files = {f"memory/2026-01-{d:02d}.md": f"- day {d}\n".encode() for d in range(1, 31)}
        with live_server.client("gene") as gene:
            answer = gene.do(Calls.put_workspace_blobs(upload(*files.values())))
            assert [b.new for b in answer.blobs] == [True] * 30
            again = gene.do(Calls.put_workspace_blobs(upload(*files.values())))
            assert [b.new for b in again.blobs] == [False] * 30
            entries = [FileIn(path=p, sha256=sha(c), size=len(c)) for p, c in files.items()]
            assert gene.do(Calls.commit_workspace(entries)).version == 1

    def test_one_bad_blob_refuses_the_batch_naming_it(self, live_server: LiveServer) -> None:
        """A blob whose bytes hash to something else is refused naming its index and path;
        the good blobs before it are not kept either."""
        with live_server.client("gene") as gene:
            good = BlobUpload.of(sha(b"good"), b"good", "MEMORY.md")
            two = BlobUpload.of(sha(b"two"), b"two", "memory/2026-12-03.md")
            bad = two.model_copy(update={"sha256": sha(b"one")})
            with pytest.raises(InvalidRequest, match=r"bad hash: blobs\[1\] \(memory/2026-12-03"):
                gene.do(Calls.put_workspace_blobs([good, bad]))
            with pytest.raises(McosError, match="404"):
                gene.do(Calls.fetch_workspace_blobs([sha(b"good")]))

    @pytest.mark.parametrize(
        ("item", "field", "problem"),
        [
            ({"sha256": "abc", "content": "YQ=="}, "blobs[1].sha256", "not a sha256"),
            ({"sha256": sha(b"a"), "content": "YQ==x"}, "blobs[1].content", "not base64"),
            ({"sha256": sha(b"a"), "content": "Y Q=="}, "blobs[1].content", "not base64"),
            ({"sha256": sha(b"a"), "content": "YQ"}, "blobs[1].content", "not base64"),
        ],
    )
    def test_bad_items_are_named(
        self, live_server: LiveServer, item: dict[str, str], field: str, problem: str
    ) -> None:
        """A hash that is no sha256 and bytes that are not strict base64 are refused (422)
        naming the item."""
        first = {"sha256": sha(b"ok"), "content": "b2s="}
        r = raw(live_server, "POST", "/v1/workspace/blobs", live_server.tokens["gene"],
                json={"blobs": [first, item]})  # fmt: skip
        assert r.status_code == 422, r.text
        error = r.json()["error"]
        assert error["details"]["field"] == field
        assert problem in error["message"]

    def test_oversized_and_overlong_batches_are_refused(self, live_server: LiveServer) -> None:
        """More than 4 MiB of files in a batch of several, or more than 1,000 blobs, is
        refused naming ``blobs``; one file larger than the batch bound may go alone (up to
        ``max_file_bytes``)."""
        token = live_server.tokens["gene"]
        megs = [bytes([i]) * MiB for i in range(5)]  # 1 MiB each: max_file_bytes allows them
        with live_server.client("gene") as gene:
            with pytest.raises(InvalidRequest, match=r"over 4194304 bytes of files by blobs\[4\]"):
                gene.do(Calls.put_workspace_blobs(upload(*megs)))
            assert len(gene.do(Calls.put_workspace_blobs(upload(*megs[:4]))).blobs) == 4
        many = [{"sha256": sha(b"%d" % i), "content": "MA=="} for i in range(1001)]
        r = raw(live_server, "POST", "/v1/workspace/blobs", token, json={"blobs": many})
        assert r.status_code == 422, r.text
        assert "blobs: List should have at most 1000 items" in r.json()["error"]["message"]
        r = raw(live_server, "POST", "/v1/workspace/blobs", token, json={"blobs": []})
        assert r.status_code == 422, r.text

    def test_a_fenced_out_instance_cannot_upload_or_fetch(self, live_server: LiveServer) -> None:
        """After a takeover the old instance's batched upload and fetch are refused (409)."""
        with live_server.client() as op:
            old = op.do(Calls.acquire_lease("gene", "sup-a", "mini", 15))
            op.do(Calls.release_lease("gene", "sup-a", old.fence))
            new = op.do(Calls.acquire_lease("gene", "sup-b", "vps", 15))
        token = live_server.tokens["gene"]
        with Client(live_server.url, token, fence=new.fence) as current:
            current.do(Calls.put_workspace_blobs(upload(b"vps")))
        with Client(live_server.url, token, fence=old.fence) as stale:
            with pytest.raises(Fenced, match="stale"):
                stale.do(Calls.put_workspace_blobs(upload(b"late")))
            with pytest.raises(Fenced, match="stale"):
                stale.do(Calls.fetch_workspace_blobs([sha(b"vps")]))


class TestBatchedFetch:
    """``POST /v1/workspace/blobs/fetch``: many blobs in one answer, bounded in bytes."""

    def test_fetch_in_batches_bounded_by_bytes(self, live_server: LiveServer) -> None:
        """The first blobs asked that fit 4 MiB come back in the order asked, the rest are
        ``left`` to ask for next; repeated hashes are answered once."""
        megs = [bytes([i]) * MiB for i in range(5)]
        small = b"small"
        with live_server.client("gene") as gene:
            gene.do(Calls.put_workspace_blobs(upload(*megs[:4])))
            gene.do(Calls.put_workspace_blobs(upload(megs[4], small)))
            asked = [sha(small), sha(small), *(sha(m) for m in megs)]
            first = gene.do(Calls.fetch_workspace_blobs(asked))
            assert [b.sha256 for b in first.blobs] == [sha(small), *(sha(m) for m in megs[:3])]
            assert [b.data() for b in first.blobs] == [small, *megs[:3]]
            assert first.left == [sha(megs[3]), sha(megs[4])]
            rest = gene.do(Calls.fetch_workspace_blobs(first.left))
            assert [b.data() for b in rest.blobs] == megs[3:]
            assert rest.left == []

    def test_bad_and_unknown_hashes_are_named(self, live_server: LiveServer) -> None:
        """A hash that is no sha256 is refused (422), one the agent holds no blob for — its
        own or another agent's — answered 404; each names the item."""
        token = live_server.tokens["gene"]
        with live_server.client("jarvis") as jarvis:
            jarvis.do(Calls.put_workspace_blobs(upload(b"theirs")))
        with live_server.client("gene") as gene:
            gene.do(Calls.put_workspace_blobs(upload(b"mine")))
        body = {"sha256": [sha(b"mine"), "Z" * 64]}
        r = raw(live_server, "POST", "/v1/workspace/blobs/fetch", token, json=body)
        assert r.status_code == 422, r.text
        assert r.json()["error"]["details"]["field"] == "sha256[1]"
        body = {"sha256": [sha(b"mine"), sha(b"theirs")]}
        r = raw(live_server, "POST", "/v1/workspace/blobs/fetch", token, json=body)
        assert r.status_code == 404, r.text
        error = r.json()["error"]
        assert error["details"]["field"] == "sha256[1]"
        assert f"gene has no workspace blob {sha(b'theirs')}" in error["message"]
        many = {"sha256": [sha(b"mine")] * 1001}
        r = raw(live_server, "POST", "/v1/workspace/blobs/fetch", token, json=many)
        assert r.status_code == 422, r.text
        assert "sha256: List should have at most 1000 items" in r.json()["error"]["message"]


def test_batches_need_an_agent_with_sync_on(small: LiveServer) -> None:
    """An operator cannot upload or fetch an agent's blobs; an agent with sync off neither;
    the agent's max_file_bytes holds in a batch too."""
    with small.client() as op, pytest.raises(McosError, match="only an agent"):
        op.do(Calls.fetch_workspace_blobs([sha(b"x")]))
    with small.client("sentinel") as sentinel, pytest.raises(McosError, match="sync is off"):
        sentinel.do(Calls.put_workspace_blobs(upload(b"x")))
    too_big = r"blobs\[1\] \(f1.md\) is 11 bytes"
    with small.client("gene") as gene, pytest.raises(InvalidRequest, match=too_big):
        gene.do(Calls.put_workspace_blobs(upload(b"ok", b"x" * 11)))
