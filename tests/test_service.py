"""The completion service without LSP: a real pygls workspace, snapshots and string offsets."""

from __future__ import annotations

import pytest
from lsprotocol import types
from pygls.workspace import Workspace

from dglsp.completion.service import CompletionService, Found
from dglsp.config import Settings
from dglsp.errors import ModelNotReadyError
from dglsp.lsp.documents import WorkspaceDocuments, snapshot

URI = "file:///w/ä.py"
TEXT = "def add(a, b):\n    return \n"
CURSOR = TEXT.index("return ") + len("return ")

pytestmark = pytest.mark.usefixtures("one_thread")


def service_over(text: str, settings: Settings | None = None) -> tuple[CompletionService, Workspace, list[str]]:
    workspace = Workspace(None)
    workspace.put_text_document(types.TextDocumentItem(URI, "python", 1, text))
    lines: list[str] = []
    service = CompletionService(settings or Settings(), WorkspaceDocuments(lambda: workspace), on_log=lines.append)
    return service, workspace, lines


def edit(workspace: Workspace, text: str, version: int) -> None:
    workspace.update_text_document(types.VersionedTextDocumentIdentifier(uri=URI, version=version),
                                   types.TextDocumentContentChangeWholeDocument(text=text))


async def test_typing_through_answers_with_no_model_loaded():
    service, workspace, lines = service_over(TEXT)
    service.typing_through.remember(URI, TEXT, CURSOR, "a + b")
    typed = TEXT[:CURSOR] + "a" + TEXT[CURSOR:]
    edit(workspace, typed, 2)
    assert await service.suggest(snapshot(workspace, URI), CURSOR + 1) == Found(" + b")
    assert service.metrics.typing_through_served == 1 and "no model run" in lines[-1]
    # Anything else needs the model, which was never loaded: a clear error, not a hang.
    with pytest.raises(ModelNotReadyError):
        await service.suggest(snapshot(workspace, URI), 0)


async def test_closing_a_document_forgets_what_it_remembered():
    service, workspace, _ = service_over(TEXT)
    service.typing_through.remember(URI, TEXT, CURSOR, "a + b")
    service.document_closed(URI)
    assert service.typing_through.peek(URI, TEXT, CURSOR) is None


async def test_a_document_edited_while_the_model_loads_gets_no_suggestion(tiny_model_dir):
    settings, _ = Settings().updated({"engine": {"model": str(tiny_model_dir), "device": "cpu"}})
    service, workspace, lines = service_over(TEXT, settings)
    before = snapshot(workspace, URI)
    service.start_loading()
    edit(workspace, TEXT + "# more\n", 2)
    assert await service.suggest(before, CURSOR) is None
    assert "document changed to version 2" in lines[-1]
    assert service.status()["ready"] and service.metrics.requests == 1
