"""The document store's read side: versioned snapshots and client positions turned into offsets.

pygls keeps the open documents (full and incremental sync, applied in the negotiated
position encoding). This module reads them for a request: it validates the document
and the position, and turns a client position (UTF-16 code units by default, or
UTF-8 / UTF-32 when negotiated) into a Python string offset.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from urllib.parse import unquote

from lsprotocol import types
from pygls.workspace import Workspace

from dglsp.completion.snapshot import Snapshot
from dglsp.errors import InvalidRequestError


def snapshot(workspace: Workspace, uri: str) -> Snapshot:
    """The current text of an open document; unknown documents are the client's error."""
    # pygls keys open documents by the unquoted URI (`file:///a%20b.py` is kept as `file:///a b.py`).
    if unquote(uri) not in workspace.text_documents:
        raise InvalidRequestError(f"document {uri} is not open (send textDocument/didOpen first)")
    document = workspace.get_text_document(uri)
    return Snapshot(uri, document.version or 0, document.source, document.language_id or "")


class WorkspaceDocuments:
    """The completion layer's `DocumentReader` over pygls' workspace (created by pygls at `initialize`,
    so it is read through a callable when needed)."""

    def __init__(self, workspace: Callable[[], Workspace]):
        self._workspace = workspace

    def get(self, uri: str) -> Snapshot:
        return snapshot(self._workspace(), uri)

    def version(self, uri: str) -> int | None:
        workspace = self._workspace()
        if unquote(uri) not in workspace.text_documents:
            return None
        return workspace.get_text_document(uri).version or 0

    def all(self) -> list[Snapshot]:
        return [Snapshot(doc.uri, doc.version or 0, doc.source, doc.language_id or "")
                for doc in list(self._workspace().text_documents.values())]


def unit_length(char: str, encoding: str | None) -> int:
    """How many of the client's position units `char` takes (UTF-16 unless UTF-8 or UTF-32 was negotiated;
    None, pygls' encoding before `initialize`, counts as UTF-16)."""
    code_point = ord(char)
    if encoding == types.PositionEncodingKind.Utf8:
        return 1 if code_point < 0x80 else 2 if code_point < 0x800 else 3 if code_point < 0x10000 else 4
    if encoding == types.PositionEncodingKind.Utf32:
        return 1
    return 2 if code_point > 0xFFFF else 1


def offset_at(text: str, position: types.Position, encoding: str | None = types.PositionEncodingKind.Utf16) -> int:
    """String offset of `position`. A line past the end is an error; a character past the end of
    its line means the end of the line (as the LSP spec says); a position inside a multi-unit
    character lands before that character."""
    if position.line < 0 or position.character < 0:
        raise InvalidRequestError(f"negative position {position.line}:{position.character}")
    line_start = _line_start(text, position.line)
    line_end = _next_line_break(text, line_start)
    line_end = len(text) if line_end == -1 else line_end
    # Fast path (10 MB files, 1 MB lines): where every character is one unit, the offset is arithmetic.
    window = text[line_start:min(line_end, line_start + position.character)]
    if encoding == types.PositionEncodingKind.Utf32 or window.isascii() or (
            encoding != types.PositionEncodingKind.Utf8 and not _ASTRAL.search(window)):
        return line_start + len(window)
    units = 0
    offset = line_start
    while offset < line_end:
        width = unit_length(text[offset], encoding)
        if units + width > position.character:
            break
        units += width
        offset += 1
    return offset


_LINE_BREAK = re.compile(r"\r\n|\r|\n")
_ASTRAL = re.compile("[\U00010000-\U0010FFFF]")  # two UTF-16 units each


def _line_start(text: str, line: int) -> int:
    """Offset where `line` starts: one C-level split rather than a Python loop over every line before it."""
    if line == 0:
        return 0
    parts = _LINE_BREAK.split(text, maxsplit=line)
    if len(parts) <= line:
        raise InvalidRequestError(f"line {line} is past the end of the document")
    return len(text) - len(parts[-1])


def _next_line_break(text: str, start: int) -> int:
    r"""Index of the next \n, \r\n or lone \r at or after `start` (-1 if none): LSP counts all three."""
    newline = text.find("\n", start)
    carriage = text.find("\r", start, newline if newline != -1 else len(text))
    return carriage if carriage != -1 else newline


def position_after(
    position: types.Position, span: str, encoding: str | None = types.PositionEncodingKind.Utf16
) -> types.Position:
    """The position `span` (text on the same line, right after `position`) ends at, in the client's units."""
    return types.Position(position.line, position.character + sum(unit_length(char, encoding) for char in span))


def position_at(text: str, offset: int, encoding: str | None = types.PositionEncodingKind.Utf16) -> types.Position:
    """The client's position of string offset `offset` (the inverse of `offset_at`): lines broken at LF, CRLF
    and a lone CR, characters in the negotiated units."""
    if not 0 <= offset <= len(text):
        raise InvalidRequestError(f"offset {offset} outside the document (length {len(text)})")
    before = text[:offset]
    breaks = _LINE_BREAK.findall(before)
    line_start = len(before) - len(_LINE_BREAK.split(before)[-1])
    if before.endswith("\r") and text[offset:offset + 1] == "\n":  # inside a \r\n: the position of its \r
        return position_at(text, offset - 1, encoding)
    column = text[line_start:offset]
    units = len(column) if column.isascii() else sum(unit_length(char, encoding) for char in column)
    return types.Position(len(breaks), units)
