"""Latency features end to end: typing-through, speculation after accept, live canvas, stats, deadlines."""

from __future__ import annotations

import asyncio

import pytest
from lsprotocol import types
from test_server_e2e import SOURCE, URI, inline_params, open_document, record_previews, start

from dglsp.config import ContextSettings

pytestmark = pytest.mark.e2e

# Random weights: try a few seeds/positions until the model offers something to type through.
CANDIDATES = [(2, 11), (1, 4), (4, 0), (0, 17)]


def position_of(text: str, offset: int) -> types.Position:
    line = text.count("\n", 0, offset)
    return types.Position(line, offset - (text.rfind("\n", 0, offset) + 1))  # ASCII lines: characters = UTF-16


def offset_of(text: str, position: types.Position) -> int:
    return sum(len(line) + 1 for line in text.split("\n")[: position.line]) + position.character


def change(client, text: str, version: int) -> None:
    client.text_document_did_change(types.DidChangeTextDocumentParams(
        text_document=types.VersionedTextDocumentIdentifier(uri=URI, version=version),
        content_changes=[types.TextDocumentContentChangeWholeDocument(text=text)]))


async def first_suggestion(client) -> tuple[types.Position, types.InlineCompletionItem]:
    for line, character in CANDIDATES:
        result = await client.text_document_inline_completion_async(inline_params(line, character))
        if result.items and len(result.items[0].insert_text) >= 2:
            return types.Position(line, character), result.items[0]
    pytest.skip("the random tiny model offered nothing at any candidate position")


async def test_typing_the_suggestion_is_answered_without_the_model(tiny_model_dir):
    client = await start(tiny_model_dir, {"sampler": {"seed": 1}})
    open_document(client)
    position, item = await first_suggestion(client)
    assert item.command is not None and item.command.command == "dglsp.accepted"
    offset = offset_of(SOURCE, position)
    typed = item.insert_text[0]
    text = SOURCE[:offset] + typed + SOURCE[offset:]
    change(client, text, 2)
    result = await client.text_document_inline_completion_async(inline_params(*_tuple(position_of(text, offset + 1))))
    assert [i.insert_text for i in result.items] == [item.insert_text[1:]]
    served = [m.message for m in client.log_messages if "typing-through" in m.message]
    assert served and "no model run" in served[-1] and "prefill" not in served[-1]
    # Diverging drops it: the next answer comes from the model (its log line has the prefill timings).
    text = SOURCE[:offset] + "\u00a7" + SOURCE[offset:]
    change(client, text, 3)
    await client.text_document_inline_completion_async(inline_params(*_tuple(position_of(text, offset + 1))))
    assert "prefill" in client.log_messages[-1].message
    await client.shutdown_session()
    await client.stop()


async def test_accept_speculates_the_next_suggestion_and_stats_report_it(tiny_model_dir):
    client = await start(tiny_model_dir, {"sampler": {"seed": 2, "max_steps": 6}})
    open_document(client)
    position, item = await first_suggestion(client)
    await client.workspace_execute_command_async(types.ExecuteCommandParams(
        command=item.command.command, arguments=item.command.arguments))
    stats: dict = {}
    for _ in range(1200):  # generous: a loaded CI machine can take seconds per denoising step
        stats = await client.workspace_execute_command_async(types.ExecuteCommandParams(command="dglsp.stats"))
        if stats["forward_passes_prefetch"]:
            break
        await asyncio.sleep(0.1)
    assert stats["prefetch_runs"] == 1 and stats["forward_passes_prefetch"] > 0
    assert stats["shown"] >= 1 and stats["forward_passes_shown"] > 0
    assert stats["prefix_cache"]["lookups"] >= 2 and stats["memory"]["rss_mb"] > 0
    # The speculation ran on the accepted text: the prefix cache now holds it, so a request there reuses it.
    offset = offset_of(SOURCE, position) + len(item.insert_text)
    text = SOURCE[: offset - len(item.insert_text)] + item.insert_text + SOURCE[offset - len(item.insert_text):]
    change(client, text, 2)
    await client.text_document_inline_completion_async(inline_params(*_tuple(position_of(text, offset))))
    last = client.log_messages[-1].message
    assert "typing-through" in last or "cached" in last
    await client.shutdown_session()
    await client.stop()


async def test_live_canvas_streams_intermediate_canvases(tiny_model_dir):
    client = await start(tiny_model_dir, {"sampler": {"seed": 1, "max_steps": 6, "confidence_threshold": 1e-9},
                                          "latency": {"live_canvas": True, "live_canvas_interval_ms": 0}},
                         previews=True)
    canvases = record_previews(client)
    open_document(client)
    result = await client.text_document_inline_completion_async(inline_params(2, 11))
    for _ in range(50):
        if canvases and canvases[-1].done:
            break
        await asyncio.sleep(0.05)
    steps = [c.passes for c in canvases if not c.done]
    assert steps == list(range(1, 7))
    assert canvases[-1].done and canvases[-1].text == (result.items[0].insert_text if result.items else "")
    assert canvases[-1].uri == URI and canvases[-1].range.start.line == 2 and canvases[-1].kind == "completion"
    if not result.items:  # nothing shown: the preview's end says why
        assert canvases[-1].reason
    await client.shutdown_session()
    await client.stop()


async def test_deadline_answers_with_the_draft_so_far(tiny_model_dir):
    slow = {"sampler": {"canvas_length": 64, "max_steps": 512, "confidence_threshold": 1e-9},
            "latency": {"deadline_ms": 300}}
    client = await start(tiny_model_dir, slow)
    open_document(client)
    await client.text_document_inline_completion_async(inline_params(2, 11))
    # This schedule never converges: without the deadline it would run all 512 steps.
    finished = [m.message for m in client.log_messages if "greet.py" in m.message]
    assert "[deadline]" in finished[-1] and "512 steps" not in finished[-1]
    await client.shutdown_session()
    await client.stop()


def _tuple(position: types.Position) -> tuple[int, int]:
    return position.line, position.character


async def test_the_prefix_cache_budget_follows_the_editor_settings(tiny_model_dir):
    """The server starts loading before `initialize`: the editor's budget must still apply, and later changes."""
    client = await start(tiny_model_dir, {"latency": {"prefix_cache_documents": 1}})
    open_document(client)
    await client.text_document_inline_completion_async(inline_params(2, 11))  # answered once the model is loaded
    stats_params = types.ExecuteCommandParams(command="dglsp.stats")
    cache = (await client.workspace_execute_command_async(stats_params))["prefix_cache"]
    one_document = ContextSettings().prompt_tokens * cache["kv_bytes_per_token"]
    assert cache["kv_bytes_per_token"] > 0 and cache["budget_bytes"] == one_document
    client.workspace_did_change_configuration(types.DidChangeConfigurationParams(
        settings={"dglsp": {"latency": {"prefix_cache_documents": 3}}}))
    for _ in range(50):
        cache = (await client.workspace_execute_command_async(stats_params))["prefix_cache"]
        if cache["budget_bytes"] != one_document:
            break
        await asyncio.sleep(0.1)
    assert cache["budget_bytes"] == 3 * one_document
    client.workspace_did_change_configuration(types.DidChangeConfigurationParams(
        settings={"dglsp": {"latency": {"prefix_cache": False}}}))
    for _ in range(50):
        cache = (await client.workspace_execute_command_async(stats_params))["prefix_cache"]
        if cache["budget_bytes"] == 0:
            break
        await asyncio.sleep(0.1)
    assert cache["budget_bytes"] == 0 and cache["bytes"] == 0
    await client.shutdown_session()
    await client.stop()
