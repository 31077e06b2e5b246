"""The remote backend: DiffusionGemma served by an OpenAI-compatible server (vLLM), instead of a local model.

Contract (the same as `Engine.generate`, see `backend.py`): token ids in, a `Generation` out. The
prompt ids come from the same `PromptBuilder` as the local engine; they are rendered back to text
(special tokens as text) and sent as a raw `prompt` to `/v1/completions` with `stream: true`,
`max_tokens` and `stop` only (and, for chat models, `skip_special_tokens: false`, so a thought
channel's markers reach the completer, which drops the thoughts). vLLM's DiffusionGemma path answers
HTTP 400 to `suffix`, `temperature` != 1.0, `seed`, `min_p`, `logit_bias` and structured outputs: none is ever sent.
The server streams one committed canvas per chunk; post-processing and stop rules stay on our side.

* Cancellation: `should_stop` is polled every few milliseconds; a stopped stream is closed (the
  server sees the disconnect and aborts between denoising steps), or parked for `reuse_ms` first:
  if the next request's prompt is the old one plus characters typed at one place, and the stream's
  text starts with them, the stream is continued instead of starting again.
* Errors (refused connection, timeout, 401, 400 with the server's message, 5xx, a model the server
  does not serve) become `RemoteError`: the request gets an empty answer, the change of state is
  queued once as a notice for the user (`take_notices`), and for `retry_after_s` requests answer
  empty at once instead of hammering a server that is down.

HTTP runs on a private asyncio loop thread (httpx), so closing a stream never waits on the worker.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import cast
from urllib.parse import urlsplit, urlunsplit

import httpx
from transformers import PreTrainedTokenizerBase

from dglsp.config import LatencySettings, RemoteSettings, SamplerSettings
from dglsp.errors import BackendError, ModelLoadError
from dglsp.model.backend import CanvasCallback, Generation, GenerationStats
from dglsp.model.schedule import ModelDefaults, Schedule, resolve

log = logging.getLogger(__name__)
logging.getLogger("httpx").setLevel(logging.WARNING)  # one INFO line per request would drown our own log

API_KEY_ENV = "DGLSP_API_KEY"
POLL_S = 0.005  # how often the worker looks at the stop flag while waiting for the next canvas
# Text that ends a completion whatever the language: two blank lines end a top-level block, and a
# chat model closes its code fence. The server stops early on them; the client cuts at them too.
STOP_STRINGS = ["\n\n\n"]
CHAT_STOP_STRINGS = ["\n```"]
MAX_TYPED_CHARS = 256  # a longer insertion is not "typing into the suggestion"


class RemoteError(BackendError):
    """The completion server cannot give a completion now; the message says why and what to do."""

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind  # unreachable | timeout | unauthorized | bad_request | server_error | unknown_model | protocol


# -- URLs, headers, prompt text --------------------------------------------------------------------

def api_base(url: str) -> str:
    """The OpenAI API root: `/v1` is added unless the path already ends with it (KServe: `/openai/v1`)."""
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ModelLoadError(f"remote url {url!r} is not an http(s) URL (e.g. http://gpu-box:8000)")
    path = parts.path.rstrip("/")
    if not path.endswith("/v1"):
        path += "/v1"
    return urlunsplit((parts.scheme, parts.netloc, path, "", ""))


def health_url(base: str) -> str:
    """vLLM serves `/health` beside `/v1`, not under it."""
    return base[: -len("/v1")] + "/health"


def request_headers(settings: RemoteSettings, cache_key: str | None = None) -> dict[str, str]:
    """Bearer key (flag/settings, else $DGLSP_API_KEY) and extra headers; `{document}` becomes a stable
    hash of the document URI, so a sticky router can keep one file's requests on one replica."""
    headers = {}
    key = settings.api_key or os.environ.get(API_KEY_ENV)
    if key:
        headers["Authorization"] = f"Bearer {key}"
    document = hashlib.sha256((cache_key or "").encode()).hexdigest()[:16]
    for name, value in settings.header_pairs():
        headers[name] = value.replace("{document}", document)
    return headers


def render_prompt(tokenizer: PreTrainedTokenizerBase, prompt_ids: list[int]) -> str:
    """The prompt ids as the text the server will tokenize back to the same ids.

    Special tokens render as text (`<|prefix|>`); a leading BOS is dropped when the tokenizer adds
    one itself (as vLLM does for a text prompt), so the server does not see two."""
    ids = list(prompt_ids)
    bos = tokenizer.bos_token_id
    if ids and bos is not None and ids[0] == bos and _adds_bos(tokenizer):
        ids = ids[1:]
    # A list of ids decodes to one string (the declared return type also covers batches).
    return cast(str, tokenizer.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False))


