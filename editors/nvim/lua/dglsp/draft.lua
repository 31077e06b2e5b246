--- dglsp.draft: `:DglspDraft` — a long draft (a function body, a test, the rest of a file) on demand.
---
--- Sends `workspace/executeCommand` `dglsp.draft` with `apply = false` at the cursor (insert mode:
--- the cursor; normal mode: after the character under it) or, with a range (visual mode), after the
--- end of its last line. The server streams the draft so far as `dglsp/preview` notifications of kind
--- "draft" (`dglsp.preview` hands ours to `on_preview`); each is drawn as ghost text, so the draft grows
--- on screen. Its answer `{ text, range }` stays as ghost text for `accept()` (insert it) or
--- `dismiss()`. One draft at a time. `cancel()` (also `dismiss()` while drafting) sends
--- `$/cancelRequest`: the server stops within one denoising step and nothing is inserted. An edit
--- to the buffer cancels a draft in flight (the server drops it too) and removes a shown one.
local compat = require("dglsp.compat")
local ghost = require("dglsp.ghost")
local inline = require("dglsp.inline")
local lsp = require("dglsp.lsp")

local M = {}

local REQUEST_CANCELLED = -32800

-- Counters for the tests and :DglspStatus.
M.stats = { started = 0, renders = 0, cancelled = 0, accepted = 0, last_error = nil }

