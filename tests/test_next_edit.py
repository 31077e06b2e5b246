"""Next-edit suggestions: where to look, the smallest edit, the prompt, the proposal and its gate, and the
`textDocument/copilotInlineEdit` answer in the shape Copilot's clients read."""

from __future__ import annotations

import asyncio
import math

import pytest
from lsprotocol import types
from scripted import ScriptedModel
from test_server_e2e import record_previews, start

from dglsp.completion.completer import Completer
from dglsp.completion.edits import DocumentChange, Edit, EditHistory
from dglsp.completion.next_edit import (
    NextEditor,
    candidate_regions,
    edit_context,
    line_region,
    repeat_call_change,
    repeat_substitution,
    smallest_edit,
    substitution_of,
)
from dglsp.completion.outcome import Reason
from dglsp.config import ContextSettings, EngineSettings, Settings
from dglsp.lsp.server import _plain  # the test client parses results into named tuples, as pygls does
from dglsp.model.loading import load_local

SOURCE = "def area(w, h):\n    return w * h\n\n\nprint(area(2, 3))\nprint(area(4, 5))\n"
URI = "file:///w/shapes.py"


def history_after(text: str, old: str, new: str) -> tuple[str, EditHistory]:
    """The document after replacing the first `old` with `new`, and the history that recorded it."""
    history = EditHistory()
    start = text.index(old)
    history.record(DocumentChange(URI, 2, start, start + len(old), old, new, text))
    return text[:start] + new + text[start + len(old):], history


def test_a_region_is_whole_lines_around_the_cursor():
    text = "a\nb\nc\nd\ne\n"
    region = line_region(text, text.index("c"), 1)
    assert text[region.start:region.end] == "b\nc\nd\n"
    assert text[slice(*_span(line_region(text, 0, 3)))] == "a\nb\nc\nd\n"
    assert text[slice(*_span(line_region(text, len(text) - 1, 0)))] == "e\n"


def _span(region) -> tuple[int, int]:
    return region.start, region.end


def test_a_rename_is_carried_to_the_next_use():
    text, history = history_after(SOURCE, "area(w, h)", "surface(w, h)")
    edits = history.edits(URI)
    substitution = substitution_of(edits[-1])
    assert (substitution.old, substitution.new) == ("area", "surface")
    cursor = text.index("surface") + len("surface")
    regions = candidate_regions(text, cursor, edits, radius=0)
    assert regions[0].why == "substitution" and text[regions[0].start:regions[0].end] == "print(area(2, 3))\n"
    assert regions[-1].why == "cursor"
    baseline = repeat_substitution(text, cursor, edits)
    assert baseline is not None and baseline.apply(text).count("surface") == 2


def _accept(history: EditHistory, text: str, edit: Edit) -> tuple[str, bool]:
    """The client applies `edit` as one content change; (the text after it, whether it counted as an acceptance)."""
    counted = history.record(DocumentChange(URI, 3, edit.start, edit.end, text[edit.start:edit.end], edit.text, text))
    return edit.apply(text), counted


@pytest.mark.parametrize("proposed", [True, False])
def test_an_accepted_edit_is_an_edit_of_its_own_so_the_rename_goes_on(proposed):
    # `w` -> `width` on line 0, and the next use is on line 1: close enough to coalesce with the rename.
    text, history = history_after(SOURCE, "w, h)", "width, h)")
    cursor = text.index("width") + len("width")
    suggestion = repeat_substitution(text, cursor, history.edits(URI))
    assert suggestion is not None and text[suggestion.start:suggestion.end] == "w"
    if proposed:
        history.proposed(URI, text, suggestion)
    after, counted = _accept(history, text, suggestion)
    edits = history.edits(URI)
    assert counted is proposed
    if proposed:  # the accepted change is the last edit: the same substitution, ready for the next use
        assert len(edits) == 2 and substitution_of(edits[-1]) == substitution_of(edits[0])
        assert [note.state for note in history.suggestions(URI)] == ["accepted"]
    else:  # a change the server never proposed merges with the rename: two changes, nothing to repeat
        assert len(edits) == 1 and substitution_of(edits[-1]) is None
    assert after.startswith("def area(width, h):\n    return width * h")


def test_an_acceptance_is_counted_once_whichever_the_client_sends_first():
    text, history = history_after(SOURCE, "w, h)", "width, h)")
    suggestion = repeat_substitution(text, len("def area(width"), history.edits(URI))
    assert suggestion is not None
    history.proposed(URI, text, suggestion)
    assert history.accepted_edit(URI, suggestion)  # the client's command first
    assert not history.accepted_edit(URI, suggestion)
    _, counted = _accept(history, text, suggestion)  # then its didChange: still an edit of its own, not counted
    assert not counted and len(history.edits(URI)) == 2
    # A stale proposal (the document changed another way first) is not an acceptance.
    history.proposed(URI, text, suggestion)
    history.record(DocumentChange(URI, 4, 0, 0, "", "#", text))
    assert not history.accepted_edit(URI, suggestion)


