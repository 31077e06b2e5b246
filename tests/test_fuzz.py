"""Protocol fuzzing: the real server over stdio takes hostile messages and keeps serving.

Hypothesis generates broken bodies (not JSON, not UTF-8, not an object), requests with wrong
types, missing, extra and huge fields, unknown methods, duplicate ids, cancels for unknown ids
and stray responses. Every request must get exactly one well-formed JSON-RPC response with its
id; a body that is not JSON gets a ParseError with id null; the process must stay up and still
complete code afterwards. The tally of messages and outcomes is printed (run with `-s`) and
written to `fuzz-outcomes.json` in the test's tmp directory.

`pytest -m slow tests/test_fuzz.py -s` runs the long variant.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from lsp_raw import QUICK_SAMPLER, RawServer, inline_params, is_well_formed_response

pytestmark = pytest.mark.e2e

URI = "file:///fuzz/a.py"
TEXT = "def add(a, b):\n    return \n\nprint(add(1, 2))\n"
REQUEST_METHODS = ["textDocument/inlineCompletion", "textDocument/completion", "textDocument/hover",
                   "workspace/executeCommand", "dglsp/status", "dglsp/documentText", "no/suchMethod", ""]
NOTIFICATION_METHODS = ["textDocument/didOpen", "textDocument/didChange", "textDocument/didClose",
                        "$/cancelRequest", "$/setTrace", "no/suchNotification"]

json_scalars = (st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70)
                | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=40))
json_values = st.recursive(json_scalars, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(st.text(max_size=12), inner, max_size=4), max_leaves=10)
huge_values = st.sampled_from([2**63, -(2**63), 2**200, 1e308, "x" * 200_000, ["y"] * 20_000])


@st.composite
def mutated(draw, valid: dict) -> object:
    """Valid params with one field removed, retyped, made huge, or an extra field added."""
    params = json.loads(json.dumps(valid))
    path: list[str] = []
    node = params
    while isinstance(node, dict) and node and draw(st.booleans()):
        key = draw(st.sampled_from(sorted(node)))
        path.append(key)
        if not isinstance(node[key], dict):
            break
        node = node[key]
    parent = params
    for key in path[:-1]:
        parent = parent[key]
    action = draw(st.sampled_from(["drop", "retype", "huge", "extra", "whole"]))
    if action == "whole" or not path:
        return draw(json_values)
    if action == "drop":
        parent.pop(path[-1], None)
    elif action == "retype":
        parent[path[-1]] = draw(json_values)
    elif action == "huge":
        parent[path[-1]] = draw(huge_values)
    else:
        parent[draw(st.text(min_size=1, max_size=8))] = draw(json_values)
    return params


VALID_PARAMS = {
    "textDocument/inlineCompletion": inline_params(URI, 1, 11),
    "textDocument/completion": {"textDocument": {"uri": URI}, "position": {"line": 1, "character": 11}},
    "textDocument/hover": {"textDocument": {"uri": URI}, "position": {"line": 0, "character": 0}},
    "workspace/executeCommand": {"command": "dglsp.draft", "arguments": [{"uri": URI,
                                                                          "position": {"line": 1, "character": 11}}]},
    "textDocument/didChange": {"textDocument": {"uri": URI, "version": 2}, "contentChanges": [
        {"range": {"start": {"line": 1, "character": 11}, "end": {"line": 1, "character": 11}}, "text": "a"}]},
    "textDocument/didOpen": {"textDocument": {"uri": URI, "languageId": "python", "version": 1, "text": TEXT}},
    "textDocument/didClose": {"textDocument": {"uri": URI}},
    "$/cancelRequest": {"id": 999_999},
}


def params_for(method: str) -> st.SearchStrategy:
    valid = VALID_PARAMS.get(method)
    return json_values if valid is None else (mutated(valid) | st.just(valid))


broken_bodies = (st.binary(max_size=200) | st.text(max_size=200).map(str.encode)
                 | st.sampled_from([b"{", b'{"jsonrpc": "2.0", "id": 1, "method": ', b"\xff\xfe\x00", b"[]",
                                    b"null", b"42", b'"just a string"', b'{"jsonrpc": "2.0"}']))


@st.composite
def fuzz_message(draw) -> tuple[str, object]:
    kind = draw(st.sampled_from(["request", "request", "request", "notification", "broken", "duplicate",
                                 "stray_response", "cancel_unknown", "bad_jsonrpc"]))
    if kind in ("request", "duplicate"):
        method = draw(st.sampled_from(REQUEST_METHODS) | st.text(max_size=30))
        return kind, (method, draw(params_for(method)))
    if kind == "notification":
        method = draw(st.sampled_from(NOTIFICATION_METHODS))
        return kind, (method, draw(params_for(method)))
    if kind == "broken":
        return kind, draw(broken_bodies)
    if kind == "stray_response":
        return kind, {"jsonrpc": "2.0", "id": draw(json_scalars), "result": draw(json_values)}
    if kind == "cancel_unknown":
        return kind, {"jsonrpc": "2.0", "method": "$/cancelRequest", "params": {"id": draw(json_scalars)}}
    return kind, {"jsonrpc": draw(st.sampled_from(["1.0", "3", 2, None])), "id": "bad-jsonrpc", "method": "x"}


class Tally:
    """What the fuzz run sent and what came back, by kind and by outcome."""

    def __init__(self) -> None:
        self.sent: Counter[str] = Counter()
        self.outcomes: Counter[str] = Counter()

    def answered(self, response: dict) -> None:
        assert is_well_formed_response(response), response
        error = response.get("error")
        self.outcomes["result" if error is None else f"error {error['code']}"] += 1

    def report(self, out: Path) -> str:
        data = {"messages_sent": sum(self.sent.values()), "by_kind": dict(self.sent), "outcomes": dict(self.outcomes)}
        out.write_text(json.dumps(data, indent=2))
        return f"fuzz: {json.dumps(data)}"


def exchange(server: RawServer, tally: Tally, kind: str, payload: object, serial: int) -> None:
    """Send one fuzz message and check what must come back."""
    tally.sent[kind] += 1
    if kind == "request":
        method, params = payload
        msg_id = server.send_request(method, params, msg_id=f"fuzz-{serial}")
        tally.answered(server.wait_response(msg_id, timeout=60))
    elif kind == "duplicate":
        method, params = payload
        key = f"dup-{serial}"
        server.send_request(method, params, msg_id=key)
        server.send_request(method, params, msg_id=key)
        tally.sent[kind] += 1
        for response in server.wait_count(key, 2, timeout=60):
            tally.answered(response)
    elif kind == "notification":
        method, params = payload
        server.notify(method, params)
        tally.outcomes["notification (no response due)"] += 1
    elif kind == "broken":
        before = _parse_errors(server)
        server.send_body(payload)
        if not payload:  # Content-Length: 0 carries no message at all
            tally.outcomes["empty body (nothing to answer)"] += 1
        elif _is_json(payload):
            tally.outcomes["not a request (no response due)"] += 1
        else:
            server.request("dglsp/status", timeout=30)  # a barrier: everything before it has been read
            assert _parse_errors(server) == before + 1, "a body that is not JSON must get one ParseError"
            tally.outcomes["error -32700 (id null)"] += 1
    elif kind == "bad_jsonrpc":
        server.send(payload)
        tally.outcomes["not JSON-RPC 2.0 (ignored)"] += 1
    else:
        server.send(payload)
        tally.outcomes[f"{kind} (no response due)"] += 1
    assert server.process.poll() is None, f"the server died after a {kind} message"


def _parse_errors(server: RawServer) -> int:
    return sum(1 for m in server.received if m.get("id", 0) is None and m.get("error", {}).get("code") == -32700)


def _is_json(body: bytes) -> bool:
    try:
        json.loads(body)
        return True
    except ValueError:
        return False


def assert_still_serving(server: RawServer) -> None:
    server.open("file:///fuzz/alive.py", "x = 1\ny = \n", version=1)
    response = server.inline("file:///fuzz/alive.py", 1, 4, timeout=60)
    assert "result" in response and isinstance(response["result"]["items"], list), response


@pytest.fixture(scope="module")
def fuzz_server(tiny_model_dir, tmp_path_factory):
    server = RawServer(tiny_model_dir, stderr_path=tmp_path_factory.mktemp("fuzz") / "stderr.log")
    server.initialize({"sampler": QUICK_SAMPLER, "draft": {"max_tokens": 16}})
    server.open(URI, TEXT)
    yield server
    server.shutdown()


def run_fuzz(fuzz_server: RawServer, tmp_path: Path, examples: int) -> None:
    tally = Tally()
    serial = iter(range(10**9))

    @settings(max_examples=examples, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(st.lists(fuzz_message(), min_size=1, max_size=5))
    def fuzz(messages):
        for kind, payload in messages:
            exchange(fuzz_server, tally, kind, payload, next(serial))

    fuzz()
    assert_still_serving(fuzz_server)
    print(tally.report(tmp_path / "fuzz-outcomes.json"))
    assert sum(tally.sent.values()) >= examples


def test_fuzzed_messages_all_get_answers_and_the_server_keeps_serving(fuzz_server, tmp_path):
    run_fuzz(fuzz_server, tmp_path, examples=60)


@pytest.mark.slow
def test_fuzz_long_run(fuzz_server, tmp_path):
    run_fuzz(fuzz_server, tmp_path, examples=1500)


def test_requests_before_initialize_and_after_shutdown_get_errors(tiny_model_dir, tmp_path):
    server = RawServer(tiny_model_dir, stderr_path=tmp_path / "stderr.log")
    try:
        early = server.inline(URI, 0, 0, timeout=60)
        assert early["error"]["code"] == -32002  # ServerNotInitialized
        server.notify("textDocument/didOpen", VALID_PARAMS["textDocument/didOpen"])  # dropped or kept: no answer due
        assert "result" in server.initialize()
        assert "result" in server.request("shutdown")
        late = server.request("dglsp/status")
        assert late["error"]["code"] == -32600  # InvalidRequest: only exit is accepted now
        server.notify("exit")
        assert server.process.wait(30) == 0
    finally:
        server.close()


def test_a_header_claiming_a_terabyte_ends_the_session_cleanly(tiny_model_dir, tmp_path):
    """pygls would allocate the claimed body up front and die of MemoryError; the stream is lost either way."""
    server = RawServer(tiny_model_dir, stderr_path=tmp_path / "stderr.log")
    try:
        server.initialize()
        server.send_bytes(b"Content-Length: 1000000000000\r\n\r\n{}")
        assert server.process.wait(30) == 0
        assert "claims 1000000000000 bytes" in server.stderr_text()
    finally:
        server.close()
