--- dglsp.focus: tell the server where the cursor went (`dglsp/focus`), so that it encodes the prompt
--- there before the first keystroke: when an attached buffer is entered, and on a jump in normal mode
--- (the cursor's line moved by more than one). Debounced by `delay_ms`; never sent from insert mode,
--- where every keystroke asks for a suggestion anyway.
local compat = require("dglsp.compat")
local lsp = require("dglsp.lsp")

local M = {}

M.delay_ms = 150
local timer
local rows = {} -- bufnr -> the cursor's row when last seen outside insert mode

local function send(bufnr)
  local client = lsp.client(bufnr)
  if not client or vim.api.nvim_get_current_buf() ~= bufnr or vim.fn.mode():match("^i") then
    return
  end
  local row, col = unpack(vim.api.nvim_win_get_cursor(0))
  local line = vim.api.nvim_buf_get_lines(bufnr, row - 1, row, false)[1] or ""
  lsp.notify(client, "dglsp/focus", {
    textDocument = { uri = vim.uri_from_bufnr(bufnr) },
    position = { line = row - 1, character = compat.char_col(line, client.offset_encoding or "utf-16", col) },
  })
end

local function schedule(bufnr)
  timer = timer or vim.uv.new_timer()
  timer:stop()
  timer:start(
    M.delay_ms,
    0,
    vim.schedule_wrap(function()
      if vim.api.nvim_buf_is_valid(bufnr) then
        send(bufnr)
      end
    end)
  )
end

--- Hook `bufnr`'s events (called when the server attaches to it; idempotent).
function M.attach(bufnr)
  local group = vim.api.nvim_create_augroup("dglsp.focus." .. bufnr, { clear = true })
  local function autocmd(events, callback)
    vim.api.nvim_create_autocmd(events, { group = group, buffer = bufnr, callback = callback })
  end
  local function row()
    return vim.api.nvim_win_get_cursor(0)[1]
  end
  autocmd({ "BufEnter", "BufWinEnter" }, function()
    rows[bufnr] = row()
    schedule(bufnr)
  end)
  autocmd("CursorMoved", function()
    local before = rows[bufnr]
    rows[bufnr] = row()
    if before == nil or math.abs(rows[bufnr] - before) > 1 then
      schedule(bufnr)
    end
  end)
  autocmd("InsertLeave", function()
    rows[bufnr] = row() -- lines typed are not a jump
  end)
  autocmd("BufUnload", function()
    rows[bufnr] = nil
    pcall(vim.api.nvim_del_augroup_by_id, group)
  end)
  if vim.api.nvim_get_current_buf() == bufnr then
    rows[bufnr] = row()
    schedule(bufnr) -- attached to the buffer in front of the user: its BufEnter has passed
  end
end

return M
