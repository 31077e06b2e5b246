r"""Incremental document sync by the LSP's rules: the server's copy of a buffer never drifts from the editor's.

pygls 2.1.1 applies `didChange` ranges on `str.splitlines()` lines, which also break at form
feeds, `\x1c`-`\x1e`, `\x85`, U+2028 and U+2029 (the LSP counts only `\n`, `\r\n` and `\r`),
so one such character in a file shifts every later edit by a line. It also moves a character
past the end of the last line back by one, and lets one past a line's end run into the next
line. Here a change's range becomes two string offsets with `documents.offset_at` (the same
rules every request uses, in the negotiated position encoding) and the text is spliced
between them. A line past the end of the document means the end of the document.

Each applied change is also kept, as a `DocumentChange` (offsets in the text before it, the old and the
new text), until the `didChange` handler drains them (`take_changes`) into the service's edit history:
only here are the offsets and the replaced text known. A whole-document change is narrowed to the span
that differs, so a client that syncs full text still yields edits, not rewrites of the file.
"""

from __future__ import annotations

import dataclasses
from typing import Any
from urllib.parse import unquote

from lsprotocol import types
from pygls.workspace import TextDocument, Workspace

from dglsp.completion.edits import DocumentChange
from dglsp.errors import InvalidRequestError
from dglsp.lsp.documents import offset_at

MAX_PENDING_CHANGES = 256  # a document whose changes nobody drains (no handler yet) keeps only the latest


def clamped_offset(text: str, position: types.Position, encoding: str) -> int:
    """`offset_at`, with a line past the end meaning the end of the document (editors send it after a
    trailing newline; anything further is clamped rather than lost)."""
    try:
        return offset_at(text, position, encoding)
    except InvalidRequestError:
        return len(text)


def change_span(text: str, change: Any, encoding: str) -> tuple[int, int, str]:
    """(start, end, new text): the span of `text` one content change replaces; a whole-document change is
    narrowed to where the old and new text differ."""
    if not isinstance(change, types.TextDocumentContentChangePartial):
        new = change.text
        head = 0
        limit = min(len(text), len(new))
        while head < limit and text[head] == new[head]:
            head += 1
        tail = 0
        while tail < limit - head and text[len(text) - 1 - tail] == new[len(new) - 1 - tail]:
            tail += 1
        return head, len(text) - tail, new[head:len(new) - tail]
    start = clamped_offset(text, change.range.start, encoding)
    end = clamped_offset(text, change.range.end, encoding)
    start, end = min(start, end), max(start, end)  # a reversed range still names the same span
    return start, end, change.text


def apply_change(text: str, change: Any, encoding: str) -> str:
    """The document after one content change (a ranged edit, or the whole text)."""
    if not isinstance(change, types.TextDocumentContentChangePartial):
        return change.text
    start, end, new = change_span(text, change, encoding)
    return text[:start] + new + text[end:]


class LspTextDocument(TextDocument):
    """pygls' document, applying ranged changes by the LSP's line rules, and keeping every change for the edit
    history (pygls still decides, by the sync kind, which kind of change applies)."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.pending_changes: list[DocumentChange] = []

    def _apply_incremental_change(self, change: types.TextDocumentContentChangePartial) -> None:
        self._record(change)

    def _apply_full_change(self, change: Any) -> None:
        self._record(change)

    def _record(self, change: Any) -> None:
        encoding = self._position_codec.encoding or types.PositionEncodingKind.Utf16
        before = self.source
        start, end, new = change_span(before, change, encoding)
        self._source = before[:start] + new + before[end:]
        self.pending_changes.append(DocumentChange(self.uri, 0, start, end, before[start:end], new, before))
        del self.pending_changes[:-MAX_PENDING_CHANGES]


def take_changes(workspace: Workspace, uri: str, version: int) -> list[DocumentChange]:
    """The changes applied to `uri` since the last call, stamped with the version they led to."""
    document = workspace.text_documents.get(unquote(uri))  # pygls keys documents by the unquoted URI
    if not isinstance(document, LspTextDocument):
        return []
    pending, document.pending_changes = document.pending_changes, []
    return [dataclasses.replace(change, uri=uri, version=version) for change in pending]


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