def _adds_bos(tokenizer: PreTrainedTokenizerBase) -> bool:
    ids = tokenizer("x", add_special_tokens=True)["input_ids"]
    return bool(ids) and ids[0] == tokenizer.bos_token_id


def prompt_round_trips(tokenizer: PreTrainedTokenizerBase, prompt_ids: list[int]) -> bool:
    """Whether the server, tokenizing `render_prompt(...)`, gets exactly `prompt_ids` back."""
    text = render_prompt(tokenizer, prompt_ids)
    return tokenizer(text, add_special_tokens=True)["input_ids"] == list(prompt_ids) or (
        tokenizer(text, add_special_tokens=False)["input_ids"] == list(prompt_ids))


def typed_insertion(old: str, new: str) -> str | None:
    """The characters inserted at one place to turn prompt `old` into `new`, or None if `new` is
    not `old` plus one insertion ("" when they are equal)."""
    if len(new) < len(old) or len(new) - len(old) > MAX_TYPED_CHARS:
        return None
    head = 0
    while head < len(old) and old[head] == new[head]:
        head += 1
    tail = 0
    while tail < len(old) - head and old[-1 - tail] == new[-1 - tail]:
        tail += 1
    if head + tail != len(old):
        return None
    return new[head: len(new) - tail]


def cut_at_stop(text: str, stops: list[str]) -> tuple[str, bool]:
    cuts = [text.find(stop) for stop in stops if stop and stop in text]
    return (text[: min(cuts)], True) if cuts else (text, False)


# -- one streamed completion -----------------------------------------------------------------------

@dataclass
class Stream:
    """One `/v1/completions` stream, filled by the loop thread, read by the worker thread."""

    prompt: str
    opened_at: float = field(default_factory=time.perf_counter)
    text: str = ""
    chunks: int = 0
    first_chunk_at: float | None = None
    finish_reason: str | None = None
    done: bool = False
    error: RemoteError | None = None
    closed_at: float | None = None
    task: asyncio.Task | None = None
    changed: threading.Condition = field(default_factory=threading.Condition)

    def wait(self, seen_chunks: int, timeout: float) -> None:
        with self.changed:
            if self.chunks == seen_chunks and not self.done:
                self.changed.wait(timeout)


