--- dglsp.status: what the editor says the server is doing — the statusline's text, and the words for an
--- outcome that :checkhealth and :DglspStatus use too.
---
--- Two sources, per client: the last `done` preview (`dglsp.preview` records it: the suggestion's latency,
--- a next edit's line, or why nothing was shown), and `dglsp/status` while the model loads (polled until it
--- is ready). A request that was stopped (superseded, cancelled...) does not replace the last one that ran
--- to its end, so the statusline does not flicker while you type.
local compat = require("dglsp.compat")
local lsp = require("dglsp.lsp")

local M = {}

M.outcome = {} -- client id -> the done preview to show: the last one that was not stopped, if any
M.server = {} -- client id -> the last `dglsp/status` answer

-- Reasons that mean "the user moved on", not "the model had nothing" (dglsp/completion/outcome.py).
local STOPPED = {
  superseded = true,
  cancelled = true,
  document_changed = true,
  document_closed = true,
  preempted = true,
  shutdown = true,
}

local SAYS = {
  low_confidence = "low confidence",
  unparsable = "did not parse",
  ["repeat"] = "repeated the code below",
  brackets = "only unmatched brackets",
  empty = "nothing to suggest",
  load_failed = "model failed to load",
  backend_error = "server error",
}

local function short(text)
  return vim.fn.strchars(text) > 60 and vim.fn.strcharpart(text, 0, 59) .. "…" or text
end

-- A next edit's outcome: where it is, or why there is none.
local function describe_edit(outcome)
  if outcome.reason == nil then
    local start = type(outcome.range) == "table" and outcome.range.start
    return start and ("dglsp: edit at line %d"):format(start.line + 1) or "dglsp: edit shown"
  elseif outcome.reason == "no_edit" then
    return "dglsp: no edit"
  end
  return "dglsp: no edit: " .. M.describe({ reason = outcome.reason, detail = outcome.detail }):gsub("^dglsp: ", "")
end

--- One outcome ({ kind?, reason?, detail?, latency_ms?, range? }: a done preview, or `dglsp/status`'s `last`)
--- in words.
function M.describe(outcome)
  local reason = outcome.reason
  if outcome.kind == "edit" then
    return describe_edit(outcome)
  elseif reason == nil then
    return ("dglsp %d ms"):format(math.floor((outcome.latency_ms or 0) + 0.5))
  end
  local detail = type(outcome.detail) == "string" and outcome.detail or ""
  local text = SAYS[reason] or reason:gsub("_", " ")
  if reason == "low_confidence" then
    detail = detail:gsub("^confidence%s*", "") -- "confidence 0.41 < 0.73" -> "low confidence 0.41 < 0.73"
    return "dglsp: " .. vim.trim(text .. " " .. detail)
  end
  if detail ~= "" and (reason == "backend_error" or reason == "load_failed" or reason == "error") then
    text = text .. ": " .. short(detail)
  end
  return "dglsp: " .. text
end

local polling = {} -- client id -> true while a `dglsp/status` request is out

--- Ask `dglsp/status` now, and again every half second while the model loads (idempotent per client).
function M.watch(client)
  if polling[client.id] then
    return
  end
  polling[client.id] = true
  lsp.request(client, "dglsp/status", {}, function(err, status)
    polling[client.id] = nil
    if err or type(status) ~= "table" then
      return
    end
    M.server[client.id] = status
    pcall(vim.cmd.redrawstatus)
    if status.state == "loading" then
      vim.defer_fn(function()
        if not compat.call(client, "is_stopped") then
          M.watch(client)
        end
      end, 500)
    end
  end)
end

--- The end of a request (a done preview from `client_id`).
function M.record(client_id, preview)
  local current = M.outcome[client_id]
  if not (current and STOPPED[preview.reason] and not STOPPED[current.reason]) then
    M.outcome[client_id] = preview
  end
  local client = preview.reason == "loading" and vim.lsp.get_client_by_id(client_id)
  if client then
    M.watch(client) -- the model is (re)loading: show its progress
  end
  pcall(vim.cmd.redrawstatus)
end

--- The statusline text for `bufnr`'s server ("" when none serves it).
function M.line(bufnr)
  local client = lsp.client(bufnr or vim.api.nvim_get_current_buf())
  if not client then
    return ""
  end
  local server = M.server[client.id]
  if server and server.state == "loading" then
    return "dglsp: loading" .. (server.load_percent and (" %d%%"):format(math.floor(server.load_percent)) or "")
  elseif server and server.state == "failed" then
    return M.describe({ reason = "load_failed", detail = server.load_message })
  end
  return M.outcome[client.id] and M.describe(M.outcome[client.id]) or "dglsp"
end

return M
