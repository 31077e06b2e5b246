"""The remote backend against a REAL OpenAI-compatible server: `transformers serve` running our tiny
DiffusionGemma on 127.0.0.1 (vLLM's CPU build cannot serve DiffusionGemma here; see docs/remote.md).

Slow (the server loads torch and the model, and generates on the CPU): `pytest -m slow
tests/test_remote_server.py -s` runs it and prints the numbers. Needs the `serving` extra
(`pip install -e '.[test,serving]'`); skipped without it.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
from lsprotocol import types
from test_remote_e2e import SOURCE, URI, start_remote
from test_server_e2e import inline_params, open_document

from dglsp.config import SamplerSettings, Settings
from dglsp.model.loading import load_remote
from dglsp.model.remote import RemoteError

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(any(importlib.util.find_spec(name) is None for name in ("fastapi", "uvicorn", "openai")),
                       reason="needs the serving extra: pip install -e '.[serving]'"),
]

LAUNCHER = Path(__file__).with_name("transformers_serve_textonly.py")


@pytest.fixture(scope="module")
def real_server(tiny_model_dir, tmp_path_factory):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    # An empty hub cache: /v1/models lists the cache (and fails without one); the model is pinned anyway.
    env = {**os.environ, "HF_HUB_CACHE": str(tmp_path_factory.mktemp("hub")), "HF_HUB_OFFLINE": "1"}
    log_file = tmp_path_factory.mktemp("serve") / "serve.log"
    with open(log_file, "w") as log:
        process = subprocess.Popen([sys.executable, str(LAUNCHER), str(tiny_model_dir), "--host", "127.0.0.1",
                                    "--port", str(port), "--device", "cpu"], stdout=log, stderr=log, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            if process.poll() is not None:
                pytest.fail(f"transformers serve exited: {log_file.read_text()[-3000:]}")
            try:
                if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        else:
            pytest.fail("transformers serve did not start in 240 s")
        yield url
    finally:
        process.terminate()
        process.wait(30)


def remote_settings(model_dir, url: str, **remote) -> Settings:
    # A generous read timeout: the CPU here is shared, and one canvas can take seconds.
    options = {"url": url, "model": str(model_dir), "read_timeout_s": 300.0, **remote}
    settings, warnings = Settings().updated({"engine": {"backend": "remote", "model": str(model_dir)},
                                             "remote": options})
    assert not warnings
    return settings


def test_a_completion_streams_from_the_real_server(real_server, tiny_model_dir):
    bundle, backend = load_remote(remote_settings(tiny_model_dir, real_server), strict=True)
    prompt = bundle.tokenizer.encode("<bos><|file|>calc.py\n<|suffix|>\n<|prefix|>def add(a, b):\n    <|middle|>")
    backend.generate(prompt, SamplerSettings())  # loads the kernels once
    generation = backend.generate(prompt, SamplerSettings(max_canvases=2))
    stream = backend.last_stream
    assert stream.error is None and stream.done and stream.finish_reason in ("stop", "length")
    assert generation.stats.canvases == stream.chunks
    print(f"\nreal server: first canvas {generation.stats.prefill_ms:.0f} ms, {stream.chunks} canvases, "
          f"total {generation.stats.total_ms:.0f} ms")
    backend.close()


def test_a_cancelled_request_is_aborted_by_the_real_server(real_server, tiny_model_dir):
    bundle, backend = load_remote(remote_settings(tiny_model_dir, real_server, reuse_ms=0), strict=True)
    prompt = bundle.tokenizer.encode("<bos><|file|>a.py\n<|suffix|>\n<|prefix|>import os\n<|middle|>")
    stop = threading.Event()

    def after_first_canvas() -> bool:
        if backend.last_stream is not None and backend.last_stream.chunks >= 1:
            stop.set()
        return stop.is_set()

    long = backend.generate(prompt, SamplerSettings(max_canvases=64), after_first_canvas)
    assert long.stats.stopped
    closed_at = backend.last_stream.closed_at
    canvas_s = long.stats.prefill_ms / 1000  # the server's time for prefill and one canvas
    # The server has one inference thread: a request that was not aborted would hold it for the ~127
    # canvases it has left (2048 tokens, 16 per canvas): minutes, against at most one canvas when aborted.
    short = backend.generate(prompt, SamplerSettings(max_canvases=1))
    waited_s = backend.last_stream.first_chunk_at - closed_at
    print(f"\nreal server: one canvas {canvas_s * 1000:.0f} ms; after the close the next request's first canvas "
          f"came {waited_s * 1000:.0f} ms later ({waited_s / canvas_s:.1f} canvases; not aborted: ~127)")
    assert backend.last_stream.error is None and short.stats.canvases >= 1
    # Aborted: the server finishes the canvas in hand, then prefills and denoises the next request's first
    # canvas (~3 canvases). Not aborted: ~127 canvases (and the 300 s read timeout fires first).
    assert waited_s < 5 * canvas_s + 5, "the cancelled request kept the server busy: it was not aborted"
    backend.close()


def test_real_server_errors_reach_the_user_with_the_servers_message(real_server, tiny_model_dir):
    _, backend = load_remote(remote_settings(tiny_model_dir, real_server, model="some/other-model"), strict=True)
    with pytest.raises(RemoteError) as failure:
        backend.generate([2, 3, 4], SamplerSettings())
    assert failure.value.kind == "bad_request" and "HTTP 400" in str(failure.value)
    assert "some/other-model" in str(failure.value)  # the server's own message, passed through
    backend.close()
    with pytest.raises(RemoteError, match="no OpenAI completions API"):
        load_remote(remote_settings(tiny_model_dir, real_server + "/openai"), strict=True)


async def test_dglsp_serve_completes_through_the_real_server(real_server, tiny_model_dir):
    client = await start_remote(tiny_model_dir, real_server, {"remote": {"model": str(tiny_model_dir),
                                                                         "read_timeout_s": 300.0}})
    try:
        open_document(client, SOURCE, URI)
        await client.text_document_inline_completion_async(inline_params(1, 4, URI))  # warm
        begin = time.perf_counter()
        result = await client.text_document_inline_completion_async(inline_params(1, 3, URI))
        took_ms = (time.perf_counter() - begin) * 1000
        assert isinstance(result, types.InlineCompletionList)
        for _ in range(20):
            logged = [m.message for m in client.log_messages if "calc.py" in m.message and "prefill" in m.message]
            if len(logged) >= 2:
                break
            await asyncio.sleep(0.1)
        assert len(logged) >= 2, "the requests did not go through the remote backend"
        assert not [m for m in client.messages if m.type == types.MessageType.Error]
        print(f"\ndglsp serve --backend remote via transformers serve: time to suggestion {took_ms:.0f} ms "
              f"({len(result.items)} item(s)); {logged[-1]}")
    finally:
        await client.shutdown_session()
        await client.stop()