class RemoteClient:
    """HTTP to one OpenAI-compatible server, on a private event loop thread."""

    def __init__(self, settings: RemoteSettings):
        self.settings = settings
        self.base = api_base(settings.url)
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="dglsp-remote", daemon=True)
        self._thread.start()
        timeout = httpx.Timeout(settings.read_timeout_s, connect=settings.connect_timeout_s)
        self.http = self._call(_make_client(timeout), timeout=10)

    def _call(self, coro, timeout: float):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        try:
            self._call(self.http.aclose(), timeout=5)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)

    # -- start-up check ---------------------------------------------------------------------------
    def check(self, wanted: str | None) -> tuple[str | None, int | None, str]:
        """(served model name, its context length, a one-line report); raises RemoteError."""
        return self._call(self._check(wanted), timeout=self.settings.connect_timeout_s + self.settings.read_timeout_s)

    async def _check(self, wanted: str | None) -> tuple[str | None, int | None, str]:
        headers = request_headers(self.settings)
        response = await self._get(f"{self.base}/models", headers)
        if response.status_code != 200:
            raise error_for_status(response.status_code, response.content, self.base, wanted)
        try:
            served = {str(m["id"]): m for m in response.json().get("data", [])}
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            raise RemoteError("protocol", f"{self.base}/models did not answer an OpenAI model list") from exc
        if wanted is not None and served and wanted not in served:
            raise RemoteError("unknown_model", f"model {wanted!r} is not served at {self.base}; it serves "
                              f"{', '.join(sorted(served))} (set --remote-model)")
        if wanted is None:
            if len(served) != 1:
                listed = ", ".join(sorted(served)) or "nothing"
                raise RemoteError("unknown_model", f"{self.base} serves {listed}; name the model with --remote-model")
            wanted = next(iter(served))
        entry = served.get(wanted, {})
        context = entry.get("max_model_len") if isinstance(entry.get("max_model_len"), int) else None
        report = f"{wanted} at {self.base}" + (f", context {context} tokens" if context else "")
        if not served:
            report += " (the server lists no models; using the name as given)"
        health = await self._get(health_url(self.base), headers)
        if health.status_code not in (200, 404, 405):
            report += f"; /health answered HTTP {health.status_code}"
        return wanted, context, report

    async def _get(self, url: str, headers: dict[str, str]) -> httpx.Response:
        try:
            return await self.http.get(url, headers=headers)
        except httpx.HTTPError as exc:
            raise transport_error(exc, self.base) from exc

    # -- streaming --------------------------------------------------------------------------------
    def open(self, payload: dict, headers: dict[str, str]) -> Stream:
        stream = Stream(payload["prompt"])
        ready = threading.Event()

        def start() -> None:
            stream.task = self.loop.create_task(self._run(stream, payload, headers))
            ready.set()

        self.loop.call_soon_threadsafe(start)
        ready.wait(5)
        return stream

    def close_stream(self, stream: Stream) -> None:
        """Close the HTTP stream now (the server sees the disconnect and aborts the request)."""
        if stream.closed_at is None:
            stream.closed_at = time.perf_counter()
        if stream.task is not None and not stream.done:
            self.loop.call_soon_threadsafe(stream.task.cancel)

    async def _run(self, stream: Stream, payload: dict, headers: dict[str, str]) -> None:
        try:
            async with self.http.stream("POST", f"{self.base}/completions", json=payload, headers=headers) as response:
                if response.status_code != 200:
                    body = await response.aread()
                    raise error_for_status(response.status_code, body, self.base, payload.get("model"))
                async for line in response.aiter_lines():
                    if self._consume(stream, line):
                        break
            self._finish(stream, None)
        except asyncio.CancelledError:
            self._finish(stream, None)
            raise
        except RemoteError as exc:
            self._finish(stream, exc)
        except httpx.HTTPError as exc:
            self._finish(stream, transport_error(exc, self.base))

    def _consume(self, stream: Stream, line: str) -> bool:
        """One SSE line; True at `[DONE]`."""
        if not line.startswith("data:"):
            return False
        data = line[len("data:"):].strip()
        if data == "[DONE]":
            return True
        try:
            event = json.loads(data)
        except ValueError as exc:
            raise RemoteError("protocol", f"the server sent a stream line that is not JSON: {data[:200]!r}") from exc
        if "error" in event:
            raise error_for_status(500, json.dumps(event).encode(), self.base, None)
        choices = event.get("choices") or [{}]
        text = choices[0].get("text") or ""
        with stream.changed:
            if text:
                stream.text += text
                stream.chunks += 1
                stream.first_chunk_at = stream.first_chunk_at or time.perf_counter()
            stream.finish_reason = choices[0].get("finish_reason") or stream.finish_reason
            stream.changed.notify_all()
        return False

    @staticmethod
    def _finish(stream: Stream, error: RemoteError | None) -> None:
        with stream.changed:
            stream.error = stream.error or error
            stream.done = True
            stream.changed.notify_all()


async def _make_client(timeout: httpx.Timeout) -> httpx.AsyncClient:
    return httpx.AsyncClient(timeout=timeout)


def transport_error(exc: httpx.HTTPError, base: str) -> RemoteError:
    if isinstance(exc, httpx.ConnectError):
        return RemoteError("unreachable", f"cannot connect to the completion server at {base} ({exc}); "
                           "is `vllm serve` running there?")
    if isinstance(exc, httpx.TimeoutException):
        return RemoteError("timeout", f"the completion server at {base} did not answer in time "
                           f"({type(exc).__name__}); it may be overloaded (raise remote.read_timeout_s)")
    return RemoteError("unreachable", f"the connection to the completion server at {base} failed: {exc!r}")


def error_for_status(status: int, body: bytes, base: str, model: str | None) -> RemoteError:
    message = _server_message(body)
    if status in (401, 403):
        return RemoteError("unauthorized", f"the completion server at {base} refused the API key (HTTP {status}"
                           f"{': ' + message if message else ''}); set --api-key or ${API_KEY_ENV}")
    if status == 404 and model is not None and ("model" in message.lower() or not message):
        return RemoteError("unknown_model", f"model {model!r} is not served at {base} (HTTP 404: {message}); "
                           "check --remote-model against the server's /v1/models")
    if status == 404:
        return RemoteError("server_error", f"{base} has no OpenAI completions API (HTTP 404); check the URL's path")
    if 400 <= status < 500:
        return RemoteError("bad_request", f"the completion server rejected the request (HTTP {status}): {message}")
    return RemoteError("server_error", f"the completion server at {base} failed (HTTP {status}): "
                       f"{message or 'no message'}")


