"""End to end: the real server over stdio, a real LSP client (pytest-lsp), a real small model."""

from __future__ import annotations

import asyncio
import sys
import time
from concurrent.futures import Future

import pytest
import pytest_asyncio
from lsprotocol import types
from pytest_lsp import ClientServerConfig, LanguageClient, client_capabilities

pytestmark = pytest.mark.e2e

SOURCE = 'def greet(name):\n    """Say hello — to ünïcode 😀 too."""\n    return \n\nprint(greet("x"))\n'
URI = "file:///tmp/dglsp-e2e/greet.py"

# A schedule that cannot converge on random weights: one generation runs for seconds.
SLOW = {"sampler": {"canvas_length": 64, "max_steps": 512, "max_canvases": 8, "confidence_threshold": 1e-9}}


def capabilities(previews: bool = False) -> types.ClientCapabilities:
    caps = client_capabilities("visual-studio-code")
    caps.text_document.inline_completion = types.InlineCompletionClientCapabilities()
    caps.window.work_done_progress = True
    if previews:  # what our editor plugins declare: `dglsp/preview` notifications, with the reason at the end
        caps.experimental = {"dglsp": {"preview": True}}
    return caps


async def start(model_dir, options=None, previews: bool = False) -> LanguageClient:
    config = ClientServerConfig(server_command=[sys.executable, "-m", "dglsp", "serve", "--model", str(model_dir),
                                                "--log-level", "DEBUG"])
    client = await config.start()
    await client.initialize_session(types.InitializeParams(capabilities=capabilities(previews),
                                                           initialization_options=options or {}))
    return client


def record_previews(client: LanguageClient) -> list:
    """Collect the server's `dglsp/preview` notifications."""
    previews: list = []

    @client.feature("dglsp/preview")
    def on_preview(params) -> None:
        previews.append(params)

    return previews


@pytest_asyncio.fixture
async def client(tiny_model_dir):
    client = await start(tiny_model_dir, {"sampler": {"seed": 1}})
    yield client
    await client.shutdown_session()
    await client.stop()


def open_document(client: LanguageClient, text: str = SOURCE, uri: str = URI, version: int = 1) -> None:
    client.text_document_did_open(types.DidOpenTextDocumentParams(
        types.TextDocumentItem(uri=uri, language_id="python", version=version, text=text)))


def inline_params(line: int, character: int, uri: str = URI) -> types.InlineCompletionParams:
    return types.InlineCompletionParams(
        text_document=types.TextDocumentIdentifier(uri), position=types.Position(line, character),
        context=types.InlineCompletionContext(trigger_kind=types.InlineCompletionTriggerKind.Automatic))


async def test_initialize_advertises_inline_completion_and_utf16(tiny_model_dir):
    config = ClientServerConfig(server_command=[sys.executable, "-m", "dglsp", "serve", "--model",
                                                str(tiny_model_dir)])
    client = await config.start()
    result = await client.initialize_session(types.InitializeParams(capabilities=capabilities()))
    assert result.capabilities.inline_completion_provider is not None
    assert result.capabilities.position_encoding == types.PositionEncodingKind.Utf16
    assert result.server_info.name == "dglsp"
    await client.shutdown_session()
    await client.stop()


async def test_inline_completion_returns_a_well_formed_item(tiny_model_dir):
    # Random weights write soup: with soup-hiding off (as the Neovim tests have it) an item must come back.
    client = await start(tiny_model_dir, {"sampler": {"seed": 1}, "postprocess": {"hide_unparsable": False}})
    open_document(client)
    result = await client.text_document_inline_completion_async(inline_params(2, 11))
    assert isinstance(result, types.InlineCompletionList)
    assert len(result.items) == 1
    item = result.items[0]
    assert isinstance(item.insert_text, str) and item.insert_text.strip()
    assert item.range.start == types.Position(2, 11) == item.range.end
    assert any("greet.py" in m.message and "prefill" in m.message for m in client.log_messages)
    await client.shutdown_session()
    await client.stop()


async def test_model_load_is_reported_as_work_done_progress(client):
    open_document(client)
    await client.text_document_inline_completion_async(inline_params(2, 11))
    for _ in range(50):
        reports = client.progress_reports.get("dglsp/load-model", [])
        if reports and isinstance(reports[-1], types.WorkDoneProgressEnd):
            break
        await asyncio.sleep(0.1)
    kinds = [type(report).__name__ for report in reports]
    assert kinds[0] == "WorkDoneProgressBegin" and kinds[-1] == "WorkDoneProgressEnd"


async def test_utf16_position_after_non_bmp_character(client):
    text = 's = "😀"; t = \nx = 1\n'
    open_document(client, text, uri="file:///tmp/dglsp-e2e/emoji.py")
    # 😀 is two UTF-16 units: the cursor after `t = ` is character 14 (13 Python characters).
    result = await client.text_document_inline_completion_async(inline_params(0, 14, "file:///tmp/dglsp-e2e/emoji.py"))
    for item in result.items:
        assert item.range.start == types.Position(0, 14)


async def test_second_request_supersedes_the_first(tiny_model_dir):
    client = await start(tiny_model_dir, SLOW)
    open_document(client)
    first = asyncio.ensure_future(client.text_document_inline_completion_async(inline_params(2, 11)))
    await wait_until_generating(client)
    second = asyncio.ensure_future(client.text_document_inline_completion_async(inline_params(2, 11)))
    await asyncio.sleep(0.2)
    begin = time.monotonic()
    first_result = await first
    superseded_after = time.monotonic() - begin
    assert not first_result.items
    assert superseded_after < 5, f"the superseded request took {superseded_after:.1f} s to end"
    client.protocol.notify(types.CANCEL_REQUEST, types.CancelParams(id=_last_request_id(client)))
    try:
        await second
    except Exception:
        pass  # cancelled by us: the point is that the server keeps serving
    await _assert_still_serving(client)
    await client.shutdown_session()
    await client.stop()


