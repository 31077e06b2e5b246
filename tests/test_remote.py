"""The remote backend against a STAND-IN for vLLM (`tests/remote_standin.py`), with a real tokenizer.

vLLM's CPU build cannot serve DiffusionGemma on this machine (see docs/remote.md, "The server side"), so these
tests use our own HTTP server that follows vLLM's documented behaviour; `test_remote_server.py`
runs the same client against a real `transformers serve` (slow). Every test here checks behaviour
the user sees: the text, what reached the server, whether the server aborted, the message shown.
"""

from __future__ import annotations

import socket
import threading
import time

import pytest
from remote_standin import REJECTED, StandIn

from dglsp.completion.completer import Completer
from dglsp.completion.prompt import CursorContext, PromptBuilder, PromptFormat
from dglsp.config import RemoteSettings, SamplerSettings, Settings
from dglsp.model.loading import load_remote
from dglsp.model.remote import (
    RemoteBackend,
    RemoteError,
    api_base,
    health_url,
    prompt_round_trips,
    render_prompt,
    typed_insertion,
)
from dglsp.model.schedule import ModelDefaults
from dglsp.tools.modelzoo import SPECIAL_TOKENS

PREFIX = "def add(a, b):\n    "
SUFFIX = "\n\nprint(add(1, 2))\n"
REPLY = "return a + b\n"
FORBIDDEN = set(REJECTED) | {"temperature", "seed", "min_p", "logit_bias", "suffix"}


def plan(backend, **settings):
    """The schedule a remote backend resolves from these settings (only its token budget reaches the server)."""
    return backend.schedule(SamplerSettings(**settings))


@pytest.fixture
def standin():
    server = StandIn()
    yield server
    server.close()


def fim_prompt(tokenizer, prefix: str = PREFIX, suffix: str = SUFFIX) -> list[int]:
    builder = PromptBuilder(tokenizer, PromptFormat("fim", dict(SPECIAL_TOKENS)), Settings().context)
    return builder.build(CursorContext(prefix, suffix, "calc.py", "python")).ids


def make_backend(server: StandIn, tokenizer, **remote) -> RemoteBackend:
    return RemoteBackend(RemoteSettings(url=server.url, **remote), tokenizer, ModelDefaults())


def settings_for(server: StandIn, tiny_model_dir, **remote) -> Settings:
    settings, warnings = Settings().updated({"engine": {"backend": "remote", "model": str(tiny_model_dir)},
                                             "remote": {"url": server.url, **remote}})
    assert not warnings
    return settings


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# -- prompt text and URLs --------------------------------------------------------------------------

def test_fim_prompt_renders_to_text_that_tokenizes_back_to_the_same_ids(tiny_tokenizer):
    ids = fim_prompt(tiny_tokenizer, prefix="s = 'ünï 😀'\n" + PREFIX)
    text = render_prompt(tiny_tokenizer, ids)
    assert "<|suffix|>" in text and text.endswith("<|middle|>")
    assert text.index("<|suffix|>") < text.index("<|prefix|>")  # the stable part first: prefix caches hit
    assert prompt_round_trips(tiny_tokenizer, ids)


@pytest.mark.parametrize("url, base", [
    ("http://gpu:8000", "http://gpu:8000/v1"),
    ("http://gpu:8000/", "http://gpu:8000/v1"),
    ("http://gpu:8000/v1/", "http://gpu:8000/v1"),
    ("https://kserve.example/openai/v1", "https://kserve.example/openai/v1"),
    ("https://kserve.example/openai", "https://kserve.example/openai/v1"),
])
def test_base_url_may_carry_a_path(url, base):
    assert api_base(url) == base
    assert health_url(base) == base[: -len("/v1")] + "/health"


def test_typed_insertion_finds_characters_typed_at_one_place():
    assert typed_insertion("<s>ab<m>", "<s>abre<m>") == "re"
    assert typed_insertion("<s>aa<m>", "<s>aaa<m>") == "a"
    assert typed_insertion("<s>ab<m>", "<s>ab<m>") == ""
    assert typed_insertion("<s>ab<m>", "<s>xb<m>") is None  # a replacement, not typing
    assert typed_insertion("<s>ab<m>", "<s>a<m>") is None  # a deletion
    assert typed_insertion("x<s>ab<m>", "<s>abc<m>") is None  # the window moved


