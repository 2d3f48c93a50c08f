"""``/v1/knowledge`` on a PostgreSQL store: agents sync their chunks, search them with
PostgreSQL full-text, and reach only their own folders and the shared ones naming them."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from mcos.api_knowledge import ChunkIn
from mcos.client import Calls
from mcos.exceptions import McosError
from tests.api.conftest import LiveServer, raw, serve_on

KNOWLEDGE = {
    "gene": {"kb": "agent:gene", "legal/shared": "shared:legal"},
    "sentinel": {"sec": "agent:sentinel", "legal/shared": "shared:legal"},
}


@pytest.fixture
def pg_server(tmp_path: Path) -> Iterator[LiveServer]:
    with serve_on("postgres", tmp_path, knowledge=KNOWLEDGE) as (server, _):
        yield server


def chunk(text: str, page: int | None = None, section: str = "") -> ChunkIn:
    return ChunkIn(page=page, section=section, text=text)


@pytest.mark.postgres
def test_sync_search_replace_delete(pg_server: LiveServer) -> None:
    with pg_server.client("gene") as gene, pg_server.client("sentinel") as sentinel:
        gene.do(
            Calls.put_knowledge_chunks(
                "kb/nda.pdf",
                [
                    chunk("Mutual non-disclosure agreement between Acme and Globex.", page=1),
                    chunk("Confidentiality survives for five years after signature.", page=2),
                ],
            )
        )
        gene.do(Calls.put_knowledge_chunks("kb/notes.md", [chunk("The cafeteria opens at 9.")]))
        sentinel.do(
            Calls.put_knowledge_chunks("sec/keys.md", [chunk("Rotate confidentiality keys.")])
        )
        found = gene.do(Calls.search_knowledge("how long does confidentiality survive", k=5))
        assert [(h.path, h.seq, h.page) for h in found.hits] == [("kb/nda.pdf", 1, 2)]
        assert "five years" in found.hits[0].text
        assert found.hits[0].score > 0
        # Stemmed English words, any of them; what looks like syntax is never an error.
        hits = gene.do(Calls.search_knowledge('agreements "non-disclosure" -( &|!:*')).hits
        assert [(h.path, h.seq) for h in hits] == [("kb/nda.pdf", 0)]
        assert gene.do(Calls.search_knowledge("the and of ' &")).hits == []

        # A later batch from offset 1 replaces the rest; offset 0 replaces the whole file.
        gene.do(Calls.put_knowledge_chunks("kb/nda.pdf", [chunk("Term: ten years.", 2)], 1))
        hits = gene.do(Calls.search_knowledge("years")).hits
        assert [(h.seq, h.text) for h in hits] == [(1, "Term: ten years.")]
        gene.do(Calls.put_knowledge_chunks("kb/nda.pdf", [chunk("Nothing about time.")]))
        assert gene.do(Calls.search_knowledge("years")).hits == []

        assert gene.do(Calls.delete_knowledge_file("kb/notes.md")).deleted == 1
        assert gene.do(Calls.search_knowledge("cafeteria")).hits == []


@pytest.mark.postgres
def test_shared_folders_are_shared_and_own_folders_private(pg_server: LiveServer) -> None:
    secret = "Rotate the vault keys every ninety days."
    with pg_server.client("gene") as gene, pg_server.client("sentinel") as sentinel:
        sentinel.do(Calls.put_knowledge_chunks("sec/vault.md", [chunk(secret)]))
        gene.do(Calls.put_knowledge_chunks("legal/shared/msa.md", [chunk("Ninety days notice.")]))
        # gene does not see sentinel's own folder; both see the shared one.
        assert [h.path for h in gene.do(Calls.search_knowledge("ninety days")).hits] == [
            "legal/shared/msa.md"
        ]
        assert {h.path for h in sentinel.do(Calls.search_knowledge("ninety days")).hits} == {
            "sec/vault.md",
            "legal/shared/msa.md",
        }
        # Writing into another agent's folder, or outside any folder, is refused and audited.
        for path in ("sec/vault.md", "legal/other.md", "kb/../sec/x.md"):
            with pytest.raises(McosError) as refused:
                gene.do(Calls.put_knowledge_chunks(path, [chunk("overwritten")]))
            assert refused.value.status == 403
            assert "not in your knowledge folders" in str(refused.value)
        with pytest.raises(McosError) as refused:
            gene.do(Calls.delete_knowledge_file("sec/vault.md"))
        assert refused.value.status == 403
    assert sentinel_still_has(pg_server, secret)
    # An agent without folders (jarvis) and the operator cannot search at all.
    for token in (pg_server.tokens["jarvis"], pg_server.operator_token):
        answer = raw(pg_server, "GET", "/v1/knowledge/search?q=vault", token)
        assert answer.status_code == 403
    with pg_server.client() as op:
        audited = op.do(Calls.audit(actor="agent:gene", action="knowledge.put"))
        assert [a.outcome for a in audited] == ["refused"] * 3
        assert {a.targets["path"] for a in audited} == {
            "sec/vault.md",
            "legal/other.md",
            "kb/../sec/x.md",
        }
        assert op.do(Calls.audit(action="knowledge.search"))[0].outcome == "refused"


@pytest.mark.postgres
def test_two_agents_syncing_one_shared_file_do_not_collide(pg_server: LiveServer) -> None:
    chunks = [chunk(f"clause {i} of the master agreement") for i in range(40)]

    def sync(agent: str) -> None:
        with pg_server.client(agent) as c:
            for _ in range(5):
                c.do(Calls.put_knowledge_chunks("legal/shared/msa.md", chunks))

    with ThreadPoolExecutor(2) as pool:
        list(pool.map(sync, ["gene", "sentinel"]))  # raises if either was refused or failed
    with pg_server.client("gene") as gene:
        hits = gene.do(Calls.search_knowledge("master agreement", k=100)).hits
    assert sorted(h.seq for h in hits) == list(range(40))


def sentinel_still_has(server: LiveServer, text: str) -> bool:
    with server.client("sentinel") as sentinel:
        return any(h.text == text for h in sentinel.do(Calls.search_knowledge("vault")).hits)


def test_a_sqlite_store_keeps_no_knowledge(tmp_path: Path) -> None:
    with (
        serve_on("sqlite", tmp_path, knowledge=KNOWLEDGE) as (server, _),
        server.client("gene") as gene,
    ):
        with pytest.raises(McosError) as refused:
            gene.do(Calls.search_knowledge("anything"))
        assert refused.value.status == 409
        assert "searches its own index" in str(refused.value)
