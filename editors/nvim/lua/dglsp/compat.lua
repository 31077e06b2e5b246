--- dglsp.compat: the differences between the Neovim versions dglsp supports (0.10 and 0.11+), in one place.
---
--- 0.11 put the encoding first in vim.str_byteindex / vim.str_utfindex (0.10: `(line, index, use_utf16)`
--- and `(line, byte)` returning the UTF-32 and UTF-16 columns) and made vim.lsp.Client's methods colon
--- calls (0.10: `client.request(...)`). The version is read at each call, so a test can take the 0.10 path.
local M = {}

M.has_011 = vim.fn.has("nvim-0.11") == 1

--- `client:name(...)` on 0.11+, `client.name(...)` on 0.10.
---@param client vim.lsp.Client
---@param name string
function M.call(client, name, ...)
  if M.has_011 then
    return client[name](client, ...)
  end
  return client[name](...)
end

--- A column in the server's position encoding ("utf-8", "utf-16" or "utf-32") -> a byte column of
--- `line`. A column past the end of the line gives the line's length.
---@param line string
---@param encoding string
---@param index integer
---@return integer
function M.byte_col(line, encoding, index)
  if encoding == "utf-8" then
    return math.min(index, #line)
  end
  if M.has_011 then
    return vim.str_byteindex(line, encoding, index, false)
  end
  local ok, col = pcall(vim.str_byteindex, line, index, encoding == "utf-16")
  return ok and col or #line
end

--- A byte column of `line` -> a column in the server's position encoding.
---@param line string
---@param encoding string
---@param byte integer
---@return integer
function M.char_col(line, encoding, byte)
  if encoding == "utf-8" then
    return byte
  end
  if M.has_011 then
    return vim.str_utfindex(line, encoding, byte, false)
  end
  local utf32, utf16 = vim.str_utfindex(line, math.min(byte, #line))
  return encoding == "utf-16" and utf16 or utf32
end

return M
