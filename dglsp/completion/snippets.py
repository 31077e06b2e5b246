"""Context beyond the cursor window: snippets of other open documents and of recently edited regions.

The server records each document's edits (`edits.EditHistory`; as llama.vim keeps a ring of
chunks) and, for a request, hands `pick_snippets` the other open documents and where the user
edited lately. Candidates are chunks of `snippet_lines` lines; each is scored by the Jaccard
similarity of its identifiers to those around the cursor (Copilot's "neighbouring tabs"),
recent edits get a small bonus, and the best `max_snippets` above a floor are returned,
most similar last. The prompt builder packs them into their own token budget.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from dglsp.completion.prompt import CursorContext, Snippet
from dglsp.config import ContextSettings

IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]{2,}")
MIN_SIMILARITY = 0.05  # below this a snippet is noise that costs prompt tokens
RECENT_BONUS = 0.1  # code the user just edited is likely what they are working with
MAX_DOCUMENT_CHARS = 500_000  # larger buffers (logs, generated code) are not worth scanning per request
QUERY_LINES = 20  # lines before the cursor (and half as many after) that define "the code around the cursor"


@dataclass(frozen=True)
class OpenDocument:
    uri: str
    path: str
    language_id: str
    text: str


@dataclass(frozen=True)
class _Candidate:
    score: float
    uri: str
    first_line: int
    snippet: Snippet


def identifiers(text: str) -> set[str]:
    return set(IDENTIFIER.findall(text))


def jaccard(a: set[str], b: set[str]) -> float:
    return len(a & b) / len(a | b) if a and b else 0.0


def pick_snippets(
    uri: str,
    context: CursorContext,
    documents: Iterable[OpenDocument],
    settings: ContextSettings,
    recent: list[tuple[str, int]] | None = None,
) -> tuple[Snippet, ...]:
    """The snippets most similar to the code around the cursor, most similar last."""
    if settings.max_snippets <= 0:
        return ()
    query = identifiers(_around_cursor(context))
    if not query:
        return ()
    window = context.prefix + context.suffix
    by_uri = {doc.uri: doc for doc in documents if len(doc.text) <= MAX_DOCUMENT_CHARS}
    candidates: list[_Candidate] = []
    for doc in by_uri.values():
        if doc.uri == uri or (context.language_id and doc.language_id and doc.language_id != context.language_id):
            continue
        candidates += _chunks(doc, query, settings.snippet_lines, window)
    for region_uri, line in recent or []:
        region_doc = by_uri.get(region_uri)
        if region_doc is not None:
            first = max(0, line - settings.snippet_lines // 2)
            candidate = _score(region_doc, region_doc.text.split("\n"), first, settings.snippet_lines, query, window,
                               RECENT_BONUS)
            if candidate is not None:
                candidates.append(candidate)
    return tuple(c.snippet for c in reversed(_best(candidates, settings.max_snippets, settings.snippet_lines)))


def _around_cursor(context: CursorContext) -> str:
    before = context.prefix.split("\n")[-QUERY_LINES:]
    after = context.suffix.split("\n")[: QUERY_LINES // 2]
    return "\n".join(before + after)


def _chunks(doc: OpenDocument, query: set[str], size: int, window: str) -> list[_Candidate]:
    lines = doc.text.split("\n")
    step = max(1, size // 2)
    found = []
    for first in range(0, max(1, len(lines) - step), step):
        candidate = _score(doc, lines, first, size, query, window, 0.0)
        if candidate is not None:
            found.append(candidate)
    return found


def _score(doc: OpenDocument, lines: list[str], first: int, size: int, query: set[str], window: str,
           bonus: float) -> _Candidate | None:
    text = "\n".join(lines[first: first + size]).strip("\n")
    if not text.strip() or text in window:  # already in the prompt (a recent edit near the cursor)
        return None
    score = jaccard(identifiers(text), query)
    if score < MIN_SIMILARITY:
        return None
    return _Candidate(score + bonus, doc.uri, first, Snippet(doc.path or doc.uri, text))


def _best(candidates: list[_Candidate], count: int, size: int) -> list[_Candidate]:
    """Highest scores first, skipping chunks that overlap one already chosen."""
    chosen: list[_Candidate] = []
    for candidate in sorted(candidates, key=lambda c: -c.score):
        if any(c.uri == candidate.uri and abs(c.first_line - candidate.first_line) < size for c in chosen):
            continue
        chosen.append(candidate)
        if len(chosen) == count:
            break
    return chosen
