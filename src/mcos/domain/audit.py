"""The tamper-evident audit chain.

Each record carries the hash of the one before it; the hash covers every field, so editing a
row changes its hash and breaks the link from its successor, and deleting one breaks the link
too. The hash is an HMAC-SHA256 under the *audit key*, derived from the server's token key (a
file in the state directory, never in the database): whoever can write the database but not
read that key cannot recompute the chain after an edit. Records written before keyed hashing
began (by older installs) carry plain SHA-256 and are verified as such; the store remembers the
first keyed sequence (``keyed_from``) and every checkpoint repeats it, so it cannot be moved.

The chain alone cannot see its own tail cut off (delete the newest rows and move the head back,
or empty the table): the server therefore appends signed *checkpoints* — sequence, hash, time —
to a file in the state directory as the log grows, and verification compares the store with
them. These functions are the whole of the rule; reading rows and files is done elsewhere.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from mcos.domain.bounded import StoredJson

GENESIS = "0" * 64
_AUDIT_LABEL = b"mcos audit chain v1"
_CHECKPOINT_LABEL = b"mcos audit checkpoint v1"

FindingKind = Literal[
    "gap",
    "broken_link",
    "rewritten",
    "truncated",
    "head_moved_back",
    "triggers_missing",
    "checkpoint_bad_signature",
    "checkpoint_missing",
]
"""What verification can find, each named in its output:

- ``gap``: records missing by sequence number (a deleted range, or a tail the head still counts);
- ``broken_link``: a record whose ``prev_hash`` is not the hash of the record before it;
- ``rewritten``: a record whose contents do not match its keyed hash, or that differs from the
  one a checkpoint recorded (rows rewritten and their hashes recomputed without the key);
- ``truncated``: the store holds fewer records than a checkpoint recorded;
- ``head_moved_back``: the store's head is behind a checkpoint or behind its own records;
- ``triggers_missing``: an append-only trigger of the audit table was dropped or disabled;
- ``checkpoint_bad_signature``: a line of the checkpoint file was edited or forged;
- ``checkpoint_missing``: there is no checkpoint file to compare with.
"""


def audit_key(token_key: bytes) -> bytes:
    """The key of the chain's HMAC, derived from the server's token key (shared by replicas)."""
    return hmac.new(token_key, _AUDIT_LABEL, hashlib.sha256).digest()


def checkpoint_key(token_key: bytes) -> bytes:
    """The key that signs checkpoint lines, derived apart from the chain's key."""
    return hmac.new(token_key, _CHECKPOINT_LABEL, hashlib.sha256).digest()


@dataclass(frozen=True)
class AuditEvent:
    """A state change to record: the store adds the time, the sequence and the chain hash."""

    actor: str
    action: str
    targets: dict[str, Any] = field(default_factory=dict)
    detail: dict[str, Any] = field(default_factory=dict)
    outcome: str = "ok"


@dataclass(frozen=True)
class AuditRecord:
    """A stored audit record."""

    seq: int
    at: datetime
    actor: str
    action: str
    targets: dict[str, Any]
    detail: dict[str, Any]
    outcome: str
    prev_hash: str
    hash: str


def canonical(value: Any) -> str:
    """The one JSON encoding hashed and stored, so both stores hash identical bytes."""
    if isinstance(value, StoredJson):
        return value.text  # stored by this very function; kept as text since too deep to show
    if isinstance(value, dict) and any(isinstance(v, StoredJson) for v in value.values()):
        # A record holding such a value: its text goes in where a one-off marker was encoded.
        marker = f"\0{secrets.token_hex(16)}:"
        texts = {marker + k: v.text for k, v in value.items() if isinstance(v, StoredJson)}
        marked = {k: marker + k if isinstance(v, StoredJson) else v for k, v in value.items()}
        encoded = canonical(marked)
        for placeholder, text in texts.items():
            encoded = encoded.replace(canonical(placeholder), text)
        return encoded
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def record_hash(
    *,
    seq: int,
    at: datetime,
    actor: str,
    action: str,
    targets: dict[str, Any],
    detail: dict[str, Any],
    outcome: str,
    prev_hash: str,
    key: bytes | None = None,
) -> str:
    """The hash of one record, chained to ``prev_hash``: HMAC-SHA256 under ``key``, or the
    plain SHA-256 of records written before keyed hashing began (``key=None``)."""
    body = canonical(
        {
            "seq": seq,
            "at": at.isoformat(timespec="microseconds"),
            "actor": actor,
            "action": action,
            "targets": targets,
            "detail": detail,
            "outcome": outcome,
            "prev": prev_hash,
        }
    ).encode()
    if key is None:
        return hashlib.sha256(body).hexdigest()
    return hmac.digest(key, body, "sha256").hex()


