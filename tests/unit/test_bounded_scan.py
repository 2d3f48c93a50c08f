"""The JSON depth pre-scan (``mcos.domain.bounded.text_depth``) against a plain reference."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from mcos.domain.bounded import text_depth


def reference_depth(raw: bytes) -> int:
    """Brackets outside strings, one byte at a time; an unterminated string runs to the end."""
    depth = deepest = 0
    in_string = escaped = False
    for b in raw:
        if in_string:
            if escaped:
                escaped = False
            elif b == ord("\\"):
                escaped = True
            elif b == ord('"'):
                in_string = False
        elif b == ord('"'):
            in_string = True
        elif b in b"[{":
            depth += 1
            deepest = max(deepest, depth)
        elif b in b"]}":
            depth -= 1
    return deepest


JSONISH = st.lists(st.sampled_from([b'"', b"\\", b"[", b"]", b"{", b"}", b"a", b",", b"\n"]))


@given(JSONISH.map(b"".join))
def test_the_scan_agrees_with_a_byte_by_byte_reading(raw: bytes) -> None:
    assert text_depth(raw) == reference_depth(raw)


@given(st.binary(max_size=200))
def test_any_bytes_agree_too(raw: bytes) -> None:
    assert text_depth(raw) == reference_depth(raw)
