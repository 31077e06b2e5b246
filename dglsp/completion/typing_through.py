"""Typing-through: answer from the suggestion already on screen while the user types what it says.

Contract: `remember(uri, text, offset, suggestion)` after a suggestion is shown; `lookup(uri,
text, offset)` before running the model. The cache is keyed by the context around the
cursor (the text just before it and the text after it), as llama.vim keys its cache by a
hash of the context. `lookup` looks back over up to `lookback` just-typed characters: if
the context minus those characters was shown a suggestion that starts with them, the
rest of that suggestion is the answer, and no model runs. If the typed characters
diverge from it, the entry is dropped. Works on text only (no tensors, no LSP).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass

# How much context identifies a cursor position: enough that two places in a file rarely collide,
# small enough that a lookup over `lookback` characters costs microseconds on a huge file.
BEFORE_CHARS = 512
AFTER_CHARS = 256


@dataclass
class TypingThroughStats:
    lookups: int = 0
    hits: int = 0
    dropped: int = 0  # entries dropped because the user typed something else

    @property
    def hit_rate(self) -> float:
        return self.hits / self.lookups if self.lookups else 0.0


def context_key(uri: str, text: str, offset: int) -> tuple[str, str, str]:
    return uri, text[max(0, offset - BEFORE_CHARS):offset], text[offset:offset + AFTER_CHARS]


class TypingThroughCache:
    def __init__(self, lookback: int = 64, capacity: int = 512):
        self.lookback = lookback
        self.capacity = capacity
        self.stats = TypingThroughStats()
        self._entries: OrderedDict[tuple[str, str, str], str] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    def remember(self, uri: str, text: str, offset: int, suggestion: str) -> None:
        if not suggestion:
            return
        key = context_key(uri, text, offset)
        with self._lock:
            self._entries[key] = suggestion
            self._entries.move_to_end(key)
            while len(self._entries) > self.capacity:
                self._entries.popitem(last=False)

    def peek(self, uri: str, text: str, offset: int) -> str | None:
        """The suggestion remembered for exactly this context (no look-back, no stats)."""
        with self._lock:
            return self._entries.get(context_key(uri, text, offset))

    def lookup(self, uri: str, text: str, offset: int) -> str | None:
        """The rest of a shown suggestion the user has been typing through, or None."""
        self.stats.lookups += 1
        after = text[offset:offset + AFTER_CHARS]
        for typed_count in range(0, min(self.lookback, offset) + 1):
            start = offset - typed_count
            key = (uri, text[max(0, start - BEFORE_CHARS):start], after)
            with self._lock:
                suggestion = self._entries.get(key)
                if suggestion is None:
                    continue
                typed = text[start:offset]
                rest = suggestion[len(typed):]
                if not suggestion.startswith(typed) or not rest.strip():
                    # Diverged (or typed it all): that suggestion is no longer on screen.
                    del self._entries[key]
                    self.stats.dropped += not suggestion.startswith(typed)
                    return None
                self._entries.move_to_end(key)
            self.stats.hits += 1
            # Remember the new position too, so the next keystroke needs no look-back.
            self.remember(uri, text, offset, rest)
            return rest
        return None

    def forget(self, uri: str) -> None:
        with self._lock:
            for key in [key for key in self._entries if key[0] == uri]:
                del self._entries[key]


def after_acceptance(text: str, offset: int, suggestion: str) -> tuple[str, int]:
    """The document and cursor once `suggestion` (shown at `offset`) is accepted.

    Editors apply the edit and run the accept command in either order: if the text at the
    cursor already is the suggestion, it was applied and only the cursor moves.
    """
    if text.startswith(suggestion, offset):
        return text, offset + len(suggestion)
    return text[:offset] + suggestion + text[offset:], offset + len(suggestion)
