--- dglsp.inline: the inline-completion client — when to ask, what is shown, how it is accepted.
---
--- Neovim 0.10/0.11 have no inline-completion client, so this module is one: on every
--- keystroke in insert mode it clears the ghost text, cancels the in-flight request
--- (`$/cancelRequest`), and asks again after `debounce_ms`; only the latest request's answer is
--- shown. On Neovim >= 0.12 (`use_builtin`) it enables `vim.lsp.inline_completion` instead and
--- only maps the keys onto it. Accept/partial accept/cycle/dismiss return false when there is
--- nothing to act on, so the keymaps can fall back to what the key did before.
local compat = require("dglsp.compat")
local ghost = require("dglsp.ghost")
local lsp = require("dglsp.lsp")

local M = {}

local METHOD = "textDocument/inlineCompletion"
local AUTOMATIC = 2 -- InlineCompletionTriggerKind.Automatic

M.enabled = true
M.held = {} -- bufnr -> true while a draft owns the buffer's ghost text (no suggestion may draw over it)
M.debounce_ms = 75
M.builtin = false
-- Counters for :DglspStatus and the tests.
M.stats = { requests = 0, cancelled = 0, stale = 0, shown = 0, errors = 0, last_latency_ms = nil, last_error = nil }

---@class dglsp.BufState
---@field timer uv.uv_timer_t?
---@field request_id integer?
---@field client vim.lsp.Client?
---@field sent_at number?
---@field row integer  anchor row (0-based)
---@field col integer  anchor byte column
---@field tick integer changedtick the suggestion was asked for
---@field items { text: string, command: table? }[] suggestions (text to insert at the anchor)
---@field index integer
---@field keep_tick integer? our own partial accept made this change: keep the rest shown
---@type table<integer, dglsp.BufState>
local buffers = {}

local function state(bufnr)
  buffers[bufnr] = buffers[bufnr] or { row = 0, col = 0, tick = -1, items = {}, index = 1 }
  return buffers[bufnr]
end

local function cursor()
  local pos = vim.api.nvim_win_get_cursor(0)
  return pos[1] - 1, pos[2]
end

local function cancel_inflight(st)
  if st.request_id and st.client then
    lsp.cancel(st.client, st.request_id)
    M.stats.cancelled = M.stats.cancelled + 1
  end
  st.request_id = nil
end

--- Forget the suggestion and stop everything pending for `bufnr`.
function M.reset(bufnr)
  local st = buffers[bufnr]
  if not st then
    return
  end
  if st.timer then
    st.timer:stop()
  end
  cancel_inflight(st)
  st.items, st.index, st.keep_tick = {}, 1, nil
  ghost.clear(bufnr)
end

local function show(bufnr)
  local st = state(bufnr)
  local item = st.items[st.index]
  if item then
    ghost.render(bufnr, st.row, st.col, item.text)
    M.stats.shown = M.stats.shown + 1
  else
    ghost.clear(bufnr)
  end
end