# -- completion ------------------------------------------------------------------------------------

def test_completion_streams_canvases_and_sends_only_what_vllm_accepts(standin, tiny_model_dir):
    standin.config.canvas_chars = 4
    bundle, backend = load_remote(settings_for(standin, tiny_model_dir, headers="X-Route: {document}"), strict=True)
    completer = Completer(bundle, backend)
    settings = Settings()
    suggestion = completer.complete(CursorContext(PREFIX, SUFFIX, "calc.py", "python"), settings,
                                    cache_key="file:///calc.py")
    assert suggestion.text == REPLY.strip()
    assert suggestion.stats.canvases == len(REPLY) // 4 + (len(REPLY) % 4 > 0)
    # The stand-in marks the request after writing its last chunk, which the client may read first.
    assert standin.wait_for(lambda: standin.completions()[-1].outcome != "pending")
    request = standin.completions()[-1]
    assert request.outcome == "finished"
    payload = request.payload
    assert set(payload) <= {"model", "prompt", "max_tokens", "stream", "stop"} and not FORBIDDEN & set(payload)
    assert payload["stream"] is True and payload["model"] == "dg-standin"
    assert payload["max_tokens"] == settings.sampler.canvas_length * settings.sampler.max_canvases
    assert payload["prompt"].endswith("<|middle|>") and PREFIX in payload["prompt"]
    route = request.headers["x-route"]
    assert len(route) == 16 and "calc" not in route  # a stable hash, not the path
    backend.close()


def test_start_up_check_reports_the_served_model_and_its_context_length(standin, tiny_tokenizer):
    standin.config.max_model_len = 8192
    backend = make_backend(standin, tiny_tokenizer)
    report = backend.check()
    assert "dg-standin" in report and "8192" in report
    assert backend.served_model == "dg-standin" and backend.context_length == 8192
    assert any(r.path == "/health" for r in standin.records)
    backend.close()


def test_api_key_from_the_environment_is_sent_as_a_bearer_token(standin, tiny_tokenizer, monkeypatch):
    standin.config.api_key = "sekret"
    monkeypatch.setenv("DGLSP_API_KEY", "sekret")
    backend = make_backend(standin, tiny_tokenizer)
    generation = backend.generate(fim_prompt(tiny_tokenizer), plan(backend))
    assert tiny_tokenizer.decode(generation.token_ids) == REPLY
    assert standin.completions()[-1].headers["authorization"] == "Bearer sekret"
    backend.close()


# -- stop handling ---------------------------------------------------------------------------------

@pytest.mark.parametrize("server_honours_stop", [True, False])
def test_stop_strings_end_the_completion_on_either_side(standin, tiny_tokenizer, server_honours_stop):
    standin.config.reply = lambda prompt: "return a + b\n\n\n\ndef sub(a, b):\n    return a - b\n"
    standin.config.honour_stop = server_honours_stop
    backend = make_backend(standin, tiny_tokenizer)
    generation = backend.generate(fim_prompt(tiny_tokenizer), plan(backend, max_canvases=4))
    assert tiny_tokenizer.decode(generation.token_ids) == "return a + b"
    assert generation.finished
    backend.close()


def test_a_committed_canvas_callback_can_end_the_stream_early(standin, tiny_tokenizer):
    standin.config.reply = lambda prompt: "x = 1\n" * 40
    standin.config.canvas_chars, standin.config.step_s = 6, 0.02
    backend = make_backend(standin, tiny_tokenizer)
    seen: list[str] = []

    def on_canvas(step: int, ids: list[int], committed: bool) -> bool:
        seen.append(tiny_tokenizer.decode(ids))
        return len(seen) == 2

    generation = backend.generate(fim_prompt(tiny_tokenizer), plan(backend, max_canvases=8), on_canvas=on_canvas)
    assert seen == ["x = 1\n", "x = 1\nx = 1\n"]
    assert tiny_tokenizer.decode(generation.token_ids) == seen[-1]
    assert standin.wait_for(lambda: standin.completions()[-1].outcome == "aborted")
    backend.close()


# -- cancellation and reuse ------------------------------------------------------------------------

def slow_reply(standin: StandIn) -> None:
    standin.config.reply = lambda prompt: "value = compute(a, b)\n" * 20
    standin.config.canvas_chars, standin.config.step_s, standin.config.steps_per_canvas = 10, 0.02, 5


