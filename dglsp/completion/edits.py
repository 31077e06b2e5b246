"""What an edit is, and the history of a document's edits.

* `Edit(start, end, text)`: replace the document's characters [start, end) with `text`, in string offsets of
  the snapshot it was computed for. Ghost text is an `Edit` at the cursor (empty, or over the auto-closed
  brackets it types over); a next-edit suggestion is an `Edit` over a region. Post-processing makes them,
  the server turns the offsets into the client's positions: one type end to end.
* `DocumentChange`: one `didChange` content change as the document store applied it (offsets in the text
  before it, the text it replaced and the text it inserted), emitted to the service as an event.
* `EditHistory`: each document's recent edits, coalesced by time and place (keystrokes typing one word are one
  edit; an edit 40 lines away, or after a pause, is another), bounded in memory, rendered as unified diffs
  (the form next-edit models read), with the suggestions shown, accepted and rejected. `regions()` is the
  view snippets use: where the user edited lately. A change that applies the next edit last proposed for the
  document is recorded as an edit of its own, never merged into the one before: the accepted substitution is
  then the last edit, so the next suggestion carries it on to the following occurrence.
"""

from __future__ import annotations

import difflib
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field, replace
from typing import Literal

COALESCE_SECONDS = 2.0  # a change within this long of the last, at the same place, extends the same edit
COALESCE_LINES = 2  # "the same place": touching the edit's lines, or this many lines from them
MAX_EDITS = 32  # per document: older edits are dropped
MAX_EDIT_LINES = 120  # an edit spanning more lines (a paste, a reformat) is kept as its first lines only
MAX_SUGGESTIONS = 32


@dataclass(frozen=True)
class Edit:
    start: int  # string offsets in the snapshot the edit was computed for
    end: int
    text: str

    def __post_init__(self) -> None:
        assert 0 <= self.start <= self.end, f"an edit's range must be ordered, got {self.start}..{self.end}"

    def apply(self, document: str) -> str:
        return document[: self.start] + self.text + document[self.end:]

    def shifted(self, by: int) -> Edit:
        return Edit(self.start + by, self.end + by, self.text)


@dataclass(frozen=True)
class DocumentChange:
    """One content change of a `didChange`, in the text as it was before the change."""

    uri: str
    version: int
    start: int
    end: int
    old: str  # the replaced text
    new: str  # the inserted text
    before: str  # the whole document before the change (a reference: the store already holds the string)
    at: float = field(default_factory=time.monotonic)

    @property
    def after(self) -> str:
        return self.before[: self.start] + self.new + self.before[self.end:]


@dataclass
class HistoryEdit:
    """One coalesced edit: lines [start_line, start_line + len(old_lines)) of the document before it became
    `new_lines`, which start at `start_line` in the document now."""

    uri: str
    start_line: int
    old_lines: list[str]
    new_lines: list[str]
    first_at: float
    last_at: float

    def diff(self, path: str = "") -> str:
        """A unified diff of this edit (line numbers of the document before and after it)."""
        header = [f"--- a/{path}", f"+++ b/{path}"] if path else []
        return "\n".join(header + _hunks(self.old_lines, self.new_lines, self.start_line))

    @property
    def changed(self) -> bool:
        return self.old_lines != self.new_lines


SuggestionState = Literal["shown", "accepted", "rejected"]


@dataclass(frozen=True)
class SuggestionNote:
    uri: str
    kind: str  # "completion" | "edit"
    edit: Edit
    state: SuggestionState
    at: float


@dataclass
class Proposal:
    """The next edit last proposed for a document, with the text it was computed on."""

    text: str
    edit: Edit
    counted: bool = False  # its acceptance was counted already (the client's command came first)

    def applied_by(self, change: DocumentChange) -> bool:
        """`change` turns the proposal's text into that text with the edit applied (however the client split it)."""
        edit = self.edit
        if len(change.before) != len(self.text) or len(change.new) - (change.end - change.start) != len(
                edit.text) - (edit.end - edit.start):
            return False
        return change.before == self.text and change.after == edit.apply(self.text)


