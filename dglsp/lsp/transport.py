"""How the client's bytes reach the server: stdio (the default) or loopback TCP with a token, and clean exits.

* stdio: pygls' own reader. The client closing stdin or SIGTERM ends the server with exit code 0:
  the device work is stopped (its stop flag ends a generation within one denoising step), the
  worker gets a grace period, the logs are flushed, and the process leaves with `os._exit`. Not a
  normal interpreter exit: pygls' stdin reader may be blocked in `readline` (nothing can interrupt
  it), and finalizing Python while a thread is inside torch aborts the process ("terminate called").
* TCP: bound to `ServeSettings.tcp_host` (loopback). The first message on a connection must be
  `initialize` with `initializationOptions.token` equal to the server's token (`--token` or
  `DGLSP_TOKEN`); anything else is answered with an error and the connection closed, without
  touching the server. One client at a time; when it disconnects the server stops, as with stdio.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import os
import re
import signal
import sys
import threading
from typing import Any

from pygls.io_ import run_async

log = logging.getLogger(__name__)

AUTH_TIMEOUT_S = 10.0  # a connection that says nothing is dropped
MAX_FIRST_MESSAGE_BYTES = 1 << 20  # `initialize` is small; an unauthenticated peer gets no bigger buffer
_CONTENT_LENGTH = re.compile(rb"^Content-Length: *(\d+)\r\n$", re.IGNORECASE)


def exit_on_sigterm(server: Any) -> None:
    """SIGTERM: stop the device work, flush the logs, exit 0 (no threads or children outlive the process)."""

    def handle(signum: int, frame: Any) -> None:
        log.info("SIGTERM: exiting")
        exit_now(server)

    signal.signal(signal.SIGTERM, handle)


def exit_now(server: Any, grace_s: float = 5.0) -> None:
    """Stop the device work, give the worker `grace_s` to reach its next stop check, flush, exit 0."""
    server.scheduler.shutdown()
    worker = server.scheduler.worker_thread
    if worker is not None and worker is not threading.current_thread():
        worker.join(grace_s)
    logging.shutdown()
    try:
        sys.stdout.flush()
    except (OSError, ValueError):  # the client may have closed the pipe already
        pass
    os._exit(0)


class BoundedStdin:
    """stdin for pygls' reader, refusing a Content-Length over `limit` bytes.

    pygls allocates the whole body up front, so a header claiming a terabyte kills the process with
    MemoryError. Such a stream cannot be resynchronized either: we log it and report end of input,
    and the server exits cleanly (the editor restarts it).
    """

    def __init__(self, stream: Any, limit: int):
        self.stream = stream
        self.limit = limit

    def readline(self) -> bytes:
        return self.stream.readline()

    def read(self, size: int = -1) -> bytes:
        if size > self.limit:
            log.error("a message claims %d bytes (limit %d): the stream cannot be trusted; exiting", size, self.limit)
            return b""
        return self.stream.read(size)


def serve_stdio(server: Any) -> None:
    exit_on_sigterm(server)
    server.start_io(stdin=BoundedStdin(sys.stdin.buffer, server.serve.max_message_mb << 20))
    log.info("the client closed stdin or sent exit: exiting")
    exit_now(server)


def serve_tcp(server: Any, port: int) -> None:
    """Serve one authenticated client on `server.serve.tcp_host:port` until it disconnects."""
    token = server.serve.token
    if not token:
        raise SystemExit("dglsp serve --tcp needs a token: pass --token or set DGLSP_TOKEN")
    exit_on_sigterm(server)
    server._stop_event = threading.Event()  # pygls' shutdown() sets it; run_async polls it
    try:
        asyncio.run(_serve_tcp(server, server.serve.tcp_host, port, token))
    except (KeyboardInterrupt, SystemExit):
        pass
    server.shutdown()
    log.info("the TCP client disconnected: exiting")
    exit_now(server)


async def _serve_tcp(server: Any, host: str, port: int, token: str) -> None:
    finished = asyncio.Event()
    connected = False

    async def connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connected
        try:
            body = await asyncio.wait_for(_read_body(reader, MAX_FIRST_MESSAGE_BYTES), AUTH_TIMEOUT_S)
            first = json.loads(body)
        except (TimeoutError, asyncio.IncompleteReadError, ValueError, ConnectionError) as exc:
            log.warning("TCP connection dropped before a valid first message: %s", type(exc).__name__)
            writer.close()
            return
        problem = auth_problem(first, token) or ("another client is connected" if connected else None)
        if problem is not None:
            log.warning("TCP connection refused: %s", problem)
            msg_id = first.get("id") if isinstance(first, dict) and isinstance(first.get("id"), (int, str)) else None
            _write(writer, {"jsonrpc": "2.0", "id": msg_id, "error": {"code": -32600, "message": f"dglsp: {problem}"}})
            await writer.drain()
            writer.close()
            return
        connected = True
        server.protocol.set_writer(writer)
        server.protocol.handle_message(json.loads(body, object_hook=server.protocol.structure_message))
        await run_async(stop_event=server._stop_event, reader=reader, protocol=server.protocol, logger=log,
                        error_handler=server.report_server_error)
        finished.set()

    listener = await asyncio.start_server(connection, host, port)
    log.info("serving LSP on %s", ", ".join(str(sock.getsockname()) for sock in listener.sockets))
    async with listener:
        await finished.wait()


def auth_problem(message: Any, token: str) -> str | None:
    """Why `message` does not open an authenticated session, or None if it does."""
    if not isinstance(message, dict) or message.get("method") != "initialize":
        return "the first message must be initialize with initializationOptions.token"
    params = message.get("params")
    options = params.get("initializationOptions") if isinstance(params, dict) else None
    offered = options.get("token") if isinstance(options, dict) else None
    if not isinstance(offered, str) or not hmac.compare_digest(offered.encode(), token.encode()):
        return "missing or wrong initializationOptions.token"
    return None


async def _read_body(reader: asyncio.StreamReader, limit: int) -> bytes:
    """One LSP message body: headers up to a blank line, then Content-Length bytes (at most `limit`)."""
    length = None
    while True:
        line = await reader.readline()
        if not line:
            raise asyncio.IncompleteReadError(b"", None)
        if line in (b"\r\n", b"\n"):
            break
        match = _CONTENT_LENGTH.match(line)
        if match:
            length = int(match.group(1))
    if length is None or length > limit:
        raise ValueError(f"bad Content-Length {length}")
    return await reader.readexactly(length)


def _write(writer: asyncio.StreamWriter, message: dict) -> None:
    body = json.dumps(message).encode()
    writer.write(b"Content-Length: %d\r\n\r\n" % len(body) + body)
