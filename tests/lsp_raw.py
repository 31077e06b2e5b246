"""A raw LSP client for robustness tests: the real `dglsp serve` in a subprocess, bytes on its stdin.

pytest-lsp's typed client refuses to send garbage; these tests need to send exactly the bytes
they choose (broken JSON, wrong types, duplicate ids) and to watch the process itself (exit
code, threads, memory). Requests the server sends to the client (progress tokens, applyEdit)
are answered with `null` so the server never waits on us.
"""

from __future__ import annotations

import itertools
import json
import os
import queue
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

QUICK_SAMPLER = {"canvas_length": 8, "max_steps": 2, "seed": 0}


class RawServer:
    def __init__(self, model_dir: Path, *args: str, stderr_path: Path | None = None, env: dict | None = None):
        self.stderr_path = stderr_path
        stderr = stderr_path.open("wb") if stderr_path else subprocess.DEVNULL
        self.process = subprocess.Popen(
            [sys.executable, "-m", "dglsp", "serve", "--model", str(model_dir), "--no-warmup", *args],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=stderr, env={**os.environ, **(env or {})},
        )
        self._ids = itertools.count(1)
        self._responses: dict[Any, dict] = {}
        self._arrived = threading.Condition()
        self._writing = threading.Lock()
        self.notifications: queue.Queue[dict] = queue.Queue()
        self.received: list[dict] = []  # every message from the server, in order
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    # -- sending ---------------------------------------------------------------------------
    def send_bytes(self, data: bytes) -> None:
        with self._writing:  # the reader thread answers the server's requests concurrently
            self.process.stdin.write(data)
            self.process.stdin.flush()

    def send_body(self, body: bytes) -> None:
        self.send_bytes(b"Content-Length: %d\r\n\r\n" % len(body) + body)

    def send(self, message: Any) -> None:
        self.send_body(json.dumps(message).encode())

    def notify(self, method: str, params: Any = None) -> None:
        self.send({"jsonrpc": "2.0", "method": method, **({} if params is None else {"params": params})})

    def request(self, method: str, params: Any = None, timeout: float = 60) -> dict:
        msg_id = self.send_request(method, params)
        return self.wait_response(msg_id, timeout)

    def send_request(self, method: str, params: Any = None, msg_id: Any = None) -> Any:
        msg_id = next(self._ids) if msg_id is None else msg_id
        self.send({"jsonrpc": "2.0", "id": msg_id, "method": method,
                   **({} if params is None else {"params": params})})
        return msg_id

    def wait_response(self, msg_id: Any, timeout: float = 60) -> dict:
        deadline = time.monotonic() + timeout
        with self._arrived:
            while msg_id not in self._responses:
                left = deadline - time.monotonic()
                if left <= 0 or self.process.poll() is not None:
                    raise TimeoutError(f"no response to {msg_id!r} (server exit code {self.process.poll()})")
                self._arrived.wait(min(left, 0.5))
            return self._responses.pop(msg_id)

    def wait_count(self, key: Any, count: int, timeout: float = 60) -> list[dict]:
        """For duplicate ids: wait until `count` responses with that id arrived."""
        deadline = time.monotonic() + timeout
        found: list[dict] = []
        while time.monotonic() < deadline:
            found = [m for m in self.received if m.get("id") == key and "method" not in m]
            if len(found) >= count:
                return found
            time.sleep(0.05)
        raise TimeoutError(f"only {len(found)} of {count} responses to {key!r}")

    # -- a session -----------------------------------------------------------------------------
    def initialize(self, options: dict | None = None, encoding: str | None = None) -> dict:
        capabilities: dict = {"textDocument": {"inlineCompletion": {}}}
        if encoding:
            capabilities["general"] = {"positionEncodings": [encoding]}
        response = self.request("initialize", {"processId": None, "rootUri": None, "capabilities": capabilities,
                                               "initializationOptions": options or {"sampler": QUICK_SAMPLER}})
        self.notify("initialized", {})
        return response

    def open(self, uri: str, text: str, version: int = 1) -> None:
        self.notify("textDocument/didOpen", {"textDocument": {"uri": uri, "languageId": "python", "version": version,
                                                               "text": text}})

    def inline(self, uri: str, line: int, character: int, timeout: float = 60) -> dict:
        return self.request("textDocument/inlineCompletion", inline_params(uri, line, character), timeout)

    def shutdown(self, timeout: float = 30) -> int:
        """The polite end of a session; returns the exit code."""
        if self.process.poll() is None:
            try:
                self.request("shutdown", None, timeout)
                self.notify("exit")
            except (TimeoutError, BrokenPipeError, OSError):
                pass
        return self.close(timeout)

    def close(self, timeout: float = 30) -> int:
        try:
            self.process.stdin.close()
        except OSError:
            pass
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait()

    # -- the process ---------------------------------------------------------------------------
    def threads(self) -> int:
        return len(os.listdir(f"/proc/{self.process.pid}/task"))

    def rss_mb(self) -> float:
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return 0.0

    def stderr_text(self) -> str:
        return self.stderr_path.read_text(errors="replace") if self.stderr_path else ""

    def _read(self) -> None:
        stream = self.process.stdout
        while True:
            length = None
            while True:
                line = stream.readline()
                if not line:
                    return
                if line in (b"\r\n", b"\n"):
                    break
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            body = stream.read(length or 0)
            message = json.loads(body)
            self.received.append(message)
            if "method" in message and "id" in message:  # a request to the client: answer it
                self.send({"jsonrpc": "2.0", "id": message["id"], "result": None})
            elif "method" in message:
                self.notifications.put(message)
            else:
                with self._arrived:
                    self._responses[message.get("id")] = message
                    self._arrived.notify_all()

    def messages(self, method: str) -> list[dict]:
        return [m for m in self.received if m.get("method") == method]


def inline_params(uri: str, line: int, character: int) -> dict:
    return {"textDocument": {"uri": uri}, "position": {"line": line, "character": character},
            "context": {"triggerKind": 2}}


def is_well_formed_response(message: dict) -> bool:
    """JSON-RPC 2.0: exactly one of result / error; an error has an int code and a str message."""
    if message.get("jsonrpc") != "2.0" or "id" not in message:
        return False
    if ("result" in message) == ("error" in message):
        return False
    error = message.get("error")
    return error is None or (isinstance(error.get("code"), int) and isinstance(error.get("message"), str))
