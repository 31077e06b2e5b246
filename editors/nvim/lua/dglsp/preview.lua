--- dglsp.preview: the server's one channel for partial text, `dglsp/preview`, drawn with `dglsp.ghost`.
---
--- A notification is { uri, version, kind, range, text, done, reason?, detail?, latency_ms?, passes? }
--- (the client declares `experimental.dglsp.preview` to get them, see `dglsp.lsp`). While a request runs:
--- the live canvas (kind "completion", when the server's `latency.live_canvas` is on) is drawn at its
--- range for as long as the buffer is still at `version`; a draft's committed canvases (kind "draft", the
--- whole draft so far) go to `dglsp.draft`, which owns the draft's ghost text. Every request ends with one
--- `done` preview, recorded for the statusline (`dglsp.status`); a live canvas that ends with nothing to
--- show is cleared (a shown suggestion is drawn by `dglsp.inline` from the request's answer).
local compat = require("dglsp.compat")
local draft = require("dglsp.draft")
local ghost = require("dglsp.ghost")
local status = require("dglsp.status")

local M = {}

local canvases = {} -- bufnr -> extmark id of the live canvas drawn last

local function draw_canvas(bufnr, params, client)
  local here = vim.api.nvim_get_current_buf() == bufnr and vim.fn.mode():match("^i")
  if not here or vim.lsp.util.buf_versions[bufnr] ~= params.version then
    return
  end
  local start = params.range.start
  local line = vim.api.nvim_buf_get_lines(bufnr, start.line, start.line + 1, false)[1] or ""
  local col = compat.byte_col(line, client and client.offset_encoding or "utf-16", start.character)
  canvases[bufnr] = ghost.render(bufnr, start.line, col, params.text)
end

function M.handler(_, params, ctx)
  if type(params) ~= "table" or type(params.uri) ~= "string" then
    return
  end
  if params.kind == "draft" then
    draft.on_preview(params, ctx.client_id)
  end
  local bufnr = vim.uri_to_bufnr(params.uri)
  if params.done then
    status.record(ctx.client_id, params)
    if params.text == "" and ghost.has(bufnr, canvases[bufnr]) then
      ghost.clear(bufnr)
    end
    canvases[bufnr] = nil
  elseif params.kind == "completion" and vim.api.nvim_buf_is_loaded(bufnr) then
    draw_canvas(bufnr, params, vim.lsp.get_client_by_id(ctx.client_id))
  end
end

--- Register the handler (idempotent).
function M.setup()
  vim.lsp.handlers["dglsp/preview"] = M.handler
end

return M
