"""End to end: `dglsp serve --backend remote` over stdio, a real LSP client, and the vLLM STAND-IN
(`remote_standin.py`; vLLM's CPU build cannot serve DiffusionGemma here). The tokenizer is the real
tiny model's; the text comes from the stand-in, so the test knows what the editor must show."""

from __future__ import annotations

import asyncio
import sys

import pytest
import pytest_asyncio
from lsprotocol import types
from pytest_lsp import ClientServerConfig, LanguageClient
from remote_standin import StandIn
from test_server_e2e import capabilities, inline_params, open_document

pytestmark = pytest.mark.e2e

SOURCE = "def add(a, b):\n    \n\nprint(add(1, 2))\n"
URI = "file:///tmp/dglsp-e2e/calc.py"


@pytest.fixture
def standin():
    server = StandIn()
    server.config.reply = lambda prompt: "return a + b\n"
    yield server
    server.close()


async def start_remote(model_dir, url: str, options: dict | None = None) -> LanguageClient:
    command = [sys.executable, "-m", "dglsp", "serve", "--backend", "remote", "--url", url,
               "--model", str(model_dir), "--log-level", "DEBUG"]
    client = await ClientServerConfig(server_command=command).start()
    await client.initialize_session(types.InitializeParams(capabilities=capabilities(),
                                                           initialization_options=options or {}))
    return client


@pytest_asyncio.fixture
async def client(tiny_model_dir, standin):
    client = await start_remote(tiny_model_dir, standin.url)
    yield client
    await client.shutdown_session()
    await client.stop()


async def test_inline_completion_comes_from_the_remote_server(client, standin):
    open_document(client, SOURCE, URI)
    result = await client.text_document_inline_completion_async(inline_params(1, 4, URI))
    assert [item.insert_text for item in result.items] == ["return a + b"]
    request = standin.completions()[-1]
    assert request.outcome == "finished" and request.payload["prompt"].endswith("<|middle|>")


async def test_cancel_request_aborts_the_request_on_the_server(tiny_model_dir, standin):
    standin.config.reply = lambda prompt: "total = a + b\n" * 40
    standin.config.canvas_chars, standin.config.step_s, standin.config.steps_per_canvas = 8, 0.05, 4
    client = await start_remote(tiny_model_dir, standin.url, {"sampler": {"max_canvases": 8},
                                                               "remote": {"reuse_ms": 0}})
    try:
        open_document(client, SOURCE, URI)
        pending = asyncio.ensure_future(client.text_document_inline_completion_async(inline_params(1, 4, URI)))
        assert await asyncio.to_thread(standin.wait_for, lambda: any(
            r.canvases_sent for r in standin.completions()), 30)
        request_id = max(client.protocol._request_futures, key=lambda key: str(key))
        client.protocol.notify(types.CANCEL_REQUEST, types.CancelParams(id=request_id))
        try:
            await pending
        except Exception:
            pass  # the client sees -32800 or an empty list: either way nothing is shown
        assert await asyncio.to_thread(standin.wait_for, lambda: standin.completions()[-1].outcome != "pending", 10)
        assert standin.completions()[-1].outcome == "aborted"
    finally:
        await client.shutdown_session()
        await client.stop()


async def test_a_server_that_is_down_is_reported_and_answered_empty(tiny_model_dir):
    client = await start_remote(tiny_model_dir, "http://127.0.0.1:9")  # discard port: nothing listens
    try:
        open_document(client, SOURCE, URI)
        for _ in range(2):
            result = await client.text_document_inline_completion_async(inline_params(1, 4, URI))
            assert not result.items
        for _ in range(50):
            if any("cannot connect" in m.message for m in client.messages):
                break
            await asyncio.sleep(0.1)
        shown = [m for m in client.messages if "cannot connect" in m.message]
        assert len(shown) == 1 and shown[0].type == types.MessageType.Error  # once, not per keystroke
        assert "127.0.0.1:9" in shown[0].message
    finally:
        await client.shutdown_session()
        await client.stop()
