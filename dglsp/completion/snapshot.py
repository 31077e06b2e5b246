"""What the completion layer knows of documents: versioned snapshots, read through a `DocumentReader`.

The LSP layer keeps the open documents (pygls' workspace) and hands the service a reader over them,
so nothing below the LSP layer knows pygls.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol
from urllib.parse import unquote, urlparse


@dataclass(frozen=True)
class Snapshot:
    uri: str
    version: int
    text: str
    language_id: str

    @property
    def path(self) -> str:
        parsed = urlparse(self.uri)
        return unquote(parsed.path) if parsed.scheme == "file" else self.uri


class DocumentReader(Protocol):
    def get(self, uri: str) -> Snapshot:
        """The open document's current snapshot; `InvalidRequestError` for a document that is not open."""
        ...

    def version(self, uri: str) -> int | None:
        """The open document's current version (None once it is closed), without taking a snapshot."""
        ...

    def all(self) -> list[Snapshot]:
        """Every open document (for snippets of the other files)."""
        ...
