--- dglsp.next_edit: next-edit suggestions — the edit the server predicts after yours, anywhere in the buffer.
---
--- Asks `textDocument/copilotInlineEdit` (Copilot's shape: `{ edits = { { range, text, textDocument, command } } }`)
--- `debounce_ms` after an edit in normal mode (TextChanged, InsertLeave), never while ghost text (a suggestion, a
--- draft) is on screen, and on demand (`:DglspNextEdit`, `keys.edit_request`). The edit is drawn where it lands:
--- the replaced text highlighted `DglspEditRemove`, the new text `DglspEditAdd` (inline after it for a change
--- within one line, as virtual lines below otherwise). When it is off screen or more than `jump_lines` lines
--- from the cursor, a hint at the cursor says where (`→ edit at line N`) and the apply key jumps there first;
--- the next press applies it with `vim.lsp.util.apply_text_edits` and runs the item's command
--- (`dglsp.editAccepted`). Showing it sends `textDocument/didShowInlineEdit`. The dismiss key, any edit to the
--- buffer, entering insert mode or a new request removes it; a new request cancels the one in flight.
local compat = require("dglsp.compat")
local ghost = require("dglsp.ghost")
local inline = require("dglsp.inline")
local lsp = require("dglsp.lsp")

local M = {}

local METHOD = "textDocument/copilotInlineEdit"

M.ns = vim.api.nvim_create_namespace("dglsp.next_edit")
M.enabled = true
M.debounce_ms = 300
M.jump_lines = 6
-- Counters for the tests and :DglspStatus.
M.stats = { requests = 0, shown = 0, jumped = 0, applied = 0, dismissed = 0, errors = 0, last_error = nil }

---@class dglsp.ShownEdit
---@field bufnr integer
---@field client vim.lsp.Client
---@field item table the server's edit: { range, text, textDocument = { uri, version }, command }
---@field row integer where the replaced text starts and ends (0-based row, byte col)
---@field col integer
---@field end_row integer
---@field end_col integer
---@field hint integer? extmark id of the hint at the cursor
---@type dglsp.ShownEdit?
local current
local pending ---@type { client: vim.lsp.Client, id: integer? }?
local timer

local function cancel_pending()
  if pending and pending.id then
    lsp.cancel(pending.client, pending.id)
  end
  pending = nil
end

--- Remove the shown edit (a no-op when none).
function M.clear()
  local edit = current
  current = nil
  if edit and vim.api.nvim_buf_is_valid(edit.bufnr) then
    vim.api.nvim_buf_clear_namespace(edit.bufnr, M.ns, 0, -1)
  end
end

-- Is the shown edit still true: its buffer still at the version the server computed it for?
local function shown()
  local edit = current
  if edit and vim.api.nvim_buf_is_valid(edit.bufnr) then
    if vim.lsp.util.buf_versions[edit.bufnr] == edit.item.textDocument.version then
      return edit
    end
  end
  M.clear()
  return nil
end

-- Off screen, or more than `jump_lines` lines from the cursor: the apply key jumps there first.
local function far(edit)
  if vim.api.nvim_get_current_buf() ~= edit.bufnr then
    return true
  end
  local row = vim.api.nvim_win_get_cursor(0)[1] - 1
  local off_screen = edit.row < vim.fn.line("w0") - 1 or edit.row > vim.fn.line("w$") - 1
  return off_screen or row < edit.row - M.jump_lines or row > edit.end_row + M.jump_lines
end

local function mark(edit, row, col, opts)
  opts.strict = false
  local ok, id = pcall(vim.api.nvim_buf_set_extmark, edit.bufnr, M.ns, row, col, opts)
  return ok and id or nil
end

-- The hint at the cursor while the edit is far; none once the cursor is near it.
local function draw_hint(edit)
  if edit.hint then
    pcall(vim.api.nvim_buf_del_extmark, edit.bufnr, M.ns, edit.hint)
    edit.hint = nil
  end
  if vim.api.nvim_get_current_buf() == edit.bufnr and far(edit) then
    local hint = ("→ edit at line %d"):format(edit.row + 1)
    local row = vim.api.nvim_win_get_cursor(0)[1] - 1
    edit.hint = mark(edit, row, 0, { virt_text = { { hint, "DglspEditHint" } }, virt_text_pos = "eol" })
  end
end

local function line_at(bufnr, row)
  return vim.api.nvim_buf_get_lines(bufnr, row, row + 1, false)[1] or ""
end

local function draw(edit)
  local text = edit.item.text
  if edit.row ~= edit.end_row or edit.col ~= edit.end_col then
    mark(edit, edit.row, edit.col, { end_row = edit.end_row, end_col = edit.end_col, hl_group = "DglspEditRemove" })
  end
  local lines = vim.split(text, "\n", { plain = true })
  if text ~= "" and #lines == 1 and edit.row == edit.end_row then
    mark(edit, edit.end_row, edit.end_col, { virt_text = { { text, "DglspEditAdd" } }, virt_text_pos = "inline" })
  elseif text ~= "" then
    -- The lines as they will read: the start line up to the edit, the new text, the end line's rest.
    lines[1] = line_at(edit.bufnr, edit.row):sub(1, edit.col) .. lines[1]
    lines[#lines] = lines[#lines] .. line_at(edit.bufnr, edit.end_row):sub(edit.end_col + 1)
    local virt_lines = vim.tbl_map(function(line)
      return { { line, "DglspEditAdd" } }
    end, lines)
    mark(edit, edit.end_row, 0, { virt_lines = virt_lines })
  end
  draw_hint(edit)
end

--- Draw `item` (the server's edit, at `client`'s position encoding) in `bufnr`, replacing a shown edit, and tell
--- the server it is shown. The entry point for the tests of what is drawn.
function M.show(bufnr, client, item)
  local encoding = client.offset_encoding or "utf-16"
  local last = vim.api.nvim_buf_line_count(bufnr) - 1
  local function at(position)
    if position.line > last then -- past the end (the edit takes the last newline)
      return last, #line_at(bufnr, last)
    end
    return position.line, compat.byte_col(line_at(bufnr, position.line), encoding, position.character)
  end
  local row, col = at(item.range.start)
  local end_row, end_col = at(item.range["end"])
  M.clear()
  current = { bufnr = bufnr, client = client, item = item, row = row, col = col, end_row = end_row, end_col = end_col }
  draw(current)
  M.stats.shown = M.stats.shown + 1
  -- The server notes it in the document's edit history (Copilot's notification, item = { command }).
  lsp.notify(client, "textDocument/didShowInlineEdit", { item = { command = item.command } })
end

local function on_result(request, bufnr, version, err, result)
  if pending ~= request then
    return -- superseded or cancelled
  end
  pending = nil
  if err then
    M.stats.errors = M.stats.errors + 1
    M.stats.last_error = err.message
    return
  end
  local item = type(result) == "table" and type(result.edits) == "table" and result.edits[1] or nil
  local still = vim.api.nvim_buf_is_valid(bufnr) and vim.lsp.util.buf_versions[bufnr] == version
  if item and still and not vim.fn.mode():match("^i") then
    item.textDocument = item.textDocument or { uri = vim.uri_from_bufnr(bufnr), version = version }
    M.show(bufnr, request.client, item)
  end
end

--- Ask for the next edit in `bufnr` (default: the current buffer) now, replacing a shown one. `on_demand`:
--- asked by the user, so asked even with automatic requests off. Returns true when a request went out.
function M.request(bufnr, on_demand)
  bufnr = bufnr or vim.api.nvim_get_current_buf()
  cancel_pending()
  M.clear()
  local client = lsp.client(bufnr)
  if not client or vim.api.nvim_get_current_buf() ~= bufnr then
    return false
  end
  local automatic = M.enabled and inline.enabled and not vim.fn.mode():match("^i")
  if not on_demand and not (automatic and not inline.held[bufnr] and ghost.shown(bufnr) == nil) then
    return false
  end
  local params = vim.lsp.util.make_position_params(0, client.offset_encoding)
  local version = vim.lsp.util.buf_versions[bufnr]
  params.textDocument.version = version
  local request = { client = client }
  pending = request
  local ok, id = lsp.request(client, METHOD, params, function(err, result)
    on_result(request, bufnr, version, err, result)
  end, bufnr)
  if not ok then
    pending = nil
    return false
  end
  request.id = id
  M.stats.requests = M.stats.requests + 1
  return true
end

local function schedule(bufnr)
  timer = timer or vim.uv.new_timer()
  timer:stop()
  timer:start(
    M.debounce_ms,
    0,
    vim.schedule_wrap(function()
      if vim.api.nvim_buf_is_valid(bufnr) and vim.api.nvim_get_current_buf() == bufnr then
        M.request(bufnr)
      end
    end)
  )
end

--- The apply key: jump to a far edit, else apply the shown edit. False when none is shown.
function M.jump_or_apply()
  local edit = shown()
  if not edit or vim.api.nvim_get_current_buf() ~= edit.bufnr then
    return false
  end
  if far(edit) then
    vim.cmd("normal! m'") -- <C-o> comes back
    vim.api.nvim_win_set_cursor(0, { edit.row + 1, edit.col })
    draw_hint(edit)
    M.stats.jumped = M.stats.jumped + 1
    return true
  end
  M.clear()
  local item, encoding = edit.item, edit.client.offset_encoding
  vim.lsp.util.apply_text_edits({ { range = item.range, newText = item.text } }, edit.bufnr, encoding)
  local lines = vim.split(item.text, "\n", { plain = true })
  local end_col = (#lines == 1 and edit.col or 0) + #lines[#lines]
  pcall(vim.api.nvim_win_set_cursor, 0, { edit.row + #lines, math.max(end_col - 1, 0) })
  if item.command then
    -- dglsp.editAccepted: the server's history notes the accept.
    local command = { command = item.command.command, arguments = item.command.arguments }
    lsp.request(edit.client, "workspace/executeCommand", command, function() end, edit.bufnr)
  end
  M.stats.applied = M.stats.applied + 1
  return true
end

--- The dismiss key: remove the shown edit. False when none is shown.
function M.dismiss()
  if not shown() then
    return false
  end
  M.clear()
  M.stats.dismissed = M.stats.dismissed + 1
  return true
end

--- Hook `bufnr`'s events (called when the server attaches to it; idempotent).
function M.attach(bufnr)
  local group = vim.api.nvim_create_augroup("dglsp.next_edit." .. bufnr, { clear = true })
  local function autocmd(events, callback)
    vim.api.nvim_create_autocmd(events, { group = group, buffer = bufnr, callback = callback })
  end
  autocmd({ "TextChanged", "InsertLeave" }, function()
    M.clear()
    schedule(bufnr)
  end)
  autocmd({ "InsertEnter", "TextChangedI", "TextChangedP" }, function()
    if timer then
      timer:stop()
    end
    cancel_pending()
    M.clear()
  end)
  autocmd("CursorMoved", function()
    if current and current.bufnr == bufnr then
      draw_hint(current)
    end
  end)
  autocmd({ "BufUnload", "LspDetach" }, function()
    if current and current.bufnr == bufnr then
      M.clear()
    end
    pcall(vim.api.nvim_del_augroup_by_id, group)
  end)
end

--- Apply the options (`config.next_edit`) and define the highlight groups (a user's own definitions win).
function M.setup(options)
  M.enabled, M.debounce_ms, M.jump_lines = options.enabled, options.debounce_ms, options.jump_lines
  vim.api.nvim_set_hl(0, "DglspEditRemove", { link = "DiffDelete", default = true })
  vim.api.nvim_set_hl(0, "DglspEditAdd", { link = "DiffAdd", default = true })
  vim.api.nvim_set_hl(0, "DglspEditHint", { link = "Comment", default = true })
end

--- The shown edit, for tests and :DglspStatus: nil, or { row, col, end_row, end_col, text, far }.
function M.inspect()
  local edit = shown()
  if not edit then
    return nil
  end
  return {
    row = edit.row,
    col = edit.col,
    end_row = edit.end_row,
    end_col = edit.end_col,
    text = edit.item.text,
    far = far(edit),
  }
end

return M
