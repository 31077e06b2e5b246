-- A stock client of `textDocument/copilotInlineEdit` (a Neovim plugin written for Copilot's language server)
-- against a real `dglsp serve`, with the plugin's own keys as its README sets them up. dglsp's plugin is not
-- loaded: the stock plugin talks to the server by itself.
--
-- Run: DGLSP_STOCK_CLIENT=copilot-lsp|sidekick DGLSP_STOCK_PLUGIN=/path/to/its/checkout \
--      DGLSP_CMD='["python","-m","dglsp","serve","--model","DIR"]' DGLSP_SETTINGS='{...}' \
--      DGLSP_OUT=out.json DGLSP_WORKDIR=dir  nvim --headless --clean -c 'luafile editors/nvim/tests/stock_client.lua'
-- ($DGLSP_WORKDIR/edit.py is the file edited.) Writes what it saw as JSON to $DGLSP_OUT and quits; it checks
-- nothing itself: tests/test_stock_client.py asserts on that JSON.
local kind = assert(vim.env.DGLSP_STOCK_CLIENT, "DGLSP_STOCK_CLIENT")
local results = { client = kind, steps = {}, sent = {}, answers = {}, server_log = {} }
local h = dofile(vim.fs.joinpath(vim.fs.dirname(debug.getinfo(1, "S").source:sub(2)), "harness.lua"))(results)
local finish, sleep, wait_for, press = h.finish, h.sleep, h.wait_for, h.press

-- The two plugins: how to set them up as their READMEs do, and how to tell that an edit is shown.
local plugins = {
  ["copilot-lsp"] = {
    setup = function()
      vim.g.copilot_nes_debounce = 100
      -- README: <Tab> walks to the edit's start, then applies it and walks to its end; <Esc> clears it.
      vim.keymap.set("n", "<Tab>", function()
        if vim.b[vim.api.nvim_get_current_buf()].nes_state then
          local nes = require("copilot-lsp.nes")
          local _ = nes.walk_cursor_start_edit() or (nes.apply_pending_nes() and nes.walk_cursor_end_edit())
          return nil
        end
        return "<C-i>"
      end, { expr = true })
      vim.keymap.set("n", "<Esc>", function()
        require("copilot-lsp.nes").clear()
      end)
    end,
    config = function(config)
      config.handlers = require("copilot-lsp.handlers")
      config.on_init = function(client)
        require("copilot-lsp.nes").lsp_on_init(client, vim.api.nvim_create_augroup("copilotlsp.init", {}))
      end
    end,
    shown = function(buf)
      return vim.b[buf].nes_state ~= nil
    end,
    namespace = "copilotlsp.nes",
  },
  sidekick = {
    setup = function()
      require("sidekick").setup({ nes = { debounce = 100 }, cli = { watch = false } })
      -- README: <Tab> jumps to the edit, then applies it; <Esc> clears it (nes.clear.esc, on by default).
      vim.keymap.set("n", "<Tab>", function()
        if not require("sidekick").nes_jump_or_apply() then
          return "<Tab>"
        end
      end, { expr = true })
    end,
    config = function() end,
    shown = function(buf)
      return #require("sidekick.nes").get(buf) > 0
    end,
    namespace = "sidekick.ui",
  },
}
local plugin = assert(plugins[kind], "DGLSP_STOCK_CLIENT: copilot-lsp or sidekick")

local buf

-- Every extmark the plugin drew.
local function marks()
  return h.extmarks(buf, vim.api.nvim_get_namespaces()[plugin.namespace])
end

local function step(name)
  local row, col = unpack(vim.api.nvim_win_get_cursor(0))
  table.insert(results.steps, {
    name = name,
    lines = vim.api.nvim_buf_get_lines(buf, 0, -1, false),
    cursor = { row - 1, col },
    shown = plugin.shown(buf),
    marks = marks(),
    sent_seen = #results.sent,
  })
end

-- What goes over the wire (method, id, and the params of the requests that matter here) and the answers.
local function record(client)
  local rpc = client.rpc
  local request, notify = rpc.request, rpc.notify
  rpc.request = function(method, params, callback, on_reply)
    local id
    local ok
    local kept = method == "textDocument/copilotInlineEdit" or method == "workspace/executeCommand"
    ok, id = request(method, params, function(err, result)
      if kept then
        table.insert(results.answers, { id = id, error = err or vim.NIL, result = vim.deepcopy(result) or vim.NIL })
      end
      return callback(err, result)
    end, on_reply)
    table.insert(results.sent, { method = method, id = id, params = kept and params or vim.NIL })
    return ok, id
  end
  rpc.notify = function(method, params)
    local kept = method:match("InlineEdit") and params or vim.NIL
    table.insert(results.sent, { method = method, params = kept })
    return notify(method, params)
  end
end

local function main()
  vim.opt.rtp:prepend(assert(vim.env.DGLSP_STOCK_PLUGIN, "DGLSP_STOCK_PLUGIN"))
  vim.cmd("runtime! plugin/**/*.lua")
  plugin.setup()
  vim.lsp.handlers["window/logMessage"] = function(_, params)
    table.insert(results.server_log, params.message)
  end
  vim.cmd.edit(vim.env.DGLSP_WORKDIR .. "/edit.py")
  buf = vim.api.nvim_get_current_buf()
  -- Our server under the name these plugins look for (sidekick takes a client whose name has "copilot").
  local config = {
    name = "copilot",
    cmd = vim.json.decode(vim.env.DGLSP_CMD),
    root_dir = vim.env.DGLSP_WORKDIR,
    init_options = vim.json.decode(vim.env.DGLSP_SETTINGS or "{}"),
    flags = { debounce_text_changes = 0 },
  }
  plugin.config(config)
  local client_id = vim.lsp.start(config, { bufnr = buf })
  local client = vim.lsp.get_client_by_id(client_id)
  local ready = wait_for(function()
    local answer = client:request_sync("dglsp/status", {}, 2000)
    return answer and answer.result and answer.result.ready
  end, 120000)
  if not ready then
    return finish("server never became ready")
  end
  results.position_encoding = client.offset_encoding
  record(client)
  sleep(300) -- sidekick sends textDocument/didFocus once attached

  -- Rename `total` on line 2 as a user would.
  vim.api.nvim_win_set_cursor(0, { 2, 4 })
  step("before rename")
  press("ciwsum_<Esc>")
  results.first_shown = wait_for(function()
    return plugin.shown(buf)
  end, 10000)
  step("shown")
  press("<Tab>")
  sleep(200)
  step("first tab")
  if plugin.shown(buf) then
    press("<Tab>") -- the first <Tab> jumped: the second applies
    sleep(200)
    step("second tab")
  end
  -- The plugins ask again after an edit: the next use of the name.
  results.second_shown = wait_for(function()
    return plugin.shown(buf)
  end, 10000)
  step("next shown")
  press("<Esc>")
  sleep(300)
  step("dismissed")
  local status = client:request_sync("dglsp/status", {}, 2000)
  results.outcomes = status and status.result and status.result.outcomes or vim.NIL
  finish(nil)
end

h.run(main)
