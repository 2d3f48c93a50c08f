"""Every error mcos raises on purpose.

Errors carry data (what, where) and their message says what to do. The HTTP layer maps each
class to one status code and one machine-readable ``code``; the CLI maps them to exit codes
(a configuration error exits 78, ``EX_CONFIG``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

EX_CONFIG = 78


class McosError(Exception):
    """Root of every error mcos raises on purpose."""

    code = "error"
    status = 500

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details = details


class ConfigError(McosError):
    """The fleet file or another configuration is wrong; names the file and the key path."""

    code = "config_error"
    status = 500

    def __init__(self, file: str, key: str, problem: str) -> None:
        where = f"{file}: {key}: " if key else f"{file}: "
        super().__init__(f"{where}{problem}", file=file, key=key, problem=problem)
        self.file = file
        self.key = key
        self.problem = problem


class KeyUnavailable(ConfigError):
    """Mission Control cannot resolve the key of an agent whose model calls go through it: the
    agent cannot think until the operator gives Mission Control the key (exit 78, no restart)."""

    code = "key_unavailable"


class ConfigErrors(McosError):
    """Several configuration problems found in one pass, so a user fixes them all at once."""

    code = "config_error"

    def __init__(self, errors: list[ConfigError]) -> None:
        super().__init__("\n".join(e.message for e in errors), count=len(errors))
        self.errors = errors


class AuthError(McosError):
    """The request carries no valid credentials (401)."""

    code = "unauthenticated"
    status = 401


class Forbidden(McosError):
    """The caller is authenticated but may not do this (403)."""

    code = "forbidden"
    status = 403


class NotFound(McosError):
    """The named thing does not exist (404)."""

    code = "not_found"
    status = 404


class Conflict(McosError):
    """The request conflicts with what is stored (409)."""

    code = "conflict"
    status = 409


class IdempotencyConflict(Conflict):
    """The sender reused an idempotency key with different content."""

    code = "idempotency_conflict"


class StaleReceipt(Conflict):
    """The claim this receipt belongs to has expired or was superseded by another claim."""

    code = "stale_receipt"


class OverBudget(McosError):
    """A model call would take an agent (or the fleet) past its daily cap (402)."""

    code = "over_budget"
    status = 402


class InvalidRequest(McosError):
    """The request is well-formed but names something that cannot be used (422)."""

    code = "invalid_request"
    status = 422


class StoreError(McosError):
    """The store failed in a way the caller cannot fix."""

    code = "store_error"
    status = 500


class StoreUnavailable(StoreError):
    """The database cannot be reached right now; retrying later is safe (503)."""

    code = "store_unavailable"
    status = 503


class SchemaOutOfDate(StoreError):
    """The database schema is older than this version of mcos expects."""

    code = "schema_out_of_date"
    status = 503


def in_batch(error: McosError, index: int) -> McosError:
    """The same error, naming the item of a batch of messages it concerns."""
    details = {**error.details, "index": index}
    if "field" in details:
        details["field"] = f"messages[{index}].{details['field']}"
    return type(error)(f"messages[{index}]: {error.message}", **details)


class ModelError(McosError):
    """A model provider failed a call; carries the provider, the HTTP status and its message."""

    code = "model_error"
    status = 502

    def __init__(self, message: str, *, provider: str, status_code: int | None = None) -> None:
        super().__init__(message, provider=provider, status_code=status_code)
        self.provider = provider
        self.status_code = status_code


class RateLimited(ModelError):
    """429: the provider asks us to wait ``retry_after`` seconds; the agent cools down."""

    code = "rate_limited"

    def __init__(self, message: str, *, provider: str, retry_after: float) -> None:
        super().__init__(message, provider=provider, status_code=429)
        self.retry_after = retry_after
        self.details["retry_after"] = retry_after


class SpendLimitReached(ModelError):
    """The provider account's spend limit or credit is exhausted: retrying cannot help."""

    code = "spend_limit_reached"


class ModelUnavailable(ModelError):
    """Overloaded (529), a server error or no connection, still failing after jittered retries."""

    code = "model_unavailable"


class ModelRequestRejected(ModelError):
    """The provider refused the request itself (400, 401, 403, 404): a bug or a bad key."""

    code = "model_request_rejected"


class LeaseHeld(Conflict):
    """Another supervisor holds the agent's lease (409): this one must not start the agent."""

    code = "lease_held"


class LeaseLost(Conflict):
    """The lease expired or passed to another holder (409): stop the agent now."""

    code = "lease_lost"


class LastOperatorToken(Conflict):
    """Revoking this token would leave no active operator token: humans would be locked out."""

    code = "last_operator_token"


class Fenced(Conflict):
    """A call carried a fencing token older than the agent's current lease (409)."""

    code = "fenced"


class TooManyReports(McosError):
    """An agent passed its incident-report rate limit (429)."""

    code = "too_many_reports"
    status = 429


class ChannelError(McosError):
    """A channel could not receive or send (the service refused, or is unreachable)."""

    code = "channel_error"
    status = 502


class ChannelFenced(ChannelError):
    """The service says another process receives for this account (Telegram's 409 Conflict):
    this one stops receiving and reports, rather than fight over it."""

    code = "channel_fenced"


class ChannelRefused(ChannelError):
    """The service refused the credentials or the request for good (401, 403, bad chat):
    retrying will not help until someone changes the configuration."""

    code = "channel_refused"


class McpUnavailable(McosError):
    """An MCP server could not be started, reached or initialised; the agent runs without it."""

    code = "mcp_unavailable"

    def __init__(self, server: str, where: str, problem: str, stderr: Path | None = None) -> None:
        see = f" (its stderr: {stderr})" if stderr is not None else ""
        super().__init__(
            f"MCP server {server!r} ({where}) is unavailable: {problem}{see}",
            server=server,
            where=where,
            problem=problem,
        )
        self.server = server
        self.where = where
        self.problem = problem


class TooManyMessages(McosError):
    """An agent passed a per-sender message limit (429): too many to one recipient."""

    code = "too_many_messages"
    status = 429


class RenderRefused(McosError):
    """A document may not be written where asked (outside the workspace, not a ``.pdf``)."""

    code = "render_refused"
    status = 400

    def __init__(self, path: str, problem: str) -> None:
        super().__init__(f"refused to write {path!r}: {problem}", path=path, problem=problem)
        self.path = path
        self.problem = problem


class RenderFailed(McosError):
    """The browser could not render a document (missing, crashed, timed out)."""

    code = "render_failed"

    def __init__(self, path: str, problem: str) -> None:
        super().__init__(f"could not render {path!r}: {problem}", path=path, problem=problem)
        self.path = path
        self.problem = problem
