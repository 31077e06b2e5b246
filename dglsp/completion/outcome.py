"""Why nothing is shown: one typed reason for every request that ends without a suggestion.

A suggestion that silently never comes looks, in the editor, exactly like a slow or broken server.
So every path that ends a request empty names a `Reason`: the scheduler's cancellations (superseded,
cancelled, the document moved on), post-processing's filters (which one dropped the text), the
confidence gate (with the number), the model not being ready (loading, with its progress; or failed)
and the backend's errors (with the server's message). `NoSuggestion` carries it to the server, which
sends it to the editor; `OutcomeCounts` counts each one for `dglsp/status`.
"""

from __future__ import annotations

import threading
from collections import Counter
from dataclasses import dataclass
from enum import StrEnum


class Reason(StrEnum):
    # the request was stopped
    SUPERSEDED = "superseded"  # a newer request for the same document and kind
    CANCELLED = "cancelled"  # the client or the user cancelled it
    DOCUMENT_CHANGED = "document_changed"  # the document moved past the version it was asked for
    DOCUMENT_CLOSED = "document_closed"
    PREEMPTED = "preempted"  # background work stopped by a request the user waits for
    SHUTDOWN = "shutdown"
    # the model wrote nothing worth showing (post-processing's filters, by name)
    EMPTY = "empty"  # nothing but whitespace, or the end of the block at once
    REPEAT = "repeat"  # repeated the code below the cursor, the line above, or itself
    UNPARSABLE = "unparsable"  # left more syntax errors than the empty gap
    BRACKETS = "brackets"  # nothing left once over-closing brackets were cut
    LOW_CONFIDENCE = "low_confidence"  # below the confidence gate
    NO_EDIT = "no_edit"  # a next-edit request: the model rewrote no region differently
    # the model could not run
    LOADING = "loading"
    LOAD_FAILED = "load_failed"
    BACKEND_ERROR = "backend_error"  # the remote server failed (down, refused the key, errored)
    ERROR = "error"  # a bug: logged with its traceback

    @property
    def stopped(self) -> bool:
        """The request was stopped before it could finish: the user moved on, not the model."""
        return self in _STOPPED


_STOPPED = frozenset({Reason.SUPERSEDED, Reason.CANCELLED, Reason.DOCUMENT_CHANGED, Reason.DOCUMENT_CLOSED,
                      Reason.PREEMPTED, Reason.SHUTDOWN})


@dataclass(frozen=True)
class NoSuggestion:
    """A request that ends empty, and why; `detail` is for the user ("confidence 0.41 < 0.73", the server's
    message, the loading stage)."""

    reason: Reason
    detail: str = ""

    def describe(self) -> str:
        return f"{self.reason.value}: {self.detail}" if self.detail else self.reason.value


class OutcomeCounts:
    """How often each reason ended a request, and how many requests showed something (thread-safe: the worker
    thread and the event loop both count)."""

    def __init__(self) -> None:
        self._counts: Counter[str] = Counter()
        self._lock = threading.Lock()

    def add(self, outcome: Reason | str) -> None:
        with self._lock:
            self._counts[str(outcome)] += 1

    def as_dict(self) -> dict[str, int]:
        with self._lock:
            return dict(self._counts)
