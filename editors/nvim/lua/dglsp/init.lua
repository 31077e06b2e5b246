--- dglsp: Neovim client for the dglsp language server (block-diffusion autocomplete).
---
--- `require("dglsp").setup(opts)` may be called any number of times: each call re-resolves the
--- options (see `dglsp.config` for the documented defaults), re-maps the keys, re-attaches the
--- configured filetypes and sends changed settings to a running server.
local canvas = require("dglsp.canvas")
local config = require("dglsp.config")
local draft = require("dglsp.draft")
local ghost = require("dglsp.ghost")
local inline = require("dglsp.inline")
local keymaps = require("dglsp.keymaps")
local lsp = require("dglsp.lsp")

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
  keymaps.apply(resolved.keys)
  draft.setup() -- `$/progress` handler: draws a draft as it grows (`:DglspDraft`)
  canvas.setup() -- draws `dglsp/canvas` notifications when the server's latency.live_canvas is on
  lsp.setup(resolved, inline.attach)
end

--- Turn automatic suggestions on or off (`:DglspToggle`).
function M.toggle()
  inline.set_enabled(not inline.enabled)
  vim.notify("dglsp: suggestions " .. (inline.enabled and "on" or "off"))
end

local function format_status(status, stats)
  local parts = {
    ("dglsp %s"):format(status.ready and "ready" or ("loading (" .. tostring(status.load_message) .. ")")),
    "model " .. tostring(status.model or "embedded"),
    "device " .. tostring(status.device),
  }
  if status.last_latency_ms ~= vim.NIL and status.last_latency_ms then
    table.insert(parts, ("last latency %.0f ms (server)"):format(status.last_latency_ms))
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
  return table.concat(parts, " | ")
end

--- Show model, device and latency (`:DglspStatus`); `callback(text)` gets the line too.
function M.status(callback)
  lsp.status(function(err, status)
    local text = err and ("dglsp: " .. tostring(err.message)) or format_status(status, inline.stats)
    vim.api.nvim_echo({ { text } }, true, {})
    if callback then
      callback(text)
    end
  end)
end

return M