def stop_after_first_canvas(backend: RemoteBackend) -> tuple[threading.Event, callable]:
    stop = threading.Event()

    def should_stop() -> bool:
        stream = backend.last_stream
        if stream is not None and stream.chunks >= 1:
            stop.set()
        return stop.is_set()

    return stop, should_stop


def test_a_stopped_request_is_aborted_on_the_server(standin, tiny_tokenizer):
    slow_reply(standin)
    backend = make_backend(standin, tiny_tokenizer, reuse_ms=0)
    _, should_stop = stop_after_first_canvas(backend)
    generation = backend.generate(fim_prompt(tiny_tokenizer), plan(backend, max_canvases=8), should_stop)
    assert generation.stats.stopped
    assert standin.wait_for(lambda: standin.completions()[-1].outcome != "pending")
    record = standin.completions()[-1]
    assert record.outcome == "aborted"  # not finished: the server stopped denoising
    assert record.canvases_sent < len("value = compute(a, b)\n" * 20) // 10
    backend.close()


def test_typing_what_the_stream_says_continues_it_instead_of_asking_again(standin, tiny_tokenizer):
    slow_reply(standin)
    backend = make_backend(standin, tiny_tokenizer, reuse_ms=5000)
    _, should_stop = stop_after_first_canvas(backend)
    first = backend.generate(fim_prompt(tiny_tokenizer), plan(backend, max_canvases=2), should_stop)
    assert first.stats.stopped
    typed = "value = "
    second = backend.generate(fim_prompt(tiny_tokenizer, prefix=PREFIX + typed), plan(backend, max_canvases=2))
    assert len(standin.completions()) == 1  # the same stream went on
    assert tiny_tokenizer.decode(second.token_ids).startswith("compute(a, b)\n")
    backend.close()


def test_typing_something_else_closes_the_parked_stream_at_once(standin, tiny_tokenizer):
    slow_reply(standin)
    backend = make_backend(standin, tiny_tokenizer, reuse_ms=5000)
    _, should_stop = stop_after_first_canvas(backend)
    backend.generate(fim_prompt(tiny_tokenizer), plan(backend, max_canvases=8), should_stop)
    standin.config.reply = lambda prompt: "1\n"
    second = backend.generate(fim_prompt(tiny_tokenizer, prefix=PREFIX + "return "), plan(backend))
    assert tiny_tokenizer.decode(second.token_ids) == "1\n"
    # The stand-in marks a request after writing its last chunk, which the client may read first.
    assert standin.wait_for(lambda: all(r.outcome != "pending" for r in standin.completions()))
    assert [r.outcome for r in standin.completions()] == ["aborted", "finished"]
    backend.close()


# -- errors ----------------------------------------------------------------------------------------

def test_connection_refused_is_reported_once_and_answered_empty_until_the_server_is_back(tiny_tokenizer):
    port = free_port()
    backend = RemoteBackend(RemoteSettings(url=f"http://127.0.0.1:{port}", retry_after_s=0.0), tiny_tokenizer,
                            ModelDefaults())
    for _ in range(2):
        with pytest.raises(RemoteError) as failure:
            backend.generate(fim_prompt(tiny_tokenizer), plan(backend))
        assert failure.value.kind == "unreachable" and f"127.0.0.1:{port}" in str(failure.value)
    notices = backend.take_notices()
    assert [level for level, _ in notices] == ["error"] and "cannot connect" in notices[0][1]
    server = StandIn.__new__(StandIn)  # the server comes up on that very port
    _start_standin_on(server, port)
    try:
        generation = backend.generate(fim_prompt(tiny_tokenizer), plan(backend))
        assert tiny_tokenizer.decode(generation.token_ids) == REPLY
        assert [level for level, _ in backend.take_notices()] == ["info"]
    finally:
        server.close()
        backend.close()


def _start_standin_on(server: StandIn, port: int) -> None:
    from http.server import ThreadingHTTPServer

    original = ThreadingHTTPServer.__init__

    def bind_port(self, address, handler, *args, **kwargs):
        original(self, ("127.0.0.1", port), handler, *args, **kwargs)

    ThreadingHTTPServer.__init__ = bind_port
    try:
        StandIn.__init__(server)
    finally:
        ThreadingHTTPServer.__init__ = original