@pytest.mark.parametrize(("before", "old", "deleted_lines"), [
    ("a\nb\nc", "\nb\nc", (1, ["b", "c"])),  # the file's last lines: fewer lines after than before
    ("a\nb\na", "\na", (2, ["a"])),  # the last line repeats the first kept one
    ("a\nb\nc\n", "b\nc\n", (1, ["b", "c"])),
])
def test_a_deletion_at_the_end_of_the_file_is_recorded_as_the_lines_it_removed(before, old, deleted_lines):
    history = EditHistory()
    start = before.rindex(old)
    history.record(DocumentChange(URI, 2, start, start + len(old), old, "", before))
    [edit] = history.edits(URI)
    assert (edit.start_line, edit.old_lines, edit.new_lines) == (*deleted_lines, [])


def test_the_smallest_edit_is_the_changed_span():
    assert smallest_edit("print(area(2, 3))\n", "print(surface(2, 3))\n", 100) == Edit(106, 110, "surface")
    assert smallest_edit("same\n", "same\n", 0) is None
    inserted = smallest_edit("f(a)\n", "f(a, b)\n", 10)
    assert inserted == Edit(13, 13, ", b")


def test_the_prompt_shows_the_history_and_the_region_and_cuts_the_file_around_it():
    text, history = history_after(SOURCE, "area(w, h)", "surface(w, h)")
    region = line_region(text, text.index("print(area(2"), 0)
    diffs = [edit.diff("shapes.py") for edit in history.edits(URI)]
    context = edit_context(text, region, "shapes.py", "python", diffs, ContextSettings())
    assert context.prefix.endswith("\n\n\n") and context.suffix.startswith("print(area(4")
    assert context.rewrite == "print(area(2, 3))\n"
    assert "-def area(w, h):" in context.snippets[0].text and "+def surface(w, h):" in context.snippets[0].text
    assert context.snippets[-1].text == context.rewrite


@pytest.fixture(scope="module")
def bundle(tiny_model_dir):
    return load_local(EngineSettings(model=str(tiny_model_dir), device="cpu"))[0]


def scripted_editor(bundle, rewrite: str, probability: float) -> NextEditor:
    ids = bundle.tokenizer.encode(rewrite, add_special_tokens=False) + [bundle.tokenizer.eos_token_id]
    return NextEditor(Completer(bundle, ScriptedModel(ids, [math.log(probability)] * len(ids))))


def test_a_confident_rewrite_is_proposed_as_its_smallest_edit(bundle):
    text, history = history_after(SOURCE, "area(w, h)", "surface(w, h)")
    editor = scripted_editor(bundle, "print(surface(2, 3))\n", 0.9)
    settings, _ = Settings().updated({"next_edit": {"radius": 0, "min_confidence": 0.5}})
    cursor = text.index("surface") + len("surface")
    proposal = editor.propose(text, cursor, history.edits(URI), [], settings, "shapes.py", "python")
    assert proposal.hidden is None and proposal.region is not None and proposal.region.why == "substitution"
    assert proposal.edit is not None and proposal.edit.apply(text).count("surface(2, 3)") == 1
    assert proposal.confidence == pytest.approx(0.9)


def test_an_unsure_or_unchanged_rewrite_stays_quiet(bundle):
    text, history = history_after(SOURCE, "area(w, h)", "surface(w, h)")
    cursor = text.index("surface") + len("surface")
    settings, _ = Settings().updated({"next_edit": {"radius": 0, "min_confidence": 0.5}})
    unsure = scripted_editor(bundle, "print(surface(2, 3))\n", 0.2).propose(text, cursor, history.edits(URI), [],
                                                                            settings)
    assert unsure.edit is None and unsure.hidden.reason is Reason.LOW_CONFIDENCE
    assert "0.20 < 0.50" in unsure.hidden.detail
    # No history: the cursor's region alone, which the model writes back as it is.
    unchanged = scripted_editor(bundle, "print(area(2, 3))\n", 0.9)
    quiet = unchanged.propose(SOURCE, SOURCE.index("print(area(2"), [], [], settings)
    assert quiet.edit is None and quiet.hidden.reason is Reason.NO_EDIT