---@class dglsp.Draft
---@field bufnr integer
---@field client vim.lsp.Client
---@field request_id integer?
---@field row integer anchor (0-based row, byte col): where the draft is drawn and inserted
---@field col integer
---@field end_row integer end of the text the draft replaces (the server's range; usually the anchor)
---@field end_col integer
---@field tick integer changedtick the draft is for
---@field uri string
---@field position lsp.Position where the server drafts (its previews' range starts there)
---@field text string? the final draft (nil while drafting)
---@field mark integer? extmark id of our ghost text
---@field cursor integer[]? cursor when the final draft was shown
---@type dglsp.Draft?
local current

local function line_at(bufnr, row)
  return vim.api.nvim_buf_get_lines(bufnr, row, row + 1, false)[1] or ""
end

local function draw(draft, text)
  draft.mark = ghost.render(draft.bufnr, draft.row, draft.col, text)
end

-- Is our ghost text still on screen (nobody cleared or redrew it), and still true (the buffer unchanged)?
local function shown(draft)
  return ghost.has(draft.bufnr, draft.mark) and vim.api.nvim_buf_get_changedtick(draft.bufnr) == draft.tick
end

-- Forget `draft`: its autocommands and its ghost text (not someone else's).
local function finish(draft)
  if current == draft then
    current = nil
    inline.held[draft.bufnr] = nil
  end
  pcall(vim.api.nvim_del_augroup_by_name, "dglsp.draft")
  if ghost.has(draft.bufnr, draft.mark) then
    ghost.clear(draft.bufnr)
  end
end

--- Stop the draft in flight (`$/cancelRequest`) or remove the shown one. False when there is none.
function M.cancel()
  local draft = current
  if not draft then
    return false
  end
  if draft.text == nil and draft.request_id then
    lsp.cancel(draft.client, draft.request_id)
    M.stats.cancelled = M.stats.cancelled + 1
  end
  finish(draft)
  return true
end

--- The dismiss key: cancel a draft in flight, or hide a shown one. False when there is none.
function M.dismiss()
  local draft = current
  if not draft or (draft.text ~= nil and not shown(draft)) then
    return false
  end
  return M.cancel()
end

--- Insert the shown draft at its anchor; the cursor goes to its end. False when none is shown.
function M.accept()
  local draft = current
  if not (draft and draft.text and draft.bufnr == vim.api.nvim_get_current_buf() and shown(draft)) then
    return false
  end
  finish(draft)
  local lines = vim.split(draft.text, "\n", { plain = true })
  vim.api.nvim_buf_set_text(draft.bufnr, draft.row, draft.col, draft.end_row, draft.end_col, lines)
  local end_row = draft.row + #lines - 1
  local end_col = (#lines == 1 and draft.col or 0) + #lines[#lines]
  pcall(vim.api.nvim_win_set_cursor, 0, { end_row + 1, end_col })
  M.stats.accepted = M.stats.accepted + 1
  return true
end

--- A `dglsp/preview` of kind "draft" from `client_id`: draw the draft so far, if it is our draft's.
function M.on_preview(params, client_id)
  local draft = current
  if not (draft and draft.text == nil and not params.done and client_id == draft.client.id) then
    return
  end
  local start = type(params.range) == "table" and params.range.start or {}
  local here = params.uri == draft.uri
    and start.line == draft.position.line
    and start.character == draft.position.character
  if here and type(params.text) == "string" and vim.api.nvim_buf_get_changedtick(draft.bufnr) == draft.tick then
    draw(draft, params.text)
    M.stats.renders = M.stats.renders + 1
  end
end

local function on_result(draft, err, result)
  if current ~= draft then
    return -- cancelled or replaced by a newer draft
  end
  if err then
    finish(draft)
    if err.code ~= REQUEST_CANCELLED then
      M.stats.last_error = err.message
      vim.notify("dglsp: drafting failed: " .. tostring(err.message), vim.log.levels.WARN)
    end
    return
  end
  local text = type(result) == "table" and result.text or nil
  if type(text) ~= "string" or text == "" or vim.api.nvim_buf_get_changedtick(draft.bufnr) ~= draft.tick then
    finish(draft)
    vim.notify("dglsp: nothing drafted here")
    return
  end
  local range = result.range
  if type(range) == "table" and range["end"] then
    local encoding = draft.client.offset_encoding or "utf-16"
    draft.end_row = range["end"].line
    draft.end_col = compat.byte_col(line_at(draft.bufnr, draft.end_row), encoding, range["end"].character)
  end
  draft.text = text
  draw(draft, text)
  draft.cursor = vim.api.nvim_win_get_cursor(0)
end

local function watch(draft)
  local group = vim.api.nvim_create_augroup("dglsp.draft", { clear = true })
  vim.api.nvim_create_autocmd({ "TextChanged", "TextChangedI", "TextChangedP" }, {
    group = group,
    buffer = draft.bufnr,
    callback = function()
      if current == draft and vim.api.nvim_buf_get_changedtick(draft.bufnr) ~= draft.tick then
        M.cancel()
      end
    end,
  })
  vim.api.nvim_create_autocmd({ "CursorMoved", "CursorMovedI" }, {
    group = group,
    buffer = draft.bufnr,
    callback = function()
      -- A shown draft goes when you move away (it would otherwise be accepted somewhere you can't see).
      if current == draft and draft.cursor and not vim.deep_equal(vim.api.nvim_win_get_cursor(0), draft.cursor) then
        M.cancel()
      end
    end,
  })
  vim.api.nvim_create_autocmd({ "BufLeave", "BufUnload" }, {
    group = group,
    buffer = draft.bufnr,
    callback = function()
      if current == draft then
        M.cancel()
      end
    end,
  })
end

--- Draft at the cursor, or after the last line of `range` ({ line1, line2 }, 1-based) if given.
--- Returns true when a draft was requested.
function M.start(range)
  local bufnr = vim.api.nvim_get_current_buf()
  local client = lsp.client(bufnr)
  if not client then
    vim.notify("dglsp: not running here (open a file of a configured filetype)", vim.log.levels.WARN)
    return false
  end
  M.cancel()
  inline.reset(bufnr)
  -- Typing events still queued behind the draft key would ask for a suggestion and draw it over the draft.
  inline.held[bufnr] = true
  local encoding = client.offset_encoding or "utf-16"
  local argument = { uri = vim.uri_from_bufnr(bufnr), apply = false }
  local row, col, position
  if range then
    row = range[2] - 1
    local line = line_at(bufnr, row)
    col = #line
    position = { line = row, character = compat.char_col(line, encoding, col) }
    argument.range = { start = { line = range[1] - 1, character = 0 }, ["end"] = position }
  else
    local cursor = vim.api.nvim_win_get_cursor(0)
    row, col = cursor[1] - 1, cursor[2]
    local line = line_at(bufnr, row)
    if not vim.fn.mode():match("^i") and col < #line then
      -- Normal mode: the cursor is on a character; draft after it, as `a` would insert.
      col = col + #vim.fn.strcharpart(line:sub(col + 1), 0, 1)
    end
    position = { line = row, character = compat.char_col(line, encoding, col) }
    argument.position = position
  end
  ---@type dglsp.Draft
  local draft = {
    bufnr = bufnr,
    client = client,
    row = row,
    col = col,
    end_row = row,
    end_col = col,
    tick = vim.api.nvim_buf_get_changedtick(bufnr),
    uri = argument.uri,
    position = position,
  }
  current = draft
  watch(draft)
  local ok, id = lsp.request(
    client,
    "workspace/executeCommand",
    { command = "dglsp.draft", arguments = { argument } },
    function(err, result)
      on_result(draft, err, result)
    end,
    bufnr
  )
  if not ok then
    finish(draft)
    return false
  end
  draft.request_id = id
  M.stats.started = M.stats.started + 1
  return true
end

--- What is going on, for tests and :DglspStatus: nil, or { drafting = bool, text, row, col, request_id }.
function M.inspect()
  local draft = current
  if not draft then
    return nil
  end
  return {
    drafting = draft.text == nil,
    text = draft.text,
    row = draft.row,
    col = draft.col,
    request_id = draft.request_id,
  }
end

return M
