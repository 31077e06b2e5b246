"""The completion service without LSP: a real pygls workspace, snapshots and string offsets."""

from __future__ import annotations

import asyncio

import pytest
from lsprotocol import types
from pygls.workspace import Workspace

from dglsp.completion.edits import Edit
from dglsp.completion.outcome import NoSuggestion, Reason
from dglsp.completion.service import CompletionService
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
    assert await service.suggest(snapshot(workspace, URI), CURSOR + 1) == Edit(CURSOR + 1, CURSOR + 1, " + b")
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
    hidden = await service.suggest(before, CURSOR)
    assert isinstance(hidden, NoSuggestion) and hidden.reason is Reason.DOCUMENT_CHANGED
    assert "document changed to version 2" in lines[-1]
    assert service.status()["ready"] and service.metrics.requests == 1


async def test_status_says_what_ghost_text_and_drafts_run_with_and_the_gates_share(tiny_model_dir):
    settings, _ = Settings().updated({"engine": {"model": str(tiny_model_dir), "device": "cpu", "warmup": False},
                                      "postprocess": {"min_confidence": 1.0, "hide_unparsable": False},
                                      "sampler": {"max_steps": 2, "seed": 0}})
    service, workspace, _ = service_over(TEXT, settings)
    await asyncio.wrap_future(service.start_loading())
    schedule = service.status()["schedule"]
    assert schedule["ghost_text"]["canvas_length"] == 32 and schedule["ghost_text"]["max_steps"] == 2
    assert "set in your settings" in schedule["ghost_text"]["why"]
    assert schedule["draft"]["canvas_length"] == 16  # the tiny model's own canvas
    assert schedule["draft"]["max_steps"] == 24 and "the model's own" in schedule["draft"]["why"]
    hidden = await service.suggest(snapshot(workspace, URI), CURSOR)  # random weights: below any gate of 1
    assert isinstance(hidden, NoSuggestion) and hidden.reason is Reason.LOW_CONFIDENCE
    gate = service.status()["gate"]
    assert gate["min_confidence"] == 1.0 and gate["hidden"] == 1 and gate["hidden_share"] == 1.0
    status = service.status()  # why nothing showed, for the editor's status line
    assert status["outcomes"] == {"low_confidence": 1} and status["state"] == "ready"
    assert status["last"]["reason"] == "low_confidence" and "< 1.00" in status["last"]["detail"]
