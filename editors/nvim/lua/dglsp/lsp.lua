--- dglsp.lsp: start or attach `dglsp serve` through vim.lsp; one server for every buffer.
---
--- Settings go to the server as `initializationOptions` and, when `setup()` runs again, as
--- `workspace/didChangeConfiguration`. The client advertises `textDocument.inlineCompletion`
--- so that the server answers inline completions (and not `textDocument/completion`), and
--- `experimental.dglsp.preview` so that it streams partial text and outcomes (`dglsp.preview`).
local compat = require("dglsp.compat")

local M = {}

M.name = "dglsp"
local group = vim.api.nvim_create_augroup("dglsp.lsp", { clear = true })

---@return vim.lsp.Client?
function M.client(bufnr)
  local filter = { name = M.name }
  if bufnr then
    filter.bufnr = bufnr
  end
  return vim.lsp.get_clients(filter)[1]
end

function M.capabilities()
  local capabilities = vim.lsp.protocol.make_client_capabilities()
  -- 0.10/0.11 have no inline-completion client: we are it, so we advertise it ourselves.
  capabilities.textDocument.inlineCompletion = capabilities.textDocument.inlineCompletion
    or { dynamicRegistration = false }
  capabilities.experimental = vim.tbl_extend("force", capabilities.experimental or {}, { dglsp = { preview = true } })
  return capabilities
end

function M.request(client, method, params, handler, bufnr)
  return compat.call(client, "request", method, params, handler, bufnr)
end

function M.cancel(client, request_id)
  return compat.call(client, "cancel_request", request_id)
end

function M.notify(client, method, params)
  return compat.call(client, "notify", method, params)
end

--- Start the server (or reuse the running one) for `bufnr`.
function M.attach(bufnr, config, on_attach)
  if not vim.api.nvim_buf_is_valid(bufnr) or vim.bo[bufnr].buftype ~= "" then
    return nil
  end
  return vim.lsp.start({
    name = M.name,
    cmd = config.cmd,
    root_dir = vim.fs.root(bufnr, { ".git" }) or vim.uv.cwd(),
    init_options = config.settings,
    capabilities = M.capabilities(),
    -- Our requests flush pending didChange themselves; no extra delay on the server's view.
    flags = { debounce_text_changes = 0 },
    on_attach = function(client, attached)
      on_attach(attached, client)
    end,
  }, {
    bufnr = bufnr,
    -- The model is loaded once: every buffer, whatever its root, shares the one server.
    reuse_client = function(client, client_config)
      return client.name == client_config.name and not compat.call(client, "is_stopped")
    end,
  })
end

--- Attach to buffers of `config.filetypes` now and whenever one is opened (idempotent).
function M.setup(config, on_attach)
  vim.api.nvim_clear_autocmds({ group = group })
  vim.api.nvim_create_autocmd("FileType", {
    group = group,
    pattern = config.filetypes,
    callback = function(args)
      M.attach(args.buf, config, on_attach)
    end,
  })
  for _, bufnr in ipairs(vim.api.nvim_list_bufs()) do
    if vim.api.nvim_buf_is_loaded(bufnr) and vim.tbl_contains(config.filetypes, vim.bo[bufnr].filetype) then
      M.attach(bufnr, config, on_attach)
    end
  end
  local client = M.client()
  if client then
    M.notify(client, "workspace/didChangeConfiguration", { settings = { dglsp = config.settings } })
  end
end

--- Ask the server for `dglsp/status` ({model, device, state, load_message, load_percent, last, outcomes, ...}).
---@param callback fun(err: table?, status: table?)
function M.status(callback)
  local client = M.client()
  if not client then
    callback({ message = "dglsp is not running (open a file of a configured filetype)" }, nil)
    return
  end
  M.request(client, "dglsp/status", {}, function(err, result)
    callback(err, result)
  end)
end

--- The same, waiting at most `timeout_ms` (for :checkhealth).
function M.status_sync(timeout_ms)
  local client = M.client()
  if not client then
    return nil, "not running"
  end
  local response, err = compat.call(client, "request_sync", "dglsp/status", {}, timeout_ms)
  if not response then
    return nil, err or "no answer"
  end
  if response.err then
    return nil, response.err.message
  end
  return response.result, nil
end

return M
