"""Drafting end to end: `dglsp.draft` streams progress and applies one edit; cancelling applies nothing."""

from __future__ import annotations

import asyncio

import pytest
from lsprotocol import types
from test_server_e2e import SOURCE, URI, inline_params, open_document, record_previews, start

from dglsp.lsp.server import progress_summary

pytestmark = pytest.mark.e2e

# One canvas of 128 tokens at 512 steps takes seconds even on a quiet machine: the cancel lands mid-canvas.
SLOW = {"sampler": {"confidence_threshold": 1e-9},
        "draft": {"max_tokens": 4096, "canvas_length": 128, "max_steps": 512}}


async def wait_for_draft_progress(client) -> str:
    for _ in range(600):
        tokens = [t for t in client.progress_reports if str(t).startswith("dglsp/draft/")]
        if tokens:
            return tokens[0]
        await asyncio.sleep(0.05)
    raise AssertionError("the draft never began its progress")


def record_edits(client) -> list[types.ApplyWorkspaceEditParams]:
    edits: list[types.ApplyWorkspaceEditParams] = []

    @client.feature(types.WORKSPACE_APPLY_EDIT)
    def apply_edit(params: types.ApplyWorkspaceEditParams) -> types.ApplyWorkspaceEditResult:
        edits.append(params)
        return types.ApplyWorkspaceEditResult(applied=True)

    return edits


def draft_params(line: int, character: int) -> types.ExecuteCommandParams:
    return types.ExecuteCommandParams(command="dglsp.draft", arguments=[
        {"uri": URI, "position": {"line": line, "character": character}}])


async def test_draft_command_streams_progress_and_applies_one_versioned_edit(tiny_model_dir):
    client = await start(tiny_model_dir, {"sampler": {"seed": 3}, "draft": {"max_tokens": 48}}, previews=True)
    previews = record_previews(client)
    edits = record_edits(client)
    open_document(client)
    result = await client.workspace_execute_command_async(draft_params(2, 11))
    drafts = [token for token in client.progress_reports if str(token).startswith("dglsp/draft/")]
    assert drafts, "the draft reported no progress"
    reports = client.progress_reports[drafts[0]]
    assert isinstance(reports[0], types.WorkDoneProgressBegin) and reports[0].cancellable
    assert isinstance(reports[-1], types.WorkDoneProgressEnd)
    if result["applied"]:
        assert len(edits) == 1
        change = edits[0].edit.document_changes[0]
        assert change.text_document.version == 1 and change.text_document.uri == URI
        assert change.edits[0].new_text == result["text"] and result["text"].strip()
        assert change.edits[0].range.start == types.Position(2, 11)
        committed = [r for r in reports if isinstance(r, types.WorkDoneProgressReport)]
        assert committed and committed[-1].message == progress_summary(result["text"])
        # The draft itself streams on the preview channel, whole, and ends with the text applied.
        for _ in range(50):
            if previews and previews[-1].done:
                break
            await asyncio.sleep(0.05)
        drafted = [p for p in previews if p.kind == "draft"]
        assert drafted[-1].done and drafted[-1].text == result["text"]
        assert [p.text for p in drafted if not p.done][-1] == result["text"]
        assert drafted[-1].range.start.line == 2 and drafted[-1].range.start.character == 11
    else:
        assert edits == [] and result["text"] == ""
    await client.shutdown_session()
    await client.stop()


async def test_cancelled_draft_applies_nothing(tiny_model_dir):
    client = await start(tiny_model_dir, SLOW)
    edits = record_edits(client)
    open_document(client)
    pending = asyncio.ensure_future(client.workspace_execute_command_async(draft_params(2, 11)))
    await wait_for_draft_progress(client)
    await asyncio.sleep(0.3)
    request_id = max(client.protocol._request_futures, key=lambda key: str(key))
    client.protocol.notify(types.CANCEL_REQUEST, types.CancelParams(id=request_id))
    with pytest.raises(Exception, match="cancel"):
        await asyncio.wait_for(pending, 15)
    await asyncio.sleep(0.5)
    assert edits == []
    # The draft's job was stopped, not left running on the device until the next edit.
    for _ in range(100):
        if any("greet.py" in m.message and "cancelled: by the client" in m.message for m in client.log_messages):
            break
        await asyncio.sleep(0.05)
    else:
        raise AssertionError("the cancelled draft went on running")
    await client.shutdown_session()
    await client.stop()


async def test_progress_cancel_button_stops_the_draft(tiny_model_dir):
    client = await start(tiny_model_dir, SLOW)
    edits = record_edits(client)
    open_document(client)
    pending = asyncio.ensure_future(client.workspace_execute_command_async(draft_params(2, 11)))
    token = await wait_for_draft_progress(client)
    await asyncio.sleep(0.3)
    client.protocol.notify(types.WINDOW_WORK_DONE_PROGRESS_CANCEL, types.WorkDoneProgressCancelParams(token=token))
    result = await asyncio.wait_for(pending, 15)
    assert result == {"applied": False, "text": ""}
    assert edits == []
    # Stopped on the device, or by the flag before its first step: either way the user's cancel is the reason.
    assert any("greet.py" in m.message and "cancelled: by the user" in m.message for m in client.log_messages)
    await client.shutdown_session()
    await client.stop()


async def test_invoked_inline_completion_drafts_across_canvases(tiny_model_dir):
    client = await start(tiny_model_dir, {"sampler": {"seed": 5}, "draft": {"max_tokens": 64, "max_steps": 4}})
    open_document(client, SOURCE)
    params = inline_params(2, 11)
    params.context.trigger_kind = types.InlineCompletionTriggerKind.Invoked
    result = await client.text_document_inline_completion_async(params)
    assert isinstance(result, types.InlineCompletionList)
    line = next(m.message for m in client.log_messages if "greet.py" in m.message)
    # 64 tokens at canvas 16: up to 4 canvases; the log shows more than one unless the draft ended early.
    assert "canvases" in line or "empty" in line or result.items
    await client.shutdown_session()
    await client.stop()
