"""Security: loopback TCP with a token, no document text in logs, no files read that the client did not send.

File reads are watched from inside the server process with a Python audit hook (installed by a
`sitecustomize.py` on PYTHONPATH, so the server's code is untouched): every `open` is recorded.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from lsp_raw import QUICK_SAMPLER, RawServer

pytestmark = pytest.mark.e2e

SECRET = "SECRET_4f9a2c_do_not_log"
DOCUMENT = f"api_key = '{SECRET}'\ndef f():\n    return \n"
URI = "file:///security/keys.py"


# -- TCP ---------------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def tcp_exchange(port: int, message: dict, timeout: float = 60) -> dict | None:
    """Send one message on a new connection; return the first response, or None if the server hung up."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as conn:
        body = json.dumps(message).encode()
        conn.sendall(b"Content-Length: %d\r\n\r\n" % len(body) + body)
        stream = conn.makefile("rb")
        length = None
        while True:
            line = stream.readline()
            if not line:
                return None
            if line in (b"\r\n", b"\n"):
                break
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":")[1])
        response = json.loads(stream.read(length))
        return response


def initialize_message(token: str | None) -> dict:
    options = {"sampler": QUICK_SAMPLER, **({"token": token} if token is not None else {})}
    return {"jsonrpc": "2.0", "id": 1, "method": "initialize",
            "params": {"processId": None, "rootUri": None, "capabilities": {}, "initializationOptions": options}}


def listening_addresses(pid: int, port: int) -> list[str]:
    """Local addresses of listening sockets on `port` in the process's network namespace (/proc/net/tcp*)."""
    found = []
    for table in ("tcp", "tcp6"):
        for row in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]:
            local, state = row.split()[1], row.split()[3]
            address, hex_port = local.split(":")
            if int(hex_port, 16) == port and state == "0A":
                found.append(address)
    return found


def test_tcp_needs_a_token_to_start(tiny_model_dir):
    done = subprocess.run([sys.executable, "-m", "dglsp", "serve", "--tcp", str(free_port()), "--model",
                           str(tiny_model_dir), "--no-warmup"], capture_output=True, text=True, timeout=120,
                          env={"PATH": "/usr/bin:/bin"})
    assert done.returncode != 0 and "token" in done.stderr


def test_tcp_binds_loopback_and_refuses_clients_without_the_token(tiny_model_dir, tmp_path):
    port = free_port()
    log = (tmp_path / "stderr.log").open("wb")
    process = subprocess.Popen([sys.executable, "-m", "dglsp", "serve", "--tcp", str(port), "--model",
                                str(tiny_model_dir), "--no-warmup"], stderr=log,
                               env={**os.environ, "DGLSP_TOKEN": "s3cret-token"})
    try:
        deadline = time.monotonic() + 90
        while not listening_addresses(process.pid, port):
            assert process.poll() is None and time.monotonic() < deadline, (tmp_path / "stderr.log").read_text()
            time.sleep(0.2)
        assert listening_addresses(process.pid, port) == ["0100007F"]  # 127.0.0.1, nothing else

        wrong = tcp_exchange(port, initialize_message("guess"))
        assert wrong["error"]["code"] == -32600 and "token" in wrong["error"]["message"]
        missing = tcp_exchange(port, initialize_message(None))
        assert "token" in missing["error"]["message"]
        not_initialize = tcp_exchange(port, {"jsonrpc": "2.0", "id": 7, "method": "dglsp/status"})
        assert not_initialize["id"] == 7 and "initialize" in not_initialize["error"]["message"]
        assert process.poll() is None  # refusals do not touch the server

        accepted = tcp_exchange(port, initialize_message("s3cret-token"))
        assert "inlineCompletionProvider" in accepted["result"]["capabilities"]
        process.wait(30)  # the authenticated client hung up: the server ends, as over stdio
        assert process.returncode == 0
    finally:
        if process.poll() is None:
            process.kill()
        log.close()


