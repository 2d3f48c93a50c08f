"""Local recovery: a new operator token minted on the server's machine, from the store and the
token key directly — for a fleet whose humans are locked out (every operator token lost or
expired). No server is needed, and a running one accepts the token at once (it is read from
the store on first use). Audited as ``token.recovered_locally``."""

from __future__ import annotations

import getpass
import os
import socket
from dataclasses import dataclass
from pathlib import Path

from mcos.config import Fleet
from mcos.domain import tokens
from mcos.domain.audit import AuditEvent, audit_key
from mcos.domain.tokens import PrincipalKind, TokenRecord
from mcos.exceptions import ConfigError
from mcos.server.factory import TOKEN_KEY_FILE, token_key
from mcos.store import make_store

RECOVERED = "token.recovered_locally"


@dataclass(frozen=True)
class Recovered:
    """The clear token (shown once) and its stored record."""

    token: str
    record: TokenRecord


def key_path(fleet: Fleet) -> Path:
    """Where the server's token key is: ``$MCOS_TOKEN_KEY_FILE`` or ``STATE/server.key``."""
    return Path(os.environ.get("MCOS_TOKEN_KEY_FILE", fleet.state_dir / TOKEN_KEY_FILE))


async def recover_operator(fleet: Fleet, name: str, label: str = "") -> Recovered:
    """Mint an operator token for human ``name`` straight into the fleet's store."""
    if fleet.humans and name not in fleet.humans:
        known = ", ".join(sorted(fleet.humans))
        raise ConfigError(
            str(fleet.path), "humans", f"no human {name!r} to recover (humans: {known})"
        )
    path = key_path(fleet)
    if not path.exists():
        raise ConfigError(
            str(path),
            "",
            "no token key here: run this on Mission Control's machine (or set "
            "MCOS_TOKEN_KEY_FILE to the server's key), as the user that runs it",
        )
    key = token_key(fleet.state_dir)
    clear, prefix = tokens.new_token()
    store = make_store(fleet.store_url, audit_key=audit_key(key))
    try:
        await store.open()
        record = await store.create_token(
            prefix=prefix,
            digest=tokens.digest(key, clear),
            kind=PrincipalKind.OPERATOR,
            name=name,
            label=label or "recovered locally",
            audit=AuditEvent(
                actor=f"local:{getpass.getuser()}",
                action=RECOVERED,
                targets={"principal": f"operator:{name}"},
                detail={"machine": socket.gethostname(), "label": label},
            ),
        )
    finally:
        await store.close()
    return Recovered(clear, record)