--- The text an item adds at the cursor: `insertText` minus what is already typed in its range.
local function text_after_cursor(bufnr, item, row, col, encoding)
  local text = item.insertText
  if type(text) == "table" then -- a StringValue snippet: show its plain text
    text = text.value
  end
  if type(text) ~= "string" or text == "" then
    return nil
  end
  if item.range then
    local start = item.range.start
    if start.line ~= row then
      return nil
    end
    local line = vim.api.nvim_buf_get_lines(bufnr, row, row + 1, false)[1] or ""
    local start_col = compat.byte_col(line, encoding, start.character)
    local typed = line:sub(start_col + 1, col)
    if text:sub(1, #typed) ~= typed then
      return nil
    end
    text = text:sub(#typed + 1)
  end
  return text ~= "" and text or nil
end

--- Put a set of suggestions on screen (also the entry point for tests of cycling).
---@param items (string|{ text: string, command: table? })[]
function M.set_items(bufnr, row, col, items)
  local st = state(bufnr)
  st.items = {}
  for _, item in ipairs(items) do
    table.insert(st.items, type(item) == "string" and { text = item } or item)
  end
  st.row, st.col, st.index, st.keep_tick = row, col, 1, nil
  st.tick = vim.api.nvim_buf_get_changedtick(bufnr)
  show(bufnr)
end

local function on_response(bufnr, st, request_id, err, result)
  if st.request_id ~= request_id then
    M.stats.stale = M.stats.stale + 1 -- superseded (cancelled ones usually never answer)
    return
  end
  st.request_id = nil
  M.stats.last_latency_ms = (vim.uv.hrtime() - st.sent_at) / 1e6
  if err then
    M.stats.errors = M.stats.errors + 1
    M.stats.last_error = err.message
    return
  end
  local row, col = cursor()
  local still_here = vim.api.nvim_get_current_buf() == bufnr and row == st.row and col == st.col
  if not still_here or vim.api.nvim_buf_get_changedtick(bufnr) ~= st.tick or not vim.fn.mode():match("^i") then
    return
  end
  local items = result and (result.items or result) or {}
  local shown = {}
  for _, item in ipairs(items) do
    local text = text_after_cursor(bufnr, item, row, col, st.client.offset_encoding)
    if text then
      table.insert(shown, { text = text, command = item.command, client = st.client })
    end
  end
  if #shown > 0 then
    M.set_items(bufnr, row, col, shown)
  end
end

--- Ask the server for a suggestion at the cursor now (cancelling any request in flight).
function M.request(bufnr)
  local st = state(bufnr)
  cancel_inflight(st)
  local client = lsp.client(bufnr)
  if
    M.held[bufnr]
    or not (M.enabled and client and vim.api.nvim_get_current_buf() == bufnr and vim.fn.mode():match("^i"))
  then
    return
  end
  local params = vim.lsp.util.make_position_params(0, client.offset_encoding)
  params.context = { triggerKind = AUTOMATIC }
  st.row, st.col = cursor()
  st.tick = vim.api.nvim_buf_get_changedtick(bufnr)
  st.client, st.sent_at = client, vim.uv.hrtime()
  local request_id
  local ok, id = lsp.request(client, METHOD, params, function(err, result)
    on_response(bufnr, st, request_id, err, result)
  end, bufnr)
  if ok then
    request_id = id
    st.request_id = id
    M.stats.requests = M.stats.requests + 1
  end
end

local function schedule(bufnr)
  local st = state(bufnr)
  st.timer = st.timer or vim.uv.new_timer()
  st.timer:stop()
  st.timer:start(
    M.debounce_ms,
    0,
    vim.schedule_wrap(function()
      if vim.api.nvim_buf_is_valid(bufnr) then
        M.request(bufnr)
      end
    end)
  )
end

local function on_edit(bufnr)
  local st = state(bufnr)
  local row, col = cursor()
  if st.keep_tick == vim.api.nvim_buf_get_changedtick(bufnr) and row == st.row and col == st.col then
    return -- our own partial accept: the rest of the suggestion stays on screen
  end
  M.reset(bufnr)
  schedule(bufnr)
end

--- Hook the buffer's events (called when the server attaches to it).
function M.attach(bufnr)
  if M.builtin then
    pcall(vim.lsp.inline_completion.enable, M.enabled, { bufnr = bufnr })
    return
  end
  local group = vim.api.nvim_create_augroup("dglsp.inline." .. bufnr, { clear = true })
  vim.api.nvim_create_autocmd({ "TextChangedI", "TextChangedP", "CursorMovedI" }, {
    group = group,
    buffer = bufnr,
    callback = function()
      on_edit(bufnr)
    end,
  })
  vim.api.nvim_create_autocmd("InsertEnter", {
    group = group,
    buffer = bufnr,
    callback = function()
      schedule(bufnr)
    end,
  })
  vim.api.nvim_create_autocmd({ "InsertLeave", "BufLeave", "ModeChanged" }, {
    group = group,
    buffer = bufnr,
    callback = function(args)
      -- ModeChanged within insert mode (i -> ic, completion popup) keeps the request going.
      if args.event ~= "ModeChanged" or not vim.v.event.new_mode:match("^i") then
        M.reset(bufnr)
      end
    end,
  })
  vim.api.nvim_create_autocmd({ "BufUnload", "LspDetach" }, {
    group = group,
    buffer = bufnr,
    callback = function()
      M.reset(bufnr)
      if buffers[bufnr] and buffers[bufnr].timer then
        buffers[bufnr].timer:close()
      end
      buffers[bufnr] = nil
      pcall(vim.api.nvim_del_augroup_by_id, group)
    end,
  })
end

-- How much of `text` a partial accept takes.
local function word_part(text)
  return text:match("^%s*[%w_]+") or text:match("^%s*[^%w_%s]+") or text:match("^%s+") or text
end

local function line_part(text)
  -- At a line break, take the break and the next line's text (like accepting the line below).
  return text:match("^\n[^\n]*") or text:match("^[^\n]+")
end

M.parts = {
  all = function(text)
    return text
  end,
  word = word_part,
  line = line_part,
}

local function insert_at_cursor(bufnr, text)
  local row, col = cursor()
  local lines = vim.split(text, "\n", { plain = true })
  vim.api.nvim_buf_set_text(bufnr, row, col, row, col, lines)
  local end_row = row + #lines - 1
  local end_col = (#lines == 1 and col or 0) + #lines[#lines]
  vim.api.nvim_win_set_cursor(0, { end_row + 1, end_col })
  return end_row, end_col
end

local function builtin_accept(kind)
  local ok, accepted = pcall(vim.lsp.inline_completion.get, {
    on_accept = kind ~= "all" and function(item)
      local text = type(item.insert_text) == "table" and item.insert_text.value or item.insert_text
      -- 0.12 keeps showing an item while you type into it: skip what is typed since its range start.
      local row, col = cursor()
      local start = item.range and item.range.start
      if start and start.row == row and col >= start.col then
        text = text:sub(col - start.col + 1)
      end
      insert_at_cursor(vim.api.nvim_get_current_buf(), M.parts[kind](text) or "")
    end or nil,
  })
  return ok and accepted ~= false
end

--- Accept all, a word or a line of the shown suggestion. False when none is shown.
---@param kind "all"|"word"|"line"
function M.accept(kind)
  if M.builtin then
    return builtin_accept(kind)
  end
  local bufnr = vim.api.nvim_get_current_buf()
  local st = buffers[bufnr]
  local item = st and st.items[st.index]
  if not item or not ghost.shown(bufnr) then
    return false
  end
  local part = M.parts[kind](item.text) or item.text
  local rest = item.text:sub(#part + 1)
  M.reset(bufnr)
  local row, col = insert_at_cursor(bufnr, part)
  if rest ~= "" then
    M.set_items(bufnr, row, col, { rest })
    st.keep_tick = vim.api.nvim_buf_get_changedtick(bufnr)
  elseif item.command and item.client then
    -- The item's command (dglsp.accepted) lets the server precompute the next suggestion.
    -- Only for a whole item: after a partial accept the buffer no longer matches its arguments.
    lsp.request(
      item.client,
      "workspace/executeCommand",
      { command = item.command.command, arguments = item.command.arguments },
      function() end,
      bufnr
    )
  end
  return true
end

--- Show the next (+1) or previous (-1) suggestion when there are several. False when none is shown.
function M.cycle(step)
  if M.builtin then
    return (pcall(vim.lsp.inline_completion.select, { count = step }))
  end
  local bufnr = vim.api.nvim_get_current_buf()
  local st = buffers[bufnr]
  if not st or #st.items == 0 or not ghost.shown(bufnr) then
    return false
  end
  st.index = (st.index - 1 + step) % #st.items + 1
  show(bufnr)
  return true
end

--- Hide the suggestion (until the next keystroke). False when none is shown.
function M.dismiss()
  local bufnr = vim.api.nvim_get_current_buf()
  if M.builtin then
    -- 0.12 has no dismiss call: turning it off and on for the buffer clears the shown candidate.
    local ok = pcall(vim.lsp.inline_completion.enable, false, { bufnr = bufnr })
    pcall(vim.lsp.inline_completion.enable, M.enabled, { bufnr = bufnr })
    return ok
  end
  if not ghost.shown(bufnr) then
    return false
  end
  M.reset(bufnr)
  return true
end

--- Turn automatic suggestions on or off everywhere.
function M.set_enabled(enabled)
  M.enabled = enabled
  for bufnr in pairs(buffers) do
    M.reset(bufnr)
  end
  if M.builtin then
    pcall(vim.lsp.inline_completion.enable, enabled, { client_id = (lsp.client() or {}).id })
  end
end

--- What is shown in `bufnr` and the suggestions behind it (for tests and :DglspStatus).
function M.inspect(bufnr)
  local st = buffers[bufnr or vim.api.nvim_get_current_buf()]
  local texts = vim.tbl_map(function(item)
    return item.text
  end, st and st.items or {})
  return { items = texts, index = st and st.index or 0, inflight = st and st.request_id or nil }
end

return M
