"""Wire models of operating the fleet: message search, pause, resume and restart requests.

Kept apart from ``api_models`` so client and server share them without a hot-file edit.
"""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from mcos.api_models import MessageOut
from mcos.domain.message_search import MessageState


class MessageHitOut(MessageOut):
    """A message found, with where its copies stand (dead, claimed, queued, acked, unrouted)."""

    state: MessageState


class MessageSearchOut(BaseModel):
    """One page of messages, newest first; ``next_before`` asks for the next page (None: last)."""

    messages: list[MessageHitOut]
    next_before: int | None


class ControlRequest(BaseModel):
    """Why (recorded in the audit log and shown as the agent's state detail)."""

    model_config = ConfigDict(extra="forbid")
    reason: str = Field(default="", max_length=500)


class RestartRequestOut(BaseModel):
    """A restart an operator asked for: its id is the audit record's sequence number."""

    id: int
    agent: str
    by: str
    reason: str
    at: datetime


class RestartRequestsOut(BaseModel):
    """Restart requests after a cursor, and the cursor to ask after next time."""

    requests: list[RestartRequestOut]
    cursor: int


class RestartDone(BaseModel):
    """What the supervisor started (recorded with ``agent.restarted``)."""

    model_config = ConfigDict(extra="forbid")
    agent: str = Field(max_length=100)
    pid: int | None = None
