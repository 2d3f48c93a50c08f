"""schemathesis against a live Mission Control: cases generated from the served OpenAPI document,
valid and invalid, sent with an agent token and with an operator token.

Every response must be no server error (``not_a_server_error``) and match the schema the document
declares for its status (``response_schema_conformance``). Both runs go to one server on SQLite
(the routes, models and error handlers under test are the same on both stores; the stores' own
behaviour has its own suites). The agent runs first, so nothing the operator does (revoking a
token, pausing an agent) can make the agent's run hollow.

What is changed in the generated cases, and why:
- a case that would revoke or rotate the caller's *own* token is skipped: everything after it
  would be a 401, and the run would test nothing (the other token ids are revoked and rotated);
- a long-poll's ``wait`` is set to 0: an inbox or dead-letter read may otherwise park the server
  for up to 30 s per case, and the wait itself is covered by the inbox tests.
Nothing else is excluded. The main request bodies carry an ``examples`` entry in the schema (a
message to gene, an incident, a state report): the explicit phase sends those first, so the run
reaches their success paths, which random names and ids almost never do.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis.checks import not_a_server_error
from schemathesis.errors import InvalidSchema
from schemathesis.specs.openapi.checks import response_schema_conformance

from tests.api.conftest import LiveServer, migrate, serve

POSITIVE_EXAMPLES = 8
"""Valid cases per operation and token (about 50 operations)."""
NEGATIVE_EXAMPLES = 6
"""Invalid cases per operation and token."""
CHECKS = [not_a_server_error, response_schema_conformance]
MUST_SUCCEED = {
    "GET /healthz",
    "GET /v1/agents",
    "GET /v1/inbox",
    "GET /v1/incidents",
    "POST /v1/incidents",
    "POST /v1/messages",
}
"""Operations each token's run must have seen answer 2xx at least once."""
OWN_TOKEN_OPERATIONS = {"/v1/tokens/{token_id}/revoke", "/v1/tokens/{token_id}/rotate"}


@dataclass
class Run:
    """What one token's run sent and found."""

    who: str
    cases: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)
    answered: dict[str, Counter[int]] = field(default_factory=dict)
    """Statuses per operation: which operations this token reached at all."""

    def operations_that_succeeded(self) -> set[str]:
        return {op for op, seen in self.answered.items() if any(s < 300 for s in seen)}

    def operations_open_to_it(self) -> set[str]:
        """Operations that answered this token with something other than 401/403 at least once."""
        return {op for op, seen in self.answered.items() if set(seen) - {401, 403}}


def _own_token_id(server: LiveServer, token: str) -> int:
    """The id of ``token``'s own record (``mcos_PREFIX_SECRET``)."""
    prefix = token.split("_", 2)[1]
    listed = httpx.get(
        server.url + "/v1/tokens",
        headers={"Authorization": f"Bearer {server.operator_token}"},
        timeout=10,
    ).json()
    return next(t["id"] for t in listed if t["prefix"].removeprefix("mcos_") == prefix)


def _run(server: LiveServer, schema: Any, who: str, token: str, own_id: int) -> Run:
    run = Run(who)
    headers = {"Authorization": f"Bearer {token}"}
    with requests.Session() as session:
        for result in schema.get_all_operations():
            try:
                operation = result.ok()
            except InvalidSchema as e:
                run.failures.append(f"invalid schema: {e}")
                continue
            for mode, examples in (
                (schemathesis.GenerationMode.POSITIVE, POSITIVE_EXAMPLES),
                (schemathesis.GenerationMode.NEGATIVE, NEGATIVE_EXAMPLES),
            ):
                _cases(server, run, session, operation, mode, examples, headers, own_id)
    return run


def _cases(
    server: LiveServer,
    run: Run,
    session: requests.Session,
    operation: Any,
    mode: schemathesis.GenerationMode,
    examples: int,
    headers: dict[str, str],
    own_id: int,
) -> None:
    @settings(
        max_examples=examples,
        derandomize=True,
        deadline=None,
        database=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy(generation_mode=mode))
    def one(case: Any) -> None:
        if operation.path in OWN_TOKEN_OPERATIONS and _same_id(case, "token_id", own_id):
            return
        if isinstance(case.query, dict) and "wait" in case.query:
            case.query["wait"] = 0
        run.cases += 1
        try:
            response = case.call(base_url=server.url, session=session, headers=headers, timeout=15)
        except requests.RequestException as e:
            run.failures.append(f"{operation.label}: {type(e).__name__}: {e}")
            return
        run.statuses[response.status_code] += 1
        run.answered.setdefault(operation.label, Counter())[response.status_code] += 1
        try:
            case.validate_response(response, checks=CHECKS, headers=headers)
        except (AssertionError, BaseExceptionGroup, InvalidSchema) as e:  # each one is reported
            run.failures.append(f"{operation.label} ({mode.value}, as {run.who}):\n{e}")

    try:
        one()
    except Unsatisfiable:
        # No invalid case exists for an operation that takes no input (GET /healthz).
        assert mode is schemathesis.GenerationMode.NEGATIVE, operation.label


def _same_id(case: Any, name: str, own_id: int) -> bool:
    value = (case.path_parameters or {}).get(name)
    try:
        return int(value) == own_id
    except (TypeError, ValueError):
        return False


@pytest.mark.slow
@pytest.mark.timeout(300)  # about 1,700 requests: 40 s idle, 2 min beside a busy test
def test_schemathesis_finds_no_server_error_and_no_schema_violation(tmp_path: Path) -> None:
    """Agent then operator: 0 server errors and 0 schema violations over every operation."""
    import asyncio

    url = f"sqlite:///{tmp_path}/mcos.db"
    asyncio.run(migrate(url))
    started = time.monotonic()
    with serve(url, tmp_path) as server:
        # The first request builds the document: over 10 s beside a CPU hog on 2 cores.
        document = httpx.get(server.url + "/openapi.json", timeout=60).json()
        schema = schemathesis.openapi.from_dict(document)
        runs = [
            _run(
                server, schema, "agent jarvis", server.tokens["jarvis"],
                _own_token_id(server, server.tokens["jarvis"]),
            ),
            _run(
                server, schema, "operator", server.operator_token,
                _own_token_id(server, server.operator_token),
            ),
        ]  # fmt: skip
    took = time.monotonic() - started
    operations = sum(len(methods) for methods in document["paths"].values())
    for r in runs:
        print(
            f"schemathesis as {r.who}: {r.cases} cases over {operations} operations, "
            f"statuses {dict(sorted(r.statuses.items()))}, {len(r.failures)} failures, "
            f"{len(r.operations_that_succeeded())} operations answered 2xx"
        )
    print(f"schemathesis: {sum(r.cases for r in runs)} cases in {took:.1f}s")
    failures = [f for r in runs for f in r.failures]
    assert not failures, f"{len(failures)} failing case(s):\n\n" + "\n\n".join(failures[:20])
    for r in runs:
        # Not hollow: most answers are not 401s, and the core operations' success paths were
        # reached (through the examples the schema carries, or generated cases).
        assert r.statuses[401] < r.cases / 10, r.statuses
        missed = MUST_SUCCEED - r.operations_that_succeeded()
        assert not missed, f"as {r.who}, no case of {sorted(missed)} succeeded"
