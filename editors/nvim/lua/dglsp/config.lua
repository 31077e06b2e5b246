--- dglsp.config: every default in one documented table, merged with the user's options.
---
--- `setup(opts)` validates types and falls back to the default (with a warning) on a bad
--- value, so one typo never breaks the plugin. Nothing here talks to the server.
local M = {}

---@class dglsp.Config
M.defaults = {
  -- The server command. Default: `dglsp serve` on $PATH; point it at a venv with
  -- { "/path/.venv/bin/python", "-m", "dglsp", "serve", "--model", "/path/model" }.
  cmd = { "dglsp", "serve" },
  -- Filetypes that start (or attach to) the server. One server serves every buffer.
  filetypes = { "python", "lua", "javascript", "typescript", "go", "rust", "c", "cpp", "java", "sh" },
  -- Sent as `initializationOptions` and on `setup()` again as `workspace/didChangeConfiguration`;
  -- sections mirror dglsp/config.py: sampler, context, scheduler, postprocess, draft, latency.
  settings = {},
  -- Ask for a suggestion this long after the last keystroke (the 0.10/0.11 client; 0.12 waits itself).
  debounce_ms = 75,
  -- "auto": vim.lsp.inline_completion on Neovim >= 0.12, our own client below that. true/false forces.
  use_builtin = "auto",
  -- Start with suggestions on (`:DglspToggle` flips it).
  enabled = true,
  -- Insert-mode keys. Each falls back to what the key did before when no suggestion is shown;
  -- accept and dismiss also act on a draft in normal mode. Set a key to false to leave it unmapped.
  keys = {
    accept = "<Tab>",
    accept_word = "<M-Right>",
    accept_line = "<M-C-Right>",
    dismiss = "<C-]>",
    next = "<M-]>",
    prev = "<M-[>",
    -- :DglspDraft in insert, normal and visual mode (mapped only where the key is free).
    draft = "<M-d>",
    -- Next edits, normal mode: jump to a far edit, else apply the shown one; dismiss it; ask for one now
    -- (mapped only where the key is free). Apply and dismiss fall back like the keys above.
    edit_apply = "<Tab>",
    edit_dismiss = "<Esc>",
    edit_request = "<M-n>",
  },
  -- Next-edit suggestions (the server's `textDocument/copilotInlineEdit`): the edit that follows yours,
  -- anywhere in the buffer, shown where it lands. Server-side options: the `next_edit` settings section.
  next_edit = {
    enabled = true, -- ask automatically after an edit in normal mode (:DglspNextEdit always asks)
    debounce_ms = 300, -- this long after the last edit or leaving insert mode
    jump_lines = 6, -- an edit farther from the cursor (or off screen): the apply key jumps there first
  },
  -- Highlight group of the ghost text (linked to Comment unless you define it).
  hl_group = "DglspGhostText",
}

local function check(value, default, path, warnings)
  if default == nil or value == nil then
    return value == nil and default or value
  end
  if type(default) == "table" and not vim.islist(default) and path ~= "settings" then
    if type(value) ~= "table" then
      table.insert(warnings, ("%s must be a table; default kept"):format(path))
      return vim.deepcopy(default)
    end
    local merged = vim.deepcopy(default)
    for key, sub in pairs(value) do
      if default[key] == nil then
        table.insert(warnings, ("unknown option %s.%s ignored"):format(path, key))
      else
        merged[key] = check(sub, default[key], path .. "." .. key, warnings)
      end
    end
    return merged
  end
  -- A key may be disabled with false; use_builtin may be a string or a boolean.
  local ok = type(value) == type(default)
    or (path:match("^keys%.") and value == false)
    or (path == "use_builtin" and type(value) == "boolean")
  if not ok then
    table.insert(warnings, ("%s must be a %s, got %s; default kept"):format(path, type(default), type(value)))
    return vim.deepcopy(default)
  end
  return vim.deepcopy(value)
end

--- Merge `opts` over the defaults; returns the config and a list of warnings.
---@return dglsp.Config, string[]
function M.resolve(opts)
  local warnings = {}
  local config = vim.deepcopy(M.defaults)
  for key, value in pairs(opts or {}) do
    if M.defaults[key] == nil then
      table.insert(warnings, ("unknown option %s ignored"):format(key))
    else
      config[key] = check(value, M.defaults[key], key, warnings)
    end
  end
  return config, warnings
end

---@type dglsp.Config
M.current = vim.deepcopy(M.defaults)

return M