class EditHistory:
    """Every open document's recent edits, newest last (thread-safe: the event loop records, the worker reads)."""

    def __init__(self, max_edits: int = MAX_EDITS):
        self.max_edits = max_edits
        self._edits: OrderedDict[str, list[HistoryEdit]] = OrderedDict()
        self._suggestions: list[SuggestionNote] = []
        self._proposals: dict[str, Proposal] = {}
        self._lock = threading.Lock()

    def proposed(self, uri: str, text: str, edit: Edit) -> None:
        """The server proposed `edit` on `text` (the document as it was): a change that applies it is accepting it."""
        with self._lock:
            self._proposals[uri] = Proposal(text, edit)

    def accepted_edit(self, uri: str, edit: Edit) -> bool:
        """The client says it applied the proposed `edit`; True the first time an acceptance of it is heard."""
        with self._lock:
            proposal = self._proposals.get(uri)
            first = proposal is not None and proposal.edit == edit and not proposal.counted
            if proposal is not None and first:
                proposal.counted = True  # kept: the didChange that applies it may still come
        self.note_suggestion(uri, "edit", edit, "accepted")
        return first

    def record(self, change: DocumentChange) -> bool:
        """Record one change; True when it accepted the proposed next edit and that was not counted yet."""
        with self._lock:
            proposal = self._proposals.pop(change.uri, None)  # any change makes a proposal stale
        applied = proposal is not None and proposal.applied_by(change)
        first = applied and proposal is not None and not proposal.counted
        if first and proposal is not None:
            self.note_suggestion(change.uri, "edit", proposal.edit, "accepted")
        self._record(change, own_edit=applied)
        return first

    def _record(self, change: DocumentChange, own_edit: bool) -> None:
        before_lines = change.before.split("\n")
        first = change.before.count("\n", 0, change.start)
        last = first + change.old.count("\n")  # the last line the change touches, before it
        added = change.new.count("\n") - change.old.count("\n")
        after_lines = before_lines[:first] + _lines_between(change, first, last) + before_lines[last + 1:]
        first, last = _trimmed(before_lines, after_lines, first, last, added)
        with self._lock:
            edits = self._edits.setdefault(change.uri, [])
            self._edits.move_to_end(change.uri)
            latest = edits[-1] if edits else None
            for edit in edits:  # edits below the change move with it
                if edit is not latest and edit.start_line > last:
                    edit.start_line += added
            if latest is not None and not own_edit and _same_place(latest, first, last, change.at):
                _extend(latest, before_lines, after_lines, first, last, added, change.at)
                if not latest.changed:  # typed and deleted again: no edit left
                    edits.pop()
            else:
                if latest is not None and latest.start_line > last:
                    latest.start_line += added
                new = HistoryEdit(change.uri, first, before_lines[first:last + 1],
                                  after_lines[first:last + 1 + added], change.at, change.at)
                if new.changed:
                    edits.append(_bounded(new))
            del edits[: max(0, len(edits) - self.max_edits)]

    def edits(self, uri: str) -> list[HistoryEdit]:
        """The document's edits, oldest first, as copies (the event loop goes on recording meanwhile)."""
        with self._lock:
            return [replace(edit, old_lines=list(edit.old_lines), new_lines=list(edit.new_lines))
                    for edit in self._edits.get(uri, [])]

    def diffs(self, uri: str, path: str = "", limit: int = 8) -> list[str]:
        """The document's last `limit` edits as unified diffs, oldest first."""
        return [edit.diff(path) for edit in self.edits(uri)[-limit:]]

    def regions(self, limit: int = 16) -> list[tuple[str, int]]:
        """(uri, line) of the latest edits across documents, newest last: where the user worked lately."""
        with self._lock:
            found = sorted(((edit.last_at, uri, edit.start_line) for uri, edits in self._edits.items()
                            for edit in edits), key=lambda item: item[0])
        return [(uri, line) for _, uri, line in found[-limit:]]

    def note_suggestion(self, uri: str, kind: str, edit: Edit, state: SuggestionState) -> None:
        with self._lock:
            self._suggestions = [*self._suggestions, SuggestionNote(uri, kind, edit, state, time.monotonic())
                                 ][-MAX_SUGGESTIONS:]

    def suggestions(self, uri: str) -> list[SuggestionNote]:
        with self._lock:
            return [note for note in self._suggestions if note.uri == uri]

    def forget(self, uri: str) -> None:
        with self._lock:
            self._edits.pop(uri, None)
            self._proposals.pop(uri, None)
            self._suggestions = [note for note in self._suggestions if note.uri != uri]


