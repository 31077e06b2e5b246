--- :checkhealth dglsp — Neovim version, the server executable, the running server, model and device,
--- and what became of the suggestions (the last one, and how often each reason hid one).
local M = {}

function M.check()
  local config = require("dglsp.config").current
  local lsp = require("dglsp.lsp")
  local health = vim.health

  health.start("dglsp: Neovim")
  if vim.fn.has("nvim-0.12") == 1 and vim.lsp.inline_completion then
    health.ok("Neovim >= 0.12: using vim.lsp.inline_completion")
  elseif vim.fn.has("nvim-0.10") == 1 then
    health.ok("Neovim " .. tostring(vim.version()) .. ": using dglsp's own inline-completion client")
  else
    health.error("Neovim >= 0.10 is required")
  end

  health.start("dglsp: server")
  local exe = config.cmd[1]
  if vim.fn.executable(exe) ~= 1 then
    health.error(
      ("%s is not executable"):format(exe),
      { "pip install dglsp, or set cmd = { python, '-m', 'dglsp', 'serve' }" }
    )
    return
  end
  health.ok(("executable: %s"):format(vim.fn.exepath(exe)))
  local client = lsp.client()
  if not client then
    -- Not started yet: at least check that the command runs.
    local command = vim.list_extend(vim.deepcopy(config.cmd), { "--help" })
    local ok, result = pcall(function()
      return vim.system(command, { text = true }):wait(30000)
    end)
    if ok and result.code == 0 then
      health.ok(("`%s --help` runs"):format(table.concat(config.cmd, " ")))
    else
      health.error(
        ("`%s --help` failed: %s"):format(
          table.concat(config.cmd, " "),
          ok and vim.trim(result.stderr or "") or tostring(result)
        )
      )
    end
    health.warn(
      "server not running",
      { "open a file of a configured filetype: " .. table.concat(config.filetypes, ", ") }
    )
    return
  end
  health.ok(("server running (client id %d)"):format(client.id))

  health.start("dglsp: model and device")
  local status, err = lsp.status_sync(5000)
  if not status then
    health.error("dglsp/status failed: " .. tostring(err))
    return
  end
  if status.state == "ready" then
    health.ok("model: " .. tostring(status.model))
  elseif status.state == "loading" then
    health.warn(("model loading (%s%%): %s"):format(status.load_percent or "?", tostring(status.load_message)))
  else
    health.error("model failed to load: " .. tostring(status.load_message))
  end
  if tostring(status.device):match("^cuda") then
    health.ok("device: " .. tostring(status.device))
  else
    health.warn(
      "device: " .. tostring(status.device),
      { "suggestions are slow without a GPU; --device cuda if you have one" }
    )
  end

  health.start("dglsp: suggestions")
  local last = status.last
  if type(last) == "table" then
    local said = last.reason and require("dglsp.status").describe(last):gsub("^dglsp: ", "") or "shown"
    health.info(("last %s: %s (%.0f ms)"):format(last.kind, said, last.latency_ms or 0))
  else
    health.info("no suggestion asked for yet")
  end
  local counts = {}
  for outcome, count in pairs(status.outcomes or {}) do
    table.insert(counts, ("%s %d"):format(outcome, count))
  end
  table.sort(counts)
  if #counts > 0 then
    health.info("outcomes: " .. table.concat(counts, ", "))
  end
end

return M
