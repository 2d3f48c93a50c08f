"""An audit record laid out for people: who (kind and name), what, on what, and the details as
labelled fields — nested values flattened to ``a.b`` labels, lists joined — not raw dicts."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mcos.domain.audit import AuditRecord

MAX_VALUE = 300


@dataclass(frozen=True)
class Described:
    """A record's parts, ready for a table row."""

    actor_kind: str
    actor_name: str
    targets: list[tuple[str, str]]
    details: list[tuple[str, str]]


def _fields(value: dict[str, Any], prefix: str = "") -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    for key, item in value.items():
        label = f"{prefix}{key}".replace("_", " ")
        if isinstance(item, dict) and item:
            out += _fields(item, f"{prefix}{key}.")
        elif isinstance(item, list | tuple):
            out.append((label, ", ".join(str(x) for x in item) or "—"))
        elif item is None or item == "":
            out.append((label, "—"))
        else:
            text = str(item)
            out.append((label, text if len(text) <= MAX_VALUE else text[:MAX_VALUE] + "…"))
    return out


def describe(record: AuditRecord) -> Described:
    """``record`` as labelled parts (``agent:vault`` → kind ``agent``, name ``vault``)."""
    kind, _, name = record.actor.partition(":")
    if not name:
        kind, name = "", kind
    return Described(kind, name, _fields(record.targets), _fields(record.detail))