# -- logs ---------------------------------------------------------------------------------------
def exercise_with_secret(server: RawServer) -> None:
    """A session that puts the secret through every path that logs: requests, bad edits, bad params."""
    server.initialize()
    server.open(URI, DOCUMENT)
    server.inline(URI, 2, 11)
    server.notify("textDocument/didChange", {"textDocument": {"uri": URI, "version": 2}, "contentChanges": [
        {"range": {"start": {"line": -1, "character": 0}, "end": {"line": 0, "character": 0}}, "text": SECRET}]})
    server.notify("textDocument/didChange", {"textDocument": {"uri": "file:///not/open.py", "version": 2},
                                             "contentChanges": [{"text": SECRET}]})
    server.request("textDocument/inlineCompletion", {"textDocument": SECRET, "position": {"line": SECRET}})
    server.request("workspace/executeCommand", {"command": "dglsp.draft", "arguments": [SECRET]})
    server.send_body(f'{{"text": "{SECRET}", broken'.encode())
    server.inline(URI, 2, 11)


def test_logs_hold_no_document_text_at_info(tiny_model_dir, tmp_path):
    server = RawServer(tiny_model_dir, stderr_path=tmp_path / "stderr.log")
    try:
        exercise_with_secret(server)
    finally:
        server.shutdown()
    log = server.stderr_text()
    assert "[1] keys.py" in log  # requests are logged...
    assert SECRET not in log  # ...without their text
    for method in ("window/logMessage", "window/showMessage"):
        assert not [m for m in server.messages(method) if SECRET in json.dumps(m)]


def test_debug_logging_does_show_document_text(tiny_model_dir, tmp_path):
    """The check above can fail: with --log-level DEBUG the same session puts the text in the log."""
    server = RawServer(tiny_model_dir, "--log-level", "DEBUG", stderr_path=tmp_path / "stderr.log")
    try:
        exercise_with_secret(server)
    finally:
        server.shutdown()
    assert SECRET in server.stderr_text()


# -- files --------------------------------------------------------------------------------------
AUDIT_HOOK = '''
import os, sys
_log = open(os.environ["DGLSP_TEST_OPEN_LOG"], "a", buffering=1)
def _hook(event, args):
    if event == "open" and isinstance(args[0], str):
        _log.write(args[0] + "\\n")
sys.addaudithook(_hook)
'''


def test_server_reads_no_files_the_client_did_not_send(tiny_model_dir, tmp_path):
    workspace = tmp_path / "project"
    (workspace / "pkg").mkdir(parents=True)
    for name in ("pkg/secret.py", "other.py", "README.md"):
        (workspace / name).write_text(f"token = '{SECRET}'\n")
    hooks = tmp_path / "hooks"
    hooks.mkdir()
    (hooks / "sitecustomize.py").write_text(AUDIT_HOOK)
    opened = tmp_path / "opened.txt"
    server = RawServer(tiny_model_dir, stderr_path=tmp_path / "stderr.log",
                       env={"PYTHONPATH": str(hooks), "DGLSP_TEST_OPEN_LOG": str(opened)})
    try:
        server.request("initialize", {"processId": None, "rootUri": workspace.as_uri(), "capabilities": {},
                                      "workspaceFolders": [{"uri": workspace.as_uri(), "name": "project"}],
                                      "initializationOptions": {"sampler": QUICK_SAMPLER}})
        server.notify("initialized", {})
        sent = workspace / "sent.py"
        server.open(sent.as_uri(), "x = 1\ny = \n")  # sent by the client, never written to disk
        assert "result" in server.inline(sent.as_uri(), 1, 4)
        unsent = server.inline((workspace / "other.py").as_uri(), 0, 0)  # on disk, never opened
        assert "not open" in unsent["error"]["message"] and SECRET not in json.dumps(unsent)
    finally:
        server.shutdown()
    paths = opened.read_text().splitlines()
    assert paths, "the audit hook recorded nothing: the check would be vacuous"
    assert not [p for p in paths if p.startswith(str(workspace))], "the server read workspace files"
