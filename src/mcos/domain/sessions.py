"""Dashboard sessions as the store keeps them: a random id (stored only as its hash), the operator
token it was opened with, and when it ends."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True)
class DashboardSession:
    """One sign-in to the dashboard."""

    id: int
    id_hash: str
    token_id: int
    operator: str
    created_at: datetime
    expires_at: datetime
    ended_at: datetime | None = None

    def live(self, now: datetime) -> bool:
        """Not signed out and not past its lifetime (its token is checked separately)."""
        return self.ended_at is None and now < self.expires_at
