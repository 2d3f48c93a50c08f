"""Reciprocal rank fusion: one ranking out of several (BM25 and embeddings), by rank alone.

Scores of different searches are not comparable (BM25 is unbounded, cosine is in [-1, 1]);
ranks are. Each list adds ``1 / (k + rank)`` to an item (rank 1-based), so an item near the top
of either list rises, and one near the top of both rises most (Cormack et al., SIGIR 2009).
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import TypeVar

K = 60
"""The constant of the paper: it damps the weight of the very first ranks."""

T = TypeVar("T", bound=Hashable)


def reciprocal_rank_fusion(rankings: Sequence[Sequence[T]], k: int = K) -> list[tuple[T, float]]:
    """Items of all ``rankings`` (each best first), best fused first, with their fused score;
    ties keep the order in which items were first seen."""
    if k < 0:
        msg = f"k must be zero or more, not {k}"
        raise ValueError(msg)
    scores: dict[T, float] = {}
    for ranking in rankings:
        for rank, item in enumerate(dict.fromkeys(ranking), start=1):
            scores[item] = scores.get(item, 0.0) + 1.0 / (k + rank)
    return sorted(scores.items(), key=lambda pair: -pair[1])