async def test_did_change_stops_the_running_generation(tiny_model_dir):
    client = await start(tiny_model_dir, SLOW)
    open_document(client)
    pending = asyncio.ensure_future(client.text_document_inline_completion_async(inline_params(2, 11)))
    await wait_until_generating(client)
    client.text_document_did_change(types.DidChangeTextDocumentParams(
        text_document=types.VersionedTextDocumentIdentifier(uri=URI, version=2),
        content_changes=[types.TextDocumentContentChangePartial(
            range=types.Range(types.Position(2, 11), types.Position(2, 11)), text="n")]))
    begin = time.monotonic()
    result = await pending
    assert not result.items
    assert time.monotonic() - begin < 5
    assert any("document changed to version 2" in m.message for m in client.log_messages)
    await client.shutdown_session()
    await client.stop()


async def test_cancel_request_stops_generation(tiny_model_dir):
    client = await start(tiny_model_dir, SLOW)
    open_document(client)
    pending = asyncio.ensure_future(client.text_document_inline_completion_async(inline_params(2, 11)))
    await wait_until_generating(client)
    client.protocol.notify(types.CANCEL_REQUEST, types.CancelParams(id=_last_request_id(client)))
    with pytest.raises(Exception, match="cancel"):
        await pending
    await _assert_still_serving(client)
    await client.shutdown_session()
    await client.stop()


async def test_bad_requests_get_answers_and_the_server_keeps_serving(client):
    open_document(client)
    with pytest.raises(Exception, match="not open"):
        await client.text_document_inline_completion_async(inline_params(0, 0, "file:///nowhere.py"))
    with pytest.raises(Exception, match="past the end"):
        await client.text_document_inline_completion_async(inline_params(99, 0))
    # Garbage params: a negative line and a string where an object belongs. Stock pygls never answers these.
    negative_line = {"textDocument": {"uri": URI}, "position": {"line": -1, "character": 0},
                     "context": {"triggerKind": 1}}
    for params in (negative_line, {"textDocument": "oops", "position": None}):
        with pytest.raises(Exception, match="invalid params|Invalid"):
            await raw_request(client, "textDocument/inlineCompletion", params)
    await _assert_still_serving(client)


async def test_settings_are_validated_and_bad_values_reported(tiny_model_dir):
    client = await start(tiny_model_dir, {"sampler": {"canvas_length": -3, "max_steps": "many"}, "bogus": 1})
    for _ in range(30):
        if len(client.messages) >= 3:
            break
        await asyncio.sleep(0.1)
    texts = " ".join(m.message for m in client.messages)
    assert "canvas_length" in texts and "max_steps" in texts and "bogus" in texts
    client.workspace_did_change_configuration(types.DidChangeConfigurationParams(
        settings={"dglsp": {"scheduler": {"debounce_ms": -1}}}))
    await _assert_still_serving(client)
    assert "debounce_ms" in " ".join(m.message for m in client.messages)
    await client.shutdown_session()
    await client.stop()


async def test_completion_fallback_for_clients_without_inline_completion(tiny_model_dir):
    config = ClientServerConfig(server_command=[sys.executable, "-m", "dglsp", "serve", "--model",
                                                str(tiny_model_dir)])
    client = await config.start()
    await client.initialize_session(types.InitializeParams(capabilities=client_capabilities("neovim")))
    open_document(client)
    result = await client.text_document_completion_async(types.CompletionParams(
        text_document=types.TextDocumentIdentifier(URI), position=types.Position(2, 11)))
    assert isinstance(result, types.CompletionList)
    for item in result.items:
        assert item.text_edit.new_text.strip()
    await client.shutdown_session()
    await client.stop()


async def wait_until_generating(client: LanguageClient) -> None:
    """Return once the model is loaded and the pending request has been on the device a moment.

    A fixed sleep races on a fast machine: one SLOW canvas takes about a second, so acting 0.3 s
    after the model is ready lands mid-canvas however fast or slow the machine is."""
    for _ in range(1200):
        reports = client.progress_reports.get("dglsp/load-model", [])
        if reports and isinstance(reports[-1], types.WorkDoneProgressEnd):
            break
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.3)


async def raw_request(client: LanguageClient, method: str, params) -> object:
    """Send params exactly as given (the typed client API would refuse to serialize garbage)."""
    msg_id = f"raw-{time.monotonic_ns()}"
    future: Future = Future()
    client.protocol._request_futures[msg_id] = future
    client.protocol._send_data({"jsonrpc": "2.0", "id": msg_id, "method": method, "params": params})
    return await asyncio.wait_for(asyncio.wrap_future(future), 10)


def _last_request_id(client: LanguageClient):
    return max(client.protocol._request_futures, key=lambda key: str(key))


async def _assert_still_serving(client: LanguageClient) -> None:
    # Back to a short schedule: the point is that the server answers, not how long SLOW takes.
    client.workspace_did_change_configuration(types.DidChangeConfigurationParams(
        settings={"sampler": {"canvas_length": 16, "max_steps": 4, "max_canvases": 1}}))
    open_document(client, "x = 1\n", uri="file:///tmp/dglsp-e2e/alive.py")
    result = await asyncio.wait_for(
        client.text_document_inline_completion_async(inline_params(1, 0, "file:///tmp/dglsp-e2e/alive.py")), 30)
    assert isinstance(result, types.InlineCompletionList)
