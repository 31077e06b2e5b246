--- dglsp.canvas: render the server's live canvas (`dglsp/canvas` notifications) as ghost text.
---
--- Off unless the server setting `latency.live_canvas` is true. Each notification carries
--- { uri, version, position = { line, character }, text, step, done }: while the buffer is
--- still at `version` and the cursor at `position`, the suggestion is redrawn as it denoises;
--- `done` hands over to the normal inline-completion answer (which draws the final text).
local compat = require("dglsp.compat")
local ghost = require("dglsp.ghost")

local M = {}

function M.handler(_, params, ctx)
  if type(params) ~= "table" or params.done then
    return
  end
  local bufnr = vim.uri_to_bufnr(params.uri)
  if not vim.api.nvim_buf_is_loaded(bufnr) or vim.lsp.util.buf_versions[bufnr] ~= params.version then
    return
  end
  local client = vim.lsp.get_client_by_id(ctx.client_id)
  local encoding = client and client.offset_encoding or "utf-16"
  local row = params.position.line
  local line = vim.api.nvim_buf_get_lines(bufnr, row, row + 1, false)[1] or ""
  ghost.render(bufnr, row, compat.byte_col(line, encoding, params.position.character), params.text)
end

--- Register the handler (idempotent).
function M.setup()
  vim.lsp.handlers["dglsp/canvas"] = M.handler
end

return M