def line_end(text: str, line: int) -> int:
    """The offset where 0-based `line` of `text` ends (before its newline); the text's end past its last line."""
    start = 0
    for _ in range(line):
        found = text.find("\n", start)
        if found == -1:
            return len(text)
        start = found + 1
    found = text.find("\n", start)
    return len(text) if found == -1 else found


def _lines_between(change: DocumentChange, first: int, last: int) -> list[str]:
    """The lines `first`..`last` of the document before the change, as the change left them."""
    line_start = change.before.rfind("\n", 0, change.start) + 1
    line_end = change.before.find("\n", change.end)
    line_end = len(change.before) if line_end == -1 else line_end
    text = change.before[line_start:change.start] + change.new + change.before[change.end:line_end]
    return text.split("\n")


def _trimmed(before: list[str], after: list[str], first: int, last: int, added: int) -> tuple[int, int]:
    """The lines a change really touched: lines it left as they were at either end are not part of it (a line
    inserted at the start of another leaves that one intact; it only moves). `last` < `first`: a pure insertion.
    The change's lines are `first`..`last` before it and `first`..`last + added` after it; trimming stops when
    either runs out (a deletion that ends the file leaves fewer lines after than the loop would compare)."""
    while first <= min(last, last + added) and before[first] == after[first]:
        first += 1
    while last >= first and last + added >= first and before[last] == after[last + added]:
        last -= 1
    return first, last


def _same_place(edit: HistoryEdit, first: int, last: int, at: float) -> bool:
    if at - edit.last_at > COALESCE_SECONDS:
        return False
    end = edit.start_line + len(edit.new_lines) - 1
    return first <= end + COALESCE_LINES and last >= edit.start_line - COALESCE_LINES


def _extend(edit: HistoryEdit, before: list[str], after: list[str], first: int, last: int, added: int,
            at: float) -> None:
    """Grow `edit` over the change at lines `first`..`last` of `before` (the document `edit` already led to)."""
    start, end = edit.start_line, edit.start_line + len(edit.new_lines)  # [start, end) in `before`
    low, high = min(start, first), max(end, last + 1)
    edit.old_lines = before[low:start] + edit.old_lines + before[end:high]
    edit.new_lines = after[low:high + added]
    edit.start_line, edit.last_at = low, at
    _bounded(edit)


def _bounded(edit: HistoryEdit) -> HistoryEdit:
    edit.old_lines, edit.new_lines = edit.old_lines[:MAX_EDIT_LINES], edit.new_lines[:MAX_EDIT_LINES]
    return edit


def _hunks(old: list[str], new: list[str], start_line: int) -> list[str]:
    """Unified-diff hunks of `old` -> `new` (no context lines), numbered from `start_line` (0-based)."""
    lines: list[str] = []
    for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(None, old, new, autojunk=False).get_opcodes():
        if tag == "equal":
            continue
        lines.append(f"@@ -{_span(start_line + i1, i2 - i1)} +{_span(start_line + j1, j2 - j1)} @@")
        lines += [f"-{line}" for line in old[i1:i2]] + [f"+{line}" for line in new[j1:j2]]
    return lines


def _span(start: int, count: int) -> str:
    """A hunk range in unified-diff form: 1-based start, and an empty range names the line before it."""
    return f"{start + 1 if count else start},{count}"