@dataclass(frozen=True)
class ChainBreak:
    """Where and how the chain fails to verify."""

    seq: int
    problem: str


@dataclass(frozen=True)
class Finding:
    """One thing verification found wrong, named by kind, at a record where there is one."""

    kind: FindingKind
    seq: int | None
    message: str


def verify_chain(
    records: list[AuditRecord],
    head_seq: int | None = None,
    *,
    key: bytes | None = None,
    keyed_from: int | None = None,
) -> list[ChainBreak]:
    """Every break in ``records`` (ordered by seq); empty when the chain is intact.

    ``head_seq`` is the last sequence the store says it wrote; a chain that ends before it has
    lost its tail. Records from ``keyed_from`` on are checked against ``key`` (all of them when
    ``keyed_from`` is None and a key is given; none when there is no key).
    """
    return [
        ChainBreak(f.seq or 0, f.message)
        for f in _walk(records, head_seq, key, 1 if keyed_from is None else keyed_from)
    ]


def _walk(
    records: list[AuditRecord], head_seq: int | None, key: bytes | None, keyed_from: int
) -> list[Finding]:
    found: list[Finding] = []
    prev_hash = GENESIS
    expected_seq = 1
    for r in records:
        if r.seq != expected_seq:
            found.append(Finding("gap", r.seq, f"records {expected_seq}..{r.seq - 1} are missing"))
        if r.prev_hash != prev_hash:
            found.append(Finding("broken_link", r.seq, "does not link to the record before it"))
        keyed = key is not None and r.seq >= keyed_from
        computed = record_hash(
            seq=r.seq,
            at=r.at,
            actor=r.actor,
            action=r.action,
            targets=r.targets,
            detail=r.detail,
            outcome=r.outcome,
            prev_hash=r.prev_hash,
            key=key if keyed else None,
        )
        if not hmac.compare_digest(computed, r.hash):
            how = "its keyed hash (HMAC) does not match" if keyed else "its hash does not match"
            found.append(
                Finding("rewritten", r.seq, f"contents were changed after it was written ({how})")
            )
        prev_hash = r.hash
        expected_seq = r.seq + 1
    if head_seq is not None and head_seq >= expected_seq:
        found.append(
            Finding(
                "gap",
                head_seq,
                f"records {expected_seq}..{head_seq} are missing (the head says {head_seq})",
            )
        )
    return found


# --- checkpoints ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Checkpoint:
    """The chain's head at one moment, signed: one line of the checkpoint file."""

    seq: int
    hash: str
    at: datetime
    keyed_from: int

    def payload(self) -> str:
        """The signed part of the line."""
        return (
            f"{self.seq} {self.hash} {self.at.isoformat(timespec='microseconds')} "
            f"keyed_from={self.keyed_from}"
        )

    def line(self, key: bytes) -> str:
        """The line written to the file: payload and HMAC-SHA256 signature (no newline)."""
        return f"{self.payload()} {_sign(key, self.payload())}"


def _sign(key: bytes, payload: str) -> str:
    return hmac.new(key, payload.encode(), hashlib.sha256).hexdigest()


class BadCheckpoint(ValueError):
    """A checkpoint line that does not parse or whose signature does not match."""


