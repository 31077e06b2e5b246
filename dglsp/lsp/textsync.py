r"""Incremental document sync by the LSP's rules: the server's copy of a buffer never drifts from the editor's.

pygls 2.1.1 applies `didChange` ranges on `str.splitlines()` lines, which also break at form
feeds, `\x1c`-`\x1e`, `\x85`, U+2028 and U+2029 (the LSP counts only `\n`, `\r\n` and `\r`),
so one such character in a file shifts every later edit by a line. It also moves a character
past the end of the last line back by one, and lets one past a line's end run into the next
line. Here a change's range becomes two string offsets with `documents.offset_at` (the same
rules every request uses, in the negotiated position encoding) and the text is spliced
between them. A line past the end of the document means the end of the document.
"""

from __future__ import annotations

from typing import Any

from lsprotocol import types
from pygls.workspace import TextDocument, Workspace

from dglsp.errors import InvalidRequestError
from dglsp.lsp.documents import offset_at


def clamped_offset(text: str, position: types.Position, encoding: str) -> int:
    """`offset_at`, with a line past the end meaning the end of the document (editors send it after a
    trailing newline; anything further is clamped rather than lost)."""
    try:
        return offset_at(text, position, encoding)
    except InvalidRequestError:
        return len(text)


def apply_change(text: str, change: Any, encoding: str) -> str:
    """The document after one content change (a ranged edit, or the whole text)."""
    if not isinstance(change, types.TextDocumentContentChangePartial):
        return change.text
    start = clamped_offset(text, change.range.start, encoding)
    end = clamped_offset(text, change.range.end, encoding)
    start, end = min(start, end), max(start, end)  # a reversed range still names the same span
    return text[:start] + change.text + text[end:]


class LspTextDocument(TextDocument):
    def _apply_incremental_change(self, change: types.TextDocumentContentChangePartial) -> None:
        encoding = self._position_codec.encoding or types.PositionEncodingKind.Utf16
        self._source = apply_change(self.source, change, encoding)


class LspWorkspace(Workspace):
    def _create_text_document(self, doc_uri: str, source: str | None = None, version: int | None = None,
                              language_id: str | None = None) -> TextDocument:
        return LspTextDocument(doc_uri, source=source, version=version, language_id=language_id,
                               sync_kind=self._sync_kind, position_codec=self._position_codec)


def adopt(workspace: Workspace) -> None:
    """Make the workspace pygls created at `initialize` open its documents as `LspTextDocument`s.

    pygls builds its `Workspace` inside its own `initialize` handler, with no hook to pick the class;
    `LspWorkspace` adds no state, so switching the class of that instance is safe.
    """
    if type(workspace) is Workspace:
        workspace.__class__ = LspWorkspace
