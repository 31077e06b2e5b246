"""Context beyond the cursor window (issue 5): snippet choice, their budget, and the prompt layout."""

from __future__ import annotations

from lsprotocol import types

from dglsp.completion.edits import DocumentChange, EditHistory
from dglsp.completion.prompt import CursorContext, PromptBuilder, PromptFormat, Snippet, encode_fim
from dglsp.completion.snippets import OpenDocument, pick_snippets
from dglsp.config import ContextSettings
from dglsp.lsp.documents import position_after
from dglsp.tools.modelzoo import fim_format_spec

HELPERS = "\n".join([
    "import os",
    "",
    "def read_config(path):",
    "    with open(path) as handle:",
    "        return parse_config(handle.read())",
    "",
] + [f"UNRELATED_{i} = {i}" for i in range(40)] + [
    "def parse_config(text):",
    "    entries = {}",
    "    for line in text.splitlines():",
    "        key, value = line.split('=', 1)",
    "        entries[key.strip()] = value.strip()",
    "    return entries",
])
CONTEXT = CursorContext("def load(path):\n    entries = parse_config(", ")\n", "/p/main.py", "python")
SETTINGS = ContextSettings(snippet_lines=6, max_snippets=2)


def docs(*extra: OpenDocument) -> list[OpenDocument]:
    return [OpenDocument("file:///p/helpers.py", "/p/helpers.py", "python", HELPERS),
            OpenDocument("file:///p/main.py", "/p/main.py", "python", "def load(path):\n    entries = parse_config(\n"),
            *extra]


def test_the_most_similar_chunk_of_another_document_is_picked():
    snippets = pick_snippets("file:///p/main.py", CONTEXT, docs(), SETTINGS)
    assert snippets and snippets[-1].path == "/p/helpers.py"
    assert "def parse_config(text):" in snippets[-1].text
    assert all("UNRELATED_5 =" not in s.text for s in snippets)


def test_the_current_document_and_other_languages_are_not_snippets():
    go = OpenDocument("file:///p/x.go", "/p/x.go", "go", "func parse_config(text string) entries {}\n" * 5)
    snippets = pick_snippets("file:///p/main.py", CONTEXT, docs(go), SETTINGS)
    assert all(s.path not in ("/p/main.py", "/p/x.go") for s in snippets)


def test_nothing_similar_gives_no_snippets():
    far = CursorContext("zebra_quux = ", "\n", "/p/main.py", "python")
    assert pick_snippets("file:///p/main.py", far, docs(), SETTINGS) == ()


def test_a_recent_edit_is_preferred_among_similar_chunks():
    twin = "def parse_config(text):\n    entries = {}\n    return entries\n"
    other = OpenDocument("file:///p/b.py", "/p/b.py", "python", "\n" * 30 + twin)
    history = EditHistory()
    before = other.text.replace("entries = {}", "entries = []")
    start = before.index("entries = []")
    history.record(DocumentChange("file:///p/b.py", 2, start, start + len("entries = []"), "entries = []",
                                  "entries = {}", before))
    assert history.regions() == [("file:///p/b.py", 31)]
    snippets = pick_snippets("file:///p/main.py", CONTEXT, docs(other), SETTINGS, history.regions())
    assert snippets[-1].path == "/p/b.py"
    history.forget("file:///p/b.py")
    assert history.regions() == []


def test_snippets_fit_their_token_budget_and_keep_the_most_similar(tiny_tokenizer):
    fmt = PromptFormat.for_model({"prompt_format": {**fim_format_spec(), "snippets": True}}, tiny_tokenizer)
    big = Snippet("/p/a.py", "value = compute(value)\n" * 40)
    best = Snippet("/p/b.py", "entries = parse_config(text)\n")
    context = CursorContext("x = ", "\n", "/p/main.py", "python", (big, best))
    prompt = PromptBuilder(tiny_tokenizer, fmt, ContextSettings(max_snippet_tokens=40)).build(context)
    assert prompt.context.snippets == (best,)


def test_without_snippets_the_prompt_is_exactly_the_trained_layout(tiny_tokenizer):
    fmt = PromptFormat.for_model({"prompt_format": fim_format_spec()}, tiny_tokenizer)
    plain = CursorContext("def f(x):\n    return ", "\n", "/p/a.py", "python")
    with_snippets = CursorContext(plain.prefix, plain.suffix, plain.path, plain.language_id,
                                  (Snippet("/p/b.py", "def g(y):\n    return y\n"),))
    # The model was not trained with snippets ("auto"): they are left out, ids unchanged.
    assert PromptBuilder(tiny_tokenizer, fmt, ContextSettings()).build(with_snippets).ids == \
        encode_fim(tiny_tokenizer, fmt, plain)
    # Switched on, they sit between the file header and the suffix, so the suffix/prefix tail is unchanged.
    ids = PromptBuilder(tiny_tokenizer, fmt, ContextSettings(snippets="on")).build(with_snippets).ids
    snippet_id = tiny_tokenizer.convert_tokens_to_ids("<|snippet|>")
    suffix_id = tiny_tokenizer.convert_tokens_to_ids("<|suffix|>")
    assert snippet_id in ids and ids.index(snippet_id) < ids.index(suffix_id)
    plain_ids = encode_fim(tiny_tokenizer, fmt, plain)
    assert ids[ids.index(suffix_id):] == plain_ids[plain_ids.index(suffix_id):]


def test_untitled_buffers_get_their_language_as_an_extension(tiny_tokenizer):
    fmt = PromptFormat.for_model({"prompt_format": fim_format_spec()}, tiny_tokenizer)
    ids = encode_fim(tiny_tokenizer, fmt, CursorContext("x = ", "\n", "", "go"))
    assert "untitled.go" in tiny_tokenizer.decode(ids)


def test_replace_range_end_counts_utf16_units():
    start = types.Position(3, 5)
    assert position_after(start, ")") == types.Position(3, 6)
    assert position_after(start, "😀)") == types.Position(3, 8)
    assert position_after(start, "😀)", types.PositionEncodingKind.Utf32) == types.Position(3, 7)


def test_server_adds_snippets_from_open_documents_and_edits():
    from pygls.workspace import Workspace

    from dglsp.config import Settings
    from dglsp.lsp.server import DglspServer

    server = DglspServer(Settings(context=ContextSettings(snippets="on", snippet_lines=6)))
    server.protocol._workspace = Workspace(None)
    for doc in docs():
        server.workspace.put_text_document(types.TextDocumentItem(doc.uri, doc.language_id, 1, doc.text))

    class ChatModel:  # what the server asks of the completer here: its prompt format
        format = PromptFormat("chat", {}, trained_with_snippets=True)

    context = server.service.with_snippets("file:///p/main.py", CONTEXT, ChatModel(), server.settings)
    assert context.snippets and "def parse_config(text):" in context.snippets[-1].text
    off = Settings(context=ContextSettings(snippets="off"))
    assert server.service.with_snippets("file:///p/main.py", CONTEXT, ChatModel(), off).snippets == ()