@pytest.mark.e2e
async def test_copilot_inline_edit_answers_in_copilots_shape(tiny_model_dir):
    # Random weights: an edit is proposed only if the gate is open and the model rewrites the region differently;
    # either way the answer has Copilot's shape, and an empty one comes with its reason on the preview channel.
    client = await start(tiny_model_dir, {"sampler": {"seed": 1}, "next_edit": {"radius": 1, "min_confidence": 0.0,
                                                                                  "max_steps": 4}}, previews=True)
    previews = record_previews(client)
    client.text_document_did_open(types.DidOpenTextDocumentParams(
        types.TextDocumentItem(uri=URI, language_id="python", version=1, text=SOURCE)))
    renamed = SOURCE.replace("def area", "def surface", 1)
    client.text_document_did_change(types.DidChangeTextDocumentParams(
        text_document=types.VersionedTextDocumentIdentifier(uri=URI, version=2),
        content_changes=[types.TextDocumentContentChangePartial(
            range=types.Range(types.Position(0, 4), types.Position(0, 8)), text="surface")]))
    # sidekick.nvim's didFocus names only the document: the prompt is encoded where the user last edited.
    client.protocol.notify("textDocument/didFocus", {"textDocument": {"uri": URI}})
    client.protocol.notify("textDocument/didFocus", {"textDocument": {"uri": "file:///not/open.py"}})
    assert (await _stats_until(client, lambda stats: stats["prefill_tokens"] > 0))["prefill_tokens"] > 0
    result = await client.protocol.send_request_async("textDocument/copilotInlineEdit", {
        "textDocument": {"uri": URI, "version": 2}, "position": {"line": 0, "character": 11}})
    edits = result.edits
    assert isinstance(edits, list)
    ended = [p for p in previews if p.kind == "edit" and p.done]
    assert ended, "every next-edit request ends with a preview"
    if edits:
        edit = edits[0]
        assert edit.textDocument.uri == URI and edit.textDocument.version == 2
        assert edit.command.command == "dglsp.editAccepted"
        await client.workspace_execute_command_async(types.ExecuteCommandParams(
            command=edit.command.command, arguments=_plain(edit.command.arguments)))
        stats = await _stats_until(client, lambda stats: True)
        assert stats["outcomes"].get("edit_accepted") == 1
    else:
        assert ended[-1].reason
    stale = await client.protocol.send_request_async("textDocument/copilotInlineEdit", {
        "textDocument": {"uri": URI, "version": 1}, "position": {"line": 0, "character": 0}})
    assert stale.edits == []  # asked about a version that is gone
    with pytest.raises(Exception, match="copilotInlineEdit takes"):
        await client.protocol.send_request_async("textDocument/copilotInlineEdit", {"position": 3})
    assert renamed  # the document the server now holds (didChange applied)
    await client.shutdown_session()
    await client.stop()


async def _stats_until(client, done, seconds: float = 60.0) -> dict:
    """`dglsp.stats`, polled until `done(stats)` (background work finishes when it finishes)."""
    deadline = asyncio.get_running_loop().time() + seconds
    while True:
        stats = await client.workspace_execute_command_async(types.ExecuteCommandParams(command="dglsp.stats"))
        if done(stats) or asyncio.get_running_loop().time() > deadline:
            return stats
        await asyncio.sleep(0.2)


def test_a_chat_model_gets_the_edit_as_an_instruction_with_the_region_marked(hub_model_dir):
    from dglsp.completion.prompt import EDIT_INSTRUCTION, REGION_MARKERS, PromptBuilder, PromptFormat
    from dglsp.model.loading import load_tokenizer

    tokenizer = load_tokenizer(hub_model_dir)
    text, history = history_after(SOURCE, "area(w, h)", "surface(w, h)")
    region = line_region(text, text.index("print(area(2"), 0)
    diffs = [edit.diff("shapes.py") for edit in history.edits(URI)]
    context = edit_context(text, region, "shapes.py", "python", diffs, ContextSettings())
    ids = PromptBuilder(tokenizer, PromptFormat.for_model({}, tokenizer), ContextSettings(snippets="on")).build(
        context).ids
    rendered = tokenizer.decode(ids)
    assert EDIT_INSTRUCTION.split(".")[0] in rendered
    assert f"{REGION_MARKERS[0]}print(area(2, 3))\n{REGION_MARKERS[1]}" in rendered
    assert "+def surface(w, h):" in rendered


