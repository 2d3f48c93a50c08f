"""Named SQL queries, kept in ``sql/<dialect>/queries.sql``.

Each query starts with a ``-- name: NAME`` line; the text until the next such line is the query.
Keeping SQL in files makes it readable and reviewable as SQL, and greppable by name.
"""

from __future__ import annotations

import re
from functools import cache
from importlib import resources

_HEADER = re.compile(r"^--\s*name:\s*(?P<name>[a-z_][a-z0-9_]*)\s*$", re.MULTILINE)


@cache
def queries(dialect: str) -> dict[str, str]:
    """Every named query of ``dialect``."""
    text = (resources.files("mcos.store") / "sql" / dialect / "queries.sql").read_text("utf-8")
    found: dict[str, str] = {}
    headers = list(_HEADER.finditer(text))
    for i, header in enumerate(headers):
        end = headers[i + 1].start() if i + 1 < len(headers) else len(text)
        body = text[header.end() : end].strip()
        name = header["name"]
        if name in found:
            msg = f"query {name!r} is defined twice in {dialect}/queries.sql"
            raise RuntimeError(msg)
        found[name] = body
    return found
