"""Documents to text an index can cite: PDF by page, DOCX, HTML and Markdown by section.

Each converter returns :class:`Part` s: a piece of text and where it sits in the document (the
1-based page of a PDF; nothing for formats without pages, whose chunks cite their heading). The
conversion is done by kept libraries — pypdf, python-docx, markdownify — never by hand-written
parsers; a document a library cannot read raises :class:`ConversionError` naming the file.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import PurePath

from mcos.exceptions import McosError

SUFFIXES = (".pdf", ".docx", ".md", ".markdown", ".txt", ".html", ".htm")
"""The file types a knowledge folder is searched for (by suffix, case-insensitive)."""


class ConversionError(McosError):
    """A document could not be turned into text (corrupt, encrypted, not what its suffix says)."""

    def __init__(self, path: str, problem: str) -> None:
        super().__init__(f"{path}: {problem}")
        self.path = path
        self.problem = problem


class _Unreadable(Exception):
    """A converter's own verdict on a document (the caller adds the path)."""


@dataclass(frozen=True)
class Part:
    """Markdown-ish text of one page (``page`` 1-based) or of a whole page-less document."""

    text: str
    page: int | None = None


def convert(path: str, data: bytes) -> list[Part]:
    """``data`` (the bytes of the file at ``path``) as parts; its suffix picks the converter."""
    suffix = PurePath(path).suffix.lower()
    converter = _CONVERTERS.get(suffix)
    if converter is None:
        raise ConversionError(path, f"unsupported file type {suffix!r} (known: {SUFFIXES})")
    try:
        return converter(data)
    except _Unreadable as error:
        raise ConversionError(path, str(error)) from None
    except Exception as error:
        raise ConversionError(path, f"{error.__class__.__name__}: {error}") from None


def _pdf(data: bytes) -> list[Part]:
    from pypdf import PdfReader  # noqa: PLC0415 (only an agent with knowledge folders pays)

    reader = PdfReader(io.BytesIO(data))
    if reader.is_encrypted and not reader.decrypt(""):
        raise _Unreadable("the PDF is encrypted (no password is tried)")
    return [Part(page.extract_text() or "", i) for i, page in enumerate(reader.pages, start=1)]


def _docx(data: bytes) -> list[Part]:
    import docx  # noqa: PLC0415

    document = docx.Document(io.BytesIO(data))
    lines: list[str] = []
    for paragraph in document.paragraphs:
        text = paragraph.text.strip()
        if not text:
            continue
        style = (paragraph.style.name if paragraph.style is not None else "") or ""
        level = _heading_level(style)
        lines.append(f"{'#' * level} {text}" if level else text)
        lines.append("")
    for table in document.tables:
        for row in table.rows:
            lines.append(" | ".join(cell.text.strip() for cell in row.cells))
        lines.append("")
    return [Part("\n".join(lines))]


def _heading_level(style: str) -> int:
    """``Heading 2`` → 2, ``Title`` → 1, anything else → 0 (body text)."""
    if style == "Title":
        return 1
    if style.startswith("Heading "):
        level = style.removeprefix("Heading ").strip()
        if level.isdigit():
            return min(int(level), 6)
    return 0


def _html(data: bytes) -> list[Part]:
    from bs4 import BeautifulSoup  # noqa: PLC0415
    from markdownify import MarkdownConverter  # noqa: PLC0415

    soup = BeautifulSoup(data, "html.parser")
    for hidden in soup(["script", "style", "noscript", "template"]):
        hidden.decompose()
    text = MarkdownConverter(heading_style="ATX").convert_soup(soup)
    return [Part(text)]


def _text(data: bytes) -> list[Part]:
    return [Part(data.decode("utf-8-sig", errors="replace"))]


_CONVERTERS: dict[str, Callable[[bytes], list[Part]]] = {
    ".pdf": _pdf,
    ".docx": _docx,
    ".html": _html,
    ".htm": _html,
    ".md": _text,
    ".markdown": _text,
    ".txt": _text,
}
