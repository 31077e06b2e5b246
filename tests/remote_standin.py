"""A STAND-IN for vLLM serving DiffusionGemma: a local HTTP server of our own, for the remote backend's tests.

It is not vLLM. It follows vLLM's documented OpenAI-compatible behaviour as far as the client can
see it: `GET /v1/models` (with `max_model_len`), `GET /health`, `POST /v1/completions` streaming SSE
`data: {...}` lines with one committed canvas per chunk and `data: [DONE]`, stop strings applied on
the server (finish_reason "stop"), HTTP 401 `{"error": "Unauthorized"}` without the key, HTTP 404
for a model it does not serve, and HTTP 400 for what vLLM's DiffusionGemma path rejects (`suffix`,
`temperature` != 1.0, `seed`, `min_p`, `logit_bias`, structured outputs, with the messages of vLLM
0.32's source: `sampling_params.py` `_validate_diffusion`, `renderers/online_renderer.py`).
Like vLLM it checks for a client disconnect between denoising steps and aborts the request then;
every request is recorded (finished / aborted, and when), so tests can assert aborts and time them.
"""

from __future__ import annotations

import json
import select
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

SAMPLING = ("The temperature, min_p, seed, min_tokens, logit_bias, bad_words, and allowed_token_ids sampling "
            "parameters are not yet supported with diffusion models.")
STRUCTURED = ("Structured outputs are not yet supported for diffusion language models. Remove the structured "
              "output constraint (e.g. `response_format`, `structured_outputs`) from the request.")
SPECIAL_TEXT = ("<|channel>", "<channel|>", "<turn|>")  # what a reply may hold that vLLM skips by default
REJECTED = {
    "suffix": "suffix is only supported for models with FIM completion rendering",
    "seed": SAMPLING, "min_p": SAMPLING, "min_tokens": SAMPLING, "logit_bias": SAMPLING, "bad_words": SAMPLING,
    "allowed_token_ids": SAMPLING, "response_format": STRUCTURED, "structured_outputs": STRUCTURED,
}


@dataclass
class Record:
    path: str
    headers: dict[str, str]
    payload: dict | None = None
    status: int = 200
    outcome: str = "pending"  # finished | aborted | rejected
    started_at: float = field(default_factory=time.perf_counter)
    ended_at: float | None = None
    canvases_sent: int = 0


@dataclass
class StandInConfig:
    model: str = "dg-standin"
    max_model_len: int = 4096
    api_key: str | None = None
    reply: Callable[[str], str] = lambda prompt: "return a + b\n"
    canvas_chars: int = 8  # characters per committed canvas (a canvas of tokens, roughly)
    steps_per_canvas: int = 4
    step_s: float = 0.01  # one denoising step
    fail_status: int | None = None  # answer every completion with this status (5xx tests)
    fail_message: str = "engine crashed"
    first_canvas_delay_s: float = 0.0  # a slow server (timeout tests)
    health: bool = True
    honour_stop: bool = True  # False: ignore `stop` (the client must cut at stop strings itself)