def _server_message(body: bytes) -> str:
    """The message of an OpenAI/vLLM/FastAPI error body: {"error": {"message"}}, {"message"}, {"detail"}."""
    text = body.decode("utf-8", "replace").strip()
    try:
        data = json.loads(text)
    except ValueError:
        return text[:500]
    if isinstance(data, dict):
        error = data.get("error", data)
        if isinstance(error, dict):
            return str(error.get("message") or error.get("detail") or error)[:500]
        return str(error)[:500]
    return text[:500]


# -- the backend ------------------------------------------------------------------------------------

@dataclass
class _Parked:
    stream: Stream
    until: float


class RemoteBackend:
    """`Backend` over a remote server: one request at a time, called from the device worker thread."""

    def __init__(self, settings: RemoteSettings, tokenizer: PreTrainedTokenizerBase, defaults: ModelDefaults,
                 chat: bool = False):
        self.settings = settings
        self.tokenizer = tokenizer
        self.defaults = defaults
        self.client = RemoteClient(settings)
        self.device = f"remote {self.client.base}"
        self.stops = STOP_STRINGS + (CHAT_STOP_STRINGS if chat else [])
        self.chat = chat
        self.served_model: str | None = settings.model
        self.context_length: int | None = None
        self._checked = False
        self._parked: _Parked | None = None
        self._state = "unknown"  # ok | the kind of the last error
        self._retry_at = 0.0
        self._last_error: RemoteError | None = None
        self._notices: queue.SimpleQueue[tuple[str, str]] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._park_lock = threading.Lock()
        self.last_stream: Stream | None = None

    def schedule(self, settings: SamplerSettings) -> Schedule:
        # Only the token budget reaches the server: it runs its own schedule and decoding (vLLM refuses a step
        # count, a temperature or a seed per request).
        return resolve(settings, self.defaults)

    def prompt_mismatch(self, prompt_ids: list[int]) -> str | None:
        """Why the server would see other tokens than `prompt_ids` once they are rendered as text, or None."""
        if prompt_round_trips(self.tokenizer, prompt_ids):
            return None
        return "prompts rendered as text do not tokenize back to the same ids: the server would see other tokens"

    # -- state reported to the user ---------------------------------------------------------------
    def take_notices(self) -> list[tuple[str, str]]:
        """(level "error" | "info", message) for each change of the server's state since the last call."""
        notices = []
        while not self._notices.empty():
            notices.append(self._notices.get())
        return notices

    def _failed(self, error: RemoteError) -> RemoteError:
        if error.kind != "bad_request":  # a rejected request says nothing about the next one
            self._retry_at = time.monotonic() + self.settings.retry_after_s
        if self._state != error.kind:
            self._notices.put(("error", f"dglsp: {error}"))
            log.warning("remote backend: %s", error)
        self._state, self._last_error = error.kind, error
        if error.kind == "unknown_model":
            self._checked = False
        return error

    def _succeeded(self) -> None:
        if self._state not in ("ok", "unknown"):
            self._notices.put(("info", f"dglsp: the completion server is back ({self.device})"))
        self._state = "ok"

    def check(self) -> str:
        """The start-up check (`/v1/models`, `/health`): the served model and its context length."""
        try:
            self.served_model, self.context_length, report = self.client.check(self.settings.model)
        except RemoteError as exc:
            raise self._failed(exc) from None
        self._checked = True
        self._succeeded()
        return report

    # -- generation -------------------------------------------------------------------------------
    def generate(
        self,
        prompt_ids: list[int],
        schedule: Schedule,
        should_stop: Callable[[], bool] = lambda: False,
        on_canvas: CanvasCallback | None = None,
        deadline: float | None = None,
        cache_key: str | None = None,
        seed_ids: list[int] | None = None,
    ) -> Generation:
        assert prompt_ids, "the prompt must not be empty"  # `seed_ids`: the API has no way to seed a canvas
        with self._lock:
            return self._generate(prompt_ids, schedule, should_stop, on_canvas, deadline, cache_key)

    def _generate(self, prompt_ids, schedule, should_stop, on_canvas, deadline, cache_key) -> Generation:
        stats = GenerationStats(prefill_tokens=len(prompt_ids))
        begin = time.perf_counter()
        prompt = render_prompt(self.tokenizer, prompt_ids)
        stream, typed = self._adopt(prompt)
        if stream is None:
            self._ready_or_raise()
            stream, typed = self._open(prompt, schedule, cache_key), ""
        self.last_stream = stream
        text, finished, seen = "", False, -1
        while True:
            if should_stop():
                stats.stopped = True
                self._park(stream)
                break
            if deadline is not None and time.monotonic() >= deadline:
                stats.hit_deadline = True
                self.client.close_stream(stream)
                break
            if stream.chunks == seen and not stream.done:
                stream.wait(seen, POLL_S)
                continue
            seen = stream.chunks
            if not stream.text.startswith(typed):
                if typed.startswith(stream.text) and not stream.done:
                    continue  # the reused stream has not yet reached what was typed
                # The reused stream went another way: start afresh.
                self.client.close_stream(stream)
                self._ready_or_raise()
                stream, typed, seen = self._open(prompt, schedule, cache_key), "", -1
                self.last_stream = stream
                continue
            text, stopped_at = cut_at_stop(stream.text[len(typed):], self.stops)
            ends = stopped_at or (stream.done and stream.finish_reason == "stop")
            if seen > 0 and on_canvas is not None and on_canvas(stats.steps, self._ids(text), True):
                ends = True
            if ends or stream.done:
                finished = bool(ends)
                if not stream.done:
                    self.client.close_stream(stream)  # we have what we need; free the server
                break
        if stream.error is not None and not stats.stopped:
            raise self._failed(stream.error)
        if not stats.stopped:
            self._succeeded()
        stats.canvases = stream.chunks
        stats.generated_tokens = len(self._ids(text))
        end = time.perf_counter()
        stats.total_ms = (end - begin) * 1000
        # Time to the first committed canvas stands in for prefill: the server does not report its split.
        stats.prefill_ms = max(0.0, (stream.first_chunk_at or end) - max(stream.opened_at, begin)) * 1000
        stats.decode_ms = stats.total_ms - stats.prefill_ms
        return Generation(self._ids(text), finished, stats)

    def _ids(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=False) if text else []

    def _ready_or_raise(self) -> None:
        if time.monotonic() < self._retry_at and self._last_error is not None:
            raise RemoteError(self._last_error.kind, str(self._last_error))
        if not self._checked:
            self.check()

    def _open(self, prompt: str, schedule: Schedule, cache_key: str | None) -> Stream:
        payload: dict = {"prompt": prompt, "max_tokens": schedule.canvas_length * schedule.max_canvases,
                         "stream": True, "stop": self.stops}
        if self.served_model is not None:
            payload["model"] = self.served_model
        if self.chat:  # keep a thought channel's markers in the text, so the completer can drop the thoughts
            payload["skip_special_tokens"] = False
        headers = {**request_headers(self.settings, cache_key), "Accept": "text/event-stream"}
        return self.client.open(payload, headers)

    def _park(self, stream: Stream) -> None:
        """Keep a stopped stream for `reuse_ms` in case the next keystroke's request continues it."""
        self._close_parked()
        if self.settings.reuse_ms <= 0 or stream.error is not None:
            self.client.close_stream(stream)
            return
        parked = _Parked(stream, time.monotonic() + self.settings.reuse_ms / 1000)
        with self._park_lock:
            self._parked = parked
        self.client.loop.call_soon_threadsafe(
            self.client.loop.call_later, self.settings.reuse_ms / 1000, self._expire, parked)

    def _expire(self, parked: _Parked) -> None:
        with self._park_lock:  # the worker may be adopting this very stream
            if self._parked is not parked:
                return
            self._parked = None
        self.client.close_stream(parked.stream)

    def _take_parked(self) -> _Parked | None:
        with self._park_lock:
            parked, self._parked = self._parked, None
        return parked

    def _close_parked(self) -> None:
        parked = self._take_parked()
        if parked is not None:
            self.client.close_stream(parked.stream)

    def _adopt(self, prompt: str) -> tuple[Stream | None, str]:
        """A parked stream this prompt continues (the old prompt plus typed characters), or None."""
        parked = self._take_parked()
        if parked is None:
            return None, ""
        typed = typed_insertion(parked.stream.prompt, prompt)
        if (typed is not None and time.monotonic() < parked.until and parked.stream.error is None
                and (parked.stream.text.startswith(typed) or typed.startswith(parked.stream.text))):
            log.debug("remote: continuing the in-flight stream (%d typed characters)", len(typed))
            parked.stream.closed_at = None
            return parked.stream, typed
        self.client.close_stream(parked.stream)
        return None, ""

    def apply_latency(self, latency: LatencySettings, prompt_tokens: int) -> None:
        pass  # the server keeps the prefix cache (`--enable-prefix-caching`)

    def forget(self, key: str) -> None:
        pass  # ... and forgets on its own

    def prefill(self, prompt_ids: list[int], cache_key: str, should_stop: Callable[[], bool] = lambda: False) -> int:
        return 0  # the OpenAI API has no prefill-only request; the server's prefix cache warms on the first one

    def cache_stats(self) -> None:
        return None

    def close(self) -> None:
        self._close_parked()
        self.client.close()