def test_the_predictor_is_the_models_own_unless_the_settings_name_one(bundle):
    from dataclasses import replace

    from dglsp.model.schedule import ModelDefaults

    text, history = history_after(SOURCE, "area(w, h)", "surface(w, h)")
    editor = scripted_editor(bundle, "print(surface(2, 3))  # the model's rewrite\n", 0.9)
    editor.completer.backend.defaults = replace(editor.completer.backend.defaults, edit_predictor="substitution")
    cursor = text.index("surface") + len("surface")
    settings, _ = Settings().updated({"next_edit": {"radius": 0}})
    repeated = editor.propose(text, cursor, history.edits(URI), [], settings)
    assert repeated.edit is not None and repeated.edit.text == "surface" and repeated.raw == ""  # no model run
    settings, _ = Settings().updated({"next_edit": {"radius": 0, "predictor": "model"}})
    rewritten = editor.propose(text, cursor, history.edits(URI), [], settings)
    assert rewritten.edit is not None and "the model's rewrite" in rewritten.edit.text
    # dglsp.json carries it, and reads it back.
    meta = replace(ModelDefaults(), edit_predictor="substitution").to_meta()
    assert meta["postprocess"]["edit_predictor"] == "substitution"
    assert ModelDefaults.read(meta).edit_predictor == "substitution"
    assert ModelDefaults.read({}).edit_predictor == "model"


def test_the_substitution_predictor_repeats_the_last_edit_without_a_model(bundle):
    text, history = history_after(SOURCE, "area(w, h)", "surface(w, h)")
    settings, _ = Settings().updated({"next_edit": {"predictor": "substitution"}})
    editor = scripted_editor(bundle, "never asked", 0.9)
    proposal = editor.propose(text, text.index("surface") + 7, history.edits(URI), [], settings)
    assert proposal.edit is not None and proposal.edit.apply(text).startswith("def surface(w, h)")
    assert text[proposal.edit.start:proposal.edit.end] == "area" and proposal.edit.text == "surface"
    quiet = editor.propose(SOURCE, 0, [], [], settings)
    assert quiet.edit is None and quiet.hidden.reason is Reason.NO_EDIT
    assert quiet.hidden.detail == "no edit yet to repeat"
    done = proposal.edit.apply(text).replace("area(", "surface(")  # every use renamed already
    finished = editor.propose(done, 0, history.edits(URI), [], settings)
    assert finished.edit is None and finished.hidden.detail == "no 'area' left to change"


def test_the_rewrite_is_a_canvas_even_where_ghost_text_decodes_greedily():
    from dglsp.model.loading import load_engine

    bundle, engine = load_engine(EngineSettings(device="cpu"))  # the embedded model: greedy text by default
    assert engine.defaults.decoding == "lookup"
    text, history = history_after(SOURCE, "area(w, h)", "surface(w, h)")
    settings, _ = Settings().updated({"next_edit": {"radius": 0, "predictor": "model"}, "sampler": {"seed": 0}})
    proposal = NextEditor(Completer(bundle, engine)).propose(text, text.index("surface") + 7, history.edits(URI), [],
                                                             settings)
    assert proposal.stats is not None and proposal.stats.steps > 0  # denoising steps: a canvas


CALLS = ("def wrap(frame, depth=0):\n    return frame\n\n\nwrap(top)\nkept = [wrap(f1) for f1 in frames]\nwrap()\n"
         "wrap(f(x), y)\n")


@pytest.mark.parametrize(("old", "new", "next_old", "next_new"), [
    ("wrap(top)", "wrap(top, 3)", "wrap(f1)", "wrap(f1, 3)"),  # at the end of the arguments
    ("wrap(top)", "wrap(ctx, top)", "wrap(f1)", "wrap(ctx, f1)"),  # at the start
    ("wrap()", "wrap(3)", "wrap()", None),  # an empty call's argument goes only to empty calls: there is no other
    ("wrap(f(x), y)", "wrap(f(x), y, 3)", "wrap(top)", "wrap(top, 3)"),  # nested parentheses; from the top
    ("wrap(top)", "wrap(top, 1)", "wrap(f1)", "wrap(f1, 1)"),  # the 1 in `f1` is not the argument 1
])
def test_a_new_argument_is_carried_to_the_next_call_that_lacks_it(old, new, next_old, next_new):
    text, history = history_after(CALLS, old, new)
    edit = repeat_call_change(text, text.index(new) + len(new), history.edits(URI))
    if next_new is None:
        assert edit is None
        return
    assert edit is not None
    changed = edit.apply(text)
    assert changed.count(next_new) == text.count(next_new) + 1 and changed.count(next_old) == text.count(next_old) - 1


def test_a_new_parameter_or_a_call_that_has_the_argument_is_not_repeated():
    text, history = history_after(CALLS, "def wrap(frame, depth=0):", "def wrap(frame, depth=0, strict=False):")
    assert repeat_call_change(text, 0, history.edits(URI)) is None  # callers' values cannot be read from it
    done = CALLS.replace("wrap(f1)", "wrap(f1, 3)").replace("wrap(f(x), y)", "wrap(f(x), y, 3)")
    text, history = history_after(done, "wrap(top)", "wrap(top, 3)")
    assert repeat_call_change(text, 0, history.edits(URI)) is None  # every other call with arguments has it