class StandIn:
    def __init__(self, config: StandInConfig | None = None):
        self.config = config or StandInConfig()
        self.records: list[Record] = []
        self.changed = threading.Condition()
        standin = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def do_GET(self) -> None:
                standin._get(self)

            def do_POST(self) -> None:
                standin._post(self)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)
        self._thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def completions(self) -> list[Record]:
        return [r for r in self.records if r.path.endswith("/completions")]

    def wait_for(self, predicate: Callable[[], bool], timeout: float = 10.0) -> bool:
        deadline = time.monotonic() + timeout
        with self.changed:
            while not predicate():
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self.changed.wait(left)
        return True

    # -- handlers ---------------------------------------------------------------------------------
    def _record(self, handler: BaseHTTPRequestHandler, payload: dict | None = None) -> Record:
        record = Record(handler.path, {k.lower(): v for k, v in handler.headers.items()}, payload)
        with self.changed:
            self.records.append(record)
            self.changed.notify_all()
        return record

    def _end(self, record: Record, outcome: str, status: int = 200) -> None:
        with self.changed:
            record.outcome, record.status, record.ended_at = outcome, status, time.perf_counter()
            self.changed.notify_all()

    def _authorized(self, handler: BaseHTTPRequestHandler) -> bool:
        key = self.config.api_key
        return key is None or handler.headers.get("Authorization") == f"Bearer {key}"

    def _json(self, handler: BaseHTTPRequestHandler, status: int, body: object) -> None:
        data = json.dumps(body).encode()
        handler.send_response(status)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        handler.wfile.write(data)

    def _get(self, handler: BaseHTTPRequestHandler) -> None:
        record = self._record(handler)
        if handler.path.rstrip("/").endswith("/health") and self.config.health:
            self._json(handler, 200, {})
        elif not self._authorized(handler):
            self._json(handler, 401, {"error": "Unauthorized"})
        elif handler.path.rstrip("/").endswith("/v1/models"):
            self._json(handler, 200, {"object": "list", "data": [
                {"id": self.config.model, "object": "model", "owned_by": "vllm", "root": "/models/dg",
                 "max_model_len": self.config.max_model_len}]})
        else:
            self._json(handler, 404, {"detail": "Not Found"})
        self._end(record, "finished", 200)

    def _post(self, handler: BaseHTTPRequestHandler) -> None:
        length = int(handler.headers.get("Content-Length") or 0)
        payload = json.loads(handler.rfile.read(length) or b"{}")
        record = self._record(handler, payload)
        error = self._reject(handler, payload)
        if error is not None:
            status, body = error
            self._json(handler, status, body)
            self._end(record, "rejected", status)
            return
        self._stream(handler, payload, record)

    def _reject(self, handler: BaseHTTPRequestHandler, payload: dict) -> tuple[int, object] | None:
        if not self._authorized(handler):
            return 401, {"error": "Unauthorized"}
        if not handler.path.rstrip("/").endswith("/v1/completions"):
            return 404, {"detail": "Not Found"}
        if payload.get("model") not in (None, self.config.model):
            return 404, {"error": {"message": f"The model `{payload['model']}` does not exist.",
                                   "type": "NotFoundError", "param": "model", "code": 404}}
        for name, message in REJECTED.items():
            if name in payload:
                return 400, {"error": {"message": message, "type": "BadRequestError", "param": name, "code": 400}}
        if payload.get("temperature") not in (None, 1.0, 1):
            return 400, {"error": {"message": SAMPLING,
                                   "type": "BadRequestError", "param": "temperature", "code": 400}}
        if not isinstance(payload.get("prompt"), str):
            return 400, {"error": {"message": "prompt must be a string", "type": "BadRequestError", "code": 400}}
        requested = len(payload["prompt"]) + int(payload.get("max_tokens") or 16)  # a character counts as a token
        if requested > self.config.max_model_len:
            return 400, {"error": {"message": f"This model's maximum context length is {self.config.max_model_len} "
                                   f"tokens. However, you requested {requested} tokens.",
                                   "type": "BadRequestError", "param": "prompt", "code": 400}}
        if self.config.fail_status is not None:
            return self.config.fail_status, {"error": {"message": self.config.fail_message,
                                                       "type": "InternalServerError", "code": self.config.fail_status}}
        return None

    def _stream(self, handler: BaseHTTPRequestHandler, payload: dict, record: Record) -> None:
        text = self.config.reply(payload["prompt"])[: max(1, int(payload.get("max_tokens") or 16)) * 4]
        if payload.get("skip_special_tokens", True):  # vLLM's default: special tokens are left out of the text
            for token in SPECIAL_TEXT:
                text = text.replace(token, "")
        finish = "length"
        for stop in (payload.get("stop") or []) if self.config.honour_stop else []:
            if stop and stop in text:
                text, finish = text[: text.index(stop)], "stop"
        if finish == "length" and len(text) < int(payload.get("max_tokens") or 16) * 4:
            finish = "stop"  # the model wrote EOS
        handler.send_response(200)
        handler.send_header("Content-Type", "text/event-stream")
        handler.end_headers()
        connection = handler.connection
        if not self._denoise(connection, self.config.first_canvas_delay_s):
            self._end(record, "aborted")
            return
        size = self.config.canvas_chars
        canvases = [text[i:i + size] for i in range(0, len(text), size)] or [""]
        for canvas in canvases:
            if not self._denoise(connection, self.config.step_s * self.config.steps_per_canvas):
                self._end(record, "aborted")
                return
            if canvas and not self._send(handler, {"choices": [{"index": 0, "text": canvas, "finish_reason": None}]}):
                self._end(record, "aborted")
                return
            with self.changed:
                record.canvases_sent += 1
                self.changed.notify_all()
        done = {"choices": [{"index": 0, "text": "", "finish_reason": finish}]}
        if self._send(handler, done) and self._send_raw(handler, b"data: [DONE]\n\n"):
            self._end(record, "finished")
        else:
            self._end(record, "aborted")

    def _denoise(self, connection: socket.socket, seconds: float) -> bool:
        """Spend `seconds` 'denoising', checking for a disconnect between steps; False once the client is gone."""
        end = time.perf_counter() + seconds
        while True:
            if _disconnected(connection):
                return False
            left = end - time.perf_counter()
            if left <= 0:
                return True
            time.sleep(min(left, self.config.step_s, 0.005))

    def _send(self, handler: BaseHTTPRequestHandler, chunk: dict) -> bool:
        body = {"id": "cmpl-standin", "object": "text_completion", "created": int(time.time()),
                "model": self.config.model, **chunk}
        return self._send_raw(handler, f"data: {json.dumps(body)}\n\n".encode())

    @staticmethod
    def _send_raw(handler: BaseHTTPRequestHandler, data: bytes) -> bool:
        try:
            handler.wfile.write(data)
            handler.wfile.flush()
            return True
        except (BrokenPipeError, ConnectionResetError):
            return False


def _disconnected(connection: socket.socket) -> bool:
    readable, _, _ = select.select([connection], [], [], 0)
    if not readable:
        return False
    try:
        return connection.recv(1, socket.MSG_PEEK) == b""
    except (ConnectionResetError, OSError):
        return True
