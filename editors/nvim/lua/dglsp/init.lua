--- dglsp: Neovim client for the dglsp language server (block-diffusion autocomplete).
---
--- `require("dglsp").setup(opts)` may be called any number of times: each call re-resolves the
--- options (see `dglsp.config` for the documented defaults), re-maps the keys, re-attaches the
--- configured filetypes and sends changed settings to a running server.
local config = require("dglsp.config")
local focus = require("dglsp.focus")
local ghost = require("dglsp.ghost")
local inline = require("dglsp.inline")
local keymaps = require("dglsp.keymaps")
local lsp = require("dglsp.lsp")
local next_edit = require("dglsp.next_edit")
local preview = require("dglsp.preview")
local status = require("dglsp.status")

local M = {}

local function use_builtin(option)
  local available = vim.lsp.inline_completion ~= nil and vim.fn.has("nvim-0.12") == 1
  if option == "auto" then
    return available
  end
  return option == true and available
end

function M.setup(opts)
  if vim.fn.has("nvim-0.10") ~= 1 then
    vim.notify("dglsp needs Neovim >= 0.10", vim.log.levels.ERROR)
    return
  end
  local resolved, warnings = config.resolve(opts)
  for _, warning in ipairs(warnings) do
    vim.notify("dglsp: " .. warning, vim.log.levels.WARN)
  end
  config.current = resolved
  ghost.set_hl_group(resolved.hl_group)
  inline.debounce_ms = resolved.debounce_ms
  inline.builtin = use_builtin(resolved.use_builtin)
  inline.set_enabled(resolved.enabled)
  next_edit.setup(resolved.next_edit)
  keymaps.apply(resolved.keys)
  preview.setup() -- `dglsp/preview`: a draft as it grows, the live canvas, each request's outcome
  lsp.setup(resolved, function(bufnr, client)
    inline.attach(bufnr)
    next_edit.attach(bufnr)
    focus.attach(bufnr)
    status.watch(client) -- the model's loading progress, for the statusline
  end)
end

--- The statusline text: the last suggestion's latency (`dglsp 84 ms`), or why it was hidden
--- (`dglsp: low confidence 0.41 < 0.73`), a next edit's place (`dglsp: edit at line 12`), or the model
--- loading (`dglsp: loading 35%`); "" where dglsp is not attached.
--- E.g. `vim.o.statusline = "%f %= %{v:lua.require'dglsp'.statusline()}"`.
function M.statusline()
  return status.line()
end

--- Turn automatic suggestions (and automatic next edits) on or off (`:DglspToggle`).
function M.toggle()
  inline.set_enabled(not inline.enabled)
  vim.notify("dglsp: suggestions " .. (inline.enabled and "on" or "off"))
end

local function format_status(answer, stats)
  local ready = answer.state == "ready"
  local parts = {
    ("dglsp %s"):format(ready and "ready" or ("%s (%s)"):format(answer.state, tostring(answer.load_message))),
    "model " .. tostring(answer.model or "embedded"),
    "device " .. tostring(answer.device),
  }
  if answer.last_latency_ms then
    table.insert(parts, ("last latency %.0f ms (server)"):format(answer.last_latency_ms))
  end
  if type(answer.last) == "table" and answer.last.reason then
    table.insert(parts, "last hidden: " .. status.describe(answer.last):gsub("^dglsp: ", ""))
  end
  if stats.last_latency_ms then
    table.insert(parts, ("%.0f ms (round trip)"):format(stats.last_latency_ms))
  end
  table.insert(
    parts,
    ("suggestions %s; %d requests, %d cancelled"):format(
      inline.enabled and "on" or "off",
      stats.requests,
      stats.cancelled
    )
  )
  local edits = next_edit.stats
  table.insert(parts, ("next edits: %d shown, %d applied"):format(edits.shown, edits.applied))
  return table.concat(parts, " | ")
end

--- Show model, device and latency (`:DglspStatus`); `callback(text)` gets the line too.
function M.status(callback)
  lsp.status(function(err, answer)
    local text = err and ("dglsp: " .. tostring(err.message)) or format_status(answer, inline.stats)
    vim.api.nvim_echo({ { text } }, true, {})
    if callback then
      callback(text)
    end
  end)
end

return M