def test_after_a_failure_requests_answer_empty_at_once_without_hammering_the_server(standin, tiny_tokenizer):
    standin.config.fail_status = 503
    backend = make_backend(standin, tiny_tokenizer, retry_after_s=60.0)
    for _ in range(3):
        with pytest.raises(RemoteError):
            backend.generate(fim_prompt(tiny_tokenizer), plan(backend))
    assert len(standin.completions()) == 1
    backend.close()


def test_missing_api_key_gets_a_clear_message(standin, tiny_tokenizer, monkeypatch):
    monkeypatch.delenv("DGLSP_API_KEY", raising=False)
    standin.config.api_key = "sekret"
    backend = make_backend(standin, tiny_tokenizer)
    with pytest.raises(RemoteError) as failure:
        backend.generate(fim_prompt(tiny_tokenizer), plan(backend))
    assert failure.value.kind == "unauthorized" and "401" in str(failure.value)
    assert "--api-key" in str(failure.value) and "DGLSP_API_KEY" in str(failure.value)
    backend.close()


def test_a_400_carries_the_servers_message(standin, tiny_tokenizer):
    standin.config.max_model_len = 200
    backend = make_backend(standin, tiny_tokenizer)
    backend.check()
    with pytest.raises(RemoteError) as failure:
        backend.generate(fim_prompt(tiny_tokenizer, prefix="x = 1\n" * 100 + PREFIX), plan(backend))
    assert failure.value.kind == "bad_request"
    assert "HTTP 400" in str(failure.value) and "maximum context length is 200" in str(failure.value)
    backend.close()


def test_a_5xx_carries_the_status_and_message(standin, tiny_tokenizer):
    standin.config.fail_status, standin.config.fail_message = 500, "CUDA error: an illegal memory access"
    backend = make_backend(standin, tiny_tokenizer)
    with pytest.raises(RemoteError) as failure:
        backend.generate(fim_prompt(tiny_tokenizer), plan(backend))
    assert failure.value.kind == "server_error"
    assert "HTTP 500" in str(failure.value) and "illegal memory access" in str(failure.value)
    backend.close()


def test_a_model_the_server_does_not_serve_names_the_ones_it_does(standin, tiny_tokenizer):
    backend = make_backend(standin, tiny_tokenizer, model="google/diffusiongemma-26B-A4B-it")
    with pytest.raises(RemoteError) as failure:
        backend.generate(fim_prompt(tiny_tokenizer), plan(backend))
    assert failure.value.kind == "unknown_model"
    assert "diffusiongemma-26B-A4B-it" in str(failure.value) and "dg-standin" in str(failure.value)
    assert not standin.completions()  # caught by the /v1/models check before any completion
    backend.close()


def test_a_server_that_stops_answering_times_out(standin, tiny_tokenizer):
    standin.config.first_canvas_delay_s = 5.0
    backend = make_backend(standin, tiny_tokenizer, read_timeout_s=0.3)
    begin = time.monotonic()
    with pytest.raises(RemoteError) as failure:
        backend.generate(fim_prompt(tiny_tokenizer), plan(backend))
    assert failure.value.kind == "timeout" and "did not answer in time" in str(failure.value)
    assert time.monotonic() - begin < 5.0  # it gave up; it did not wait for the server
    backend.close()


def test_command_line_check_fails_clearly_when_the_server_is_down(tiny_model_dir):
    settings, _ = Settings().updated({"engine": {"backend": "remote", "model": str(tiny_model_dir)},
                                      "remote": {"url": f"http://127.0.0.1:{free_port()}"}})
    with pytest.raises(RemoteError, match="cannot connect"):
        load_remote(settings, strict=True)


def test_editor_settings_switch_to_remote_and_bad_values_are_refused():
    settings, warnings = Settings().updated({"engine": {"backend": "remote"}, "remote": {
        "url": "https://kserve.example/openai/v1", "headers": "x-session-id: {document}; x-team: ml"}})
    assert not warnings and settings.engine.backend == "remote"
    assert settings.remote.header_pairs() == [("x-session-id", "{document}"), ("x-team", "ml")]
    kept, warnings = settings.updated({"engine": {"backend": "cloud"}, "remote": {"url": "gpu:8000", "headers": "x"}})
    assert kept == settings and len(warnings) == 3
