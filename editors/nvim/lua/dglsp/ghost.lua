--- dglsp.ghost: draw and clear ghost text with extmarks. Knows nothing about LSP.
---
--- `render(bufnr, row, col, text)` shows `text` as if inserted at (row, col) (0-based row,
--- byte col): the first line inline after the cursor, the rest as virtual lines below.
--- One ghost per buffer; rendering again replaces it. Every ghost text is drawn here: suggestions
--- (`dglsp.inline`), drafts (`dglsp.draft`) and the server's previews (`dglsp.preview`).
local M = {}

M.ns = vim.api.nvim_create_namespace("dglsp.ghost")

local hl_group = "DglspGhostText"

function M.set_hl_group(name)
  hl_group = name
  -- default = true: a user's own definition (or colorscheme) wins.
  vim.api.nvim_set_hl(0, "DglspGhostText", { link = "Comment", default = true })
end

--- Show `text` at (row, col). Returns the extmark id, or nil for empty text.
---@return integer?
function M.render(bufnr, row, col, text)
  M.clear(bufnr)
  if text == nil or text == "" then
    return nil
  end
  local lines = vim.split(text, "\n", { plain = true })
  local virt_lines = {}
  for i = 2, #lines do
    table.insert(virt_lines, { { lines[i], hl_group } })
  end
  local opts = {
    virt_text = { { lines[1], hl_group } },
    virt_text_pos = "inline",
    hl_mode = "combine",
    right_gravity = false,
  }
  if #virt_lines > 0 then
    opts.virt_lines = virt_lines
  end
  local ok, id = pcall(vim.api.nvim_buf_set_extmark, bufnr, M.ns, row, col, opts)
  return ok and id or nil
end

--- Remove the ghost text from `bufnr` (a no-op when none or the buffer is gone).
function M.clear(bufnr)
  if vim.api.nvim_buf_is_valid(bufnr) then
    vim.api.nvim_buf_clear_namespace(bufnr, M.ns, 0, -1)
  end
end

--- Is the ghost text that `render` returned `id` for still on screen (nobody cleared or redrew it)?
function M.has(bufnr, id)
  return id ~= nil and vim.api.nvim_buf_is_valid(bufnr) and #vim.api.nvim_buf_get_extmark_by_id(bufnr, M.ns, id, {}) > 0
end

--- The ghost text as drawn: { row, col, text } or nil. Reads the extmark back, not our state.
function M.shown(bufnr)
  if not vim.api.nvim_buf_is_valid(bufnr) then
    return nil
  end
  local marks = vim.api.nvim_buf_get_extmarks(bufnr, M.ns, 0, -1, { details = true })
  if #marks == 0 then
    return nil
  end
  local _, row, col, details = unpack(marks[1])
  local lines = {}
  for _, chunk in ipairs(details.virt_text or {}) do
    lines[1] = (lines[1] or "") .. chunk[1]
  end
  for _, virt_line in ipairs(details.virt_lines or {}) do
    local line = ""
    for _, chunk in ipairs(virt_line) do
      line = line .. chunk[1]
    end
    table.insert(lines, line)
  end
  return { row = row, col = col, text = table.concat(lines, "\n") }
end

return M
