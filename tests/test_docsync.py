r"""Document sync: random incremental edits leave the server's text equal to the editor's, after every edit.

The editor's view is a reference implementation written here from the LSP spec (lines end at
`\n`, `\r\n` or `\r`; a character past the end of a line means its end; a line past the end
of the document means its end), independent of `dglsp.lsp.documents`. Edits mix CRLF/LF/CR, emoji
and other characters outside the BMP, form feeds and U+2028 (which `str.splitlines` treats as
line breaks, and pygls with it), and ranges at and past line ends, under UTF-16 and UTF-8.

In-process tests drive pygls' workspace as the server does; the end-to-end test sends the same
edits to `dglsp serve --debug-requests` and reads its copy back with `dglsp/documentText`.
`pytest -m slow tests/test_docsync.py -s` runs many more sequences.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from lsp_raw import QUICK_SAMPLER, RawServer
from lsprotocol import types
from pygls.workspace import TextDocument, Workspace

from dglsp.lsp.textsync import adopt

UTF16, UTF8 = types.PositionEncodingKind.Utf16, types.PositionEncodingKind.Utf8
PIECES = ["a", "b", "xyz", " ", "\t", "\n", "\r\n", "\r", "😀", "𝔘", "é", "中", "\x0c", "\u2028", "\x85", "\x00"]
LINE_BREAK = re.compile(r"\r\n|\r|\n")

texts = st.lists(st.sampled_from(PIECES), max_size=30).map("".join)


@dataclass(frozen=True)
class Edit:
    start: tuple[int, int]  # (line, character) in the encoding's units, possibly past the end
    end: tuple[int, int]
    text: str


edits = st.builds(Edit, st.tuples(st.integers(0, 8), st.integers(0, 12)), st.tuples(st.integers(0, 8),
                  st.integers(0, 12)), texts)


def units(char: str, encoding: str) -> int:
    return len(char.encode("utf-16-le")) // 2 if encoding == UTF16 else len(char.encode("utf-8"))


def reference_offset(text: str, line: int, character: int, encoding: str) -> int:
    """The editor's view of a position, straight from the spec."""
    starts = [0] + [match.end() for match in LINE_BREAK.finditer(text)]
    if line >= len(starts):
        return len(text)
    breaks = [match.start() for match in LINE_BREAK.finditer(text)] + [len(text)]
    content = text[starts[line]:breaks[line]]
    used = 0
    for index, char in enumerate(content):
        if used + units(char, encoding) > character:
            return starts[line] + index
        used += units(char, encoding)
    return starts[line] + len(content)


def reference_apply(text: str, edit: Edit, encoding: str) -> str:
    start = reference_offset(text, *edit.start, encoding)
    end = reference_offset(text, *edit.end, encoding)
    start, end = min(start, end), max(start, end)
    return text[:start] + edit.text + text[end:]


def change_of(edit: Edit) -> dict:
    return {"range": {"start": {"line": edit.start[0], "character": edit.start[1]},
                      "end": {"line": edit.end[0], "character": edit.end[1]}}, "text": edit.text}


def server_workspace(encoding: str) -> Workspace:
    workspace = Workspace(None, types.TextDocumentSyncKind.Incremental, position_encoding=encoding)
    adopt(workspace)  # what the server does at initialize
    return workspace


def apply_in_workspace(workspace: Workspace, uri: str, edit: Edit, version: int) -> str:
    change = types.TextDocumentContentChangePartial(
        range=types.Range(types.Position(*edit.start), types.Position(*edit.end)), text=edit.text)
    workspace.update_text_document(types.VersionedTextDocumentIdentifier(uri=uri, version=version), change)
    return workspace.get_text_document(uri).source


@pytest.mark.parametrize("encoding", [UTF16, UTF8])
@settings(max_examples=300, deadline=None)
@given(initial=texts, sequence=st.lists(edits, min_size=1, max_size=12))
def test_random_edit_sequences_keep_server_and_editor_in_sync(encoding, initial, sequence):
    workspace = server_workspace(encoding)
    uri = "file:///sync/a%20b.py"
    workspace.put_text_document(types.TextDocumentItem(uri=uri, language_id="python", version=1, text=initial))
    expected = initial
    for version, edit in enumerate(sequence, start=2):
        expected = reference_apply(expected, edit, encoding)
        assert apply_in_workspace(workspace, uri, edit, version) == expected, (initial, sequence[: version - 1])


def test_pygls_alone_drifts_on_a_form_feed():
    """Why textsync.py exists: the stock document shifts an edit after a form feed by a line."""
    text, edit = "a\x0cb\nc\n", Edit((1, 0), (1, 0), "X")
    stock = TextDocument("file:///x.py", text, position_codec=Workspace(None).position_codec)
    stock.apply_change(types.TextDocumentContentChangePartial(
        range=types.Range(types.Position(1, 0), types.Position(1, 0)), text="X"))
    assert stock.source != reference_apply(text, edit, UTF16)
    workspace = server_workspace(UTF16)
    workspace.put_text_document(types.TextDocumentItem(uri="file:///x.py", language_id="python", version=1, text=text))
    assert apply_in_workspace(workspace, "file:///x.py", edit, 2) == "a\x0cb\nXc\n"


@pytest.fixture(scope="module", params=[UTF16, UTF8])
def sync_server(request, tiny_model_dir, tmp_path_factory):
    server = RawServer(tiny_model_dir, "--debug-requests", stderr_path=tmp_path_factory.mktemp("sync") / "stderr.log")
    result = server.initialize({"sampler": QUICK_SAMPLER}, encoding=request.param)["result"]
    assert result["capabilities"]["positionEncoding"] == request.param
    yield server, request.param
    server.shutdown()


def run_server_sync(sync_server, examples: int) -> None:
    server, encoding = sync_server
    counts = {"sequences": 0, "edits": 0}
    documents = iter(range(10**9))

    @settings(max_examples=examples, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
    @given(initial=texts, sequence=st.lists(edits, min_size=1, max_size=8))
    def check(initial, sequence):
        uri = f"file:///sync/doc-{next(documents)}.py"
        server.open(uri, initial)
        expected = initial
        for version, edit in enumerate(sequence, start=2):
            expected = reference_apply(expected, edit, encoding)
            server.notify("textDocument/didChange", {"textDocument": {"uri": uri, "version": version},
                                                     "contentChanges": [change_of(edit)]})
            copy = server.request("dglsp/documentText", {"uri": uri}, timeout=30)["result"]
            assert copy == {"uri": uri, "version": version, "text": expected}
            counts["edits"] += 1
        counts["sequences"] += 1
        server.notify("textDocument/didClose", {"textDocument": {"uri": uri}})

    check()
    print(f"docsync over stdio ({encoding}): {counts['sequences']} edit sequences, {counts['edits']} edits checked")
    assert counts["sequences"] >= examples


@pytest.mark.e2e
def test_server_copy_matches_the_editor_after_every_edit(sync_server):
    run_server_sync(sync_server, examples=25)


@pytest.mark.e2e
@pytest.mark.slow
def test_server_copy_matches_the_editor_long_run(sync_server):
    run_server_sync(sync_server, examples=500)


@pytest.mark.e2e
def test_document_text_is_refused_without_the_debug_flag(tiny_model_dir, tmp_path):
    server = RawServer(tiny_model_dir, stderr_path=tmp_path / "stderr.log")
    try:
        server.initialize()
        server.open("file:///sync/secret.py", "password = 'hunter2'\n")
        response = server.request("dglsp/documentText", {"uri": "file:///sync/secret.py"})
        assert "error" in response and "hunter2" not in str(response)
    finally:
        server.shutdown()