def parse_checkpoint(key: bytes, line: str) -> Checkpoint:
    """The checkpoint a line holds; :class:`BadCheckpoint` when it was edited or forged."""
    payload, _, signature = line.rstrip("\n").rpartition(" ")
    if not hmac.compare_digest(_sign(key, payload), signature):
        raise BadCheckpoint("its signature does not match (edited, or signed with another key)")
    try:
        seq, digest, at, keyed = payload.split(" ")
        name, _, value = keyed.partition("=")
        if name != "keyed_from":
            raise ValueError(keyed)
        return Checkpoint(int(seq), digest, datetime.fromisoformat(at), int(value))
    except ValueError as e:
        raise BadCheckpoint(f"it does not parse ({e})") from e


@dataclass(frozen=True)
class ChainState:
    """What the store holds, as verification needs it."""

    records: list[AuditRecord]
    head_seq: int
    head_hash: str
    keyed_from: int
    missing_triggers: list[str] = field(default_factory=list)


def verify(
    state: ChainState,
    key: bytes,
    checkpoints: list[Checkpoint] | None = None,
) -> list[Finding]:
    """Every finding about the chain in ``state``, against ``checkpoints`` when given.

    ``checkpoints=None`` compares with no file at all (only the store itself is checked); the
    caller reports a missing or unreadable file.
    """
    found = _walk(state.records, state.head_seq, key, state.keyed_from)
    last = state.records[-1] if state.records else None
    last_seq = last.seq if last else 0
    if state.head_seq < last_seq:
        found.append(
            Finding(
                "head_moved_back",
                state.head_seq,
                f"the head says seq {state.head_seq} but records run to {last_seq}",
            )
        )
    elif last is not None and state.head_seq == last_seq and state.head_hash != last.hash:
        found.append(
            Finding("broken_link", last_seq, "the head's hash is not the hash of this record")
        )
    for name in state.missing_triggers:
        found.append(
            Finding(
                "triggers_missing",
                None,
                f"the append-only trigger {name} of the audit table is missing or disabled",
            )
        )
    if checkpoints:
        found += _against_checkpoints(state, checkpoints)
    return found


def _against_checkpoints(state: ChainState, checkpoints: list[Checkpoint]) -> list[Finding]:
    found: list[Finding] = []
    by_seq = {r.seq: r for r in state.records}
    last_seq = state.records[-1].seq if state.records else 0
    top = max(checkpoints, key=lambda c: c.seq)
    when = top.at.isoformat(timespec="seconds")
    if top.seq > last_seq:
        held = (
            "the audit table is empty"
            if not state.records
            else f"the store's records end at seq {last_seq} ({len(state.records)} records)"
        )
        found.append(
            Finding(
                "truncated",
                top.seq,
                f"the checkpoint of {when} recorded seq {top.seq}, but {held}: "
                f"records {last_seq + 1}..{top.seq} were removed",
            )
        )
    if top.seq > state.head_seq:
        found.append(
            Finding(
                "head_moved_back",
                state.head_seq,
                f"the head says seq {state.head_seq}, but the checkpoint of {when} "
                f"recorded seq {top.seq}",
            )
        )
    moved = sorted({c.keyed_from for c in checkpoints if c.keyed_from != state.keyed_from})
    for keyed_from in moved:
        found.append(
            Finding(
                "rewritten",
                state.keyed_from,
                f"the store says keyed hashing began at seq {state.keyed_from}, checkpoints say "
                f"{keyed_from}: records were re-hashed without the key",
            )
        )
    differs: dict[int, Checkpoint] = {}
    for c in checkpoints:
        r = by_seq.get(c.seq)
        if r is not None and r.hash != c.hash and c.seq not in differs:
            differs[c.seq] = c
    for seq, c in sorted(differs.items()):
        found.append(
            Finding(
                "rewritten",
                seq,
                f"differs from the record checkpointed at {c.at.isoformat(timespec='seconds')} "
                f"(hash {c.hash[:12]}…, now {by_seq[seq].hash[:12]}…)",
            )
        )
    return found
