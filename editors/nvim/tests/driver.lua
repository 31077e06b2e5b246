-- Drives the plugin in a headless Neovim against a real `dglsp serve`, like a user typing.
--
-- Run: DGLSP_CMD='["python","-m","dglsp","serve","--model","DIR"]' DGLSP_OUT=out.json DGLSP_WORKDIR=dir \
--        nvim --headless --clean --cmd 'set rtp^=editors/nvim' -c 'luafile editors/nvim/tests/driver.lua'
-- Writes what it saw (buffer text, extmarks, counters, :messages, :checkhealth) as JSON to $DGLSP_OUT
-- and quits. It checks nothing itself: tests/test_nvim.py asserts on that JSON.
local draft_section
local results = { steps = {}, server_log = {}, sent = {}, responses = {}, previews = {}, focus = {} }
local h = dofile(vim.fs.joinpath(vim.fs.dirname(debug.getinfo(1, "S").source:sub(2)), "harness.lua"))(results)
local finish, sleep, wait_for, press = h.finish, h.sleep, h.wait_for, h.press

local dglsp, ghost, inline
local bufnr

local function snapshot(name)
  local row, col = unpack(vim.api.nvim_win_get_cursor(0))
  local step = {
    name = name,
    lines = vim.api.nvim_buf_get_lines(bufnr, 0, -1, false),
    cursor = { row - 1, col },
    mode = vim.fn.mode(),
    ghost = ghost.shown(bufnr) or vim.NIL,
    items = inline.inspect(bufnr).items,
    index = inline.inspect(bufnr).index,
    stats = vim.deepcopy(inline.stats),
    responses_seen = #results.responses,
    previews_seen = #results.previews,
    focus_sent = #results.focus,
    statusline = dglsp.statusline(),
  }
  table.insert(results.steps, step)
  return step
end

-- Type characters until a suggestion from the server shows (random weights may offer nothing).
local function type_until_ghost(chars)
  for char in chars:gmatch(".") do
    press(char)
    if wait_for(function()
      return ghost.shown(bufnr) ~= nil
    end, 15000) then
      return true
    end
  end
  return false
end

-- Every `dglsp/preview` as it arrives, and what the statusline said once the plugin had handled it.
local function record_previews()
  local handle = vim.lsp.handlers["dglsp/preview"]
  vim.lsp.handlers["dglsp/preview"] = function(err, params, ctx, config)
    handle(err, params, ctx, config)
    local record = {
      kind = params.kind,
      version = params.version,
      done = params.done,
      text = params.text,
      reason = params.reason or vim.NIL,
      detail = params.detail or vim.NIL,
      latency_ms = params.latency_ms or vim.NIL,
      statusline = dglsp.statusline(),
    }
    table.insert(results.previews, record)
    if params.kind == "draft" then
      table.insert(results.draft.previews, record)
    end
  end
end

-- A request to the server, waited for.
local function ask(method, params)
  local answer
  require("dglsp.lsp").request(vim.lsp.get_clients({ name = "dglsp" })[1], method, params, function(err, result)
    answer = { error = err or vim.NIL, result = result or vim.NIL }
  end)
  wait_for(function()
    return answer ~= nil
  end, 5000)
  return answer or { error = "no answer" }
end

-- Entering a buffer and a jump in normal mode send `dglsp/focus`; the server encodes the prompt there.
local function focus_section()
  local sample = bufnr
  vim.cmd.edit(vim.env.DGLSP_WORKDIR .. "/other.py")
  vim.bo.filetype = "python"
  sleep(400)
  vim.cmd.buffer(sample)
  sleep(400)
  vim.cmd("normal! G")
  sleep(400)
  results.focus_uris =
    { other = vim.uri_from_fname(vim.env.DGLSP_WORKDIR .. "/other.py"), sample = vim.uri_from_bufnr(0) }
  local stats
  wait_for(function()
    stats = ask("workspace/executeCommand", { command = "dglsp.stats", arguments = {} }).result
    return type(stats) == "table" and (stats.prefill_tokens or 0) > 0
  end, 10000)
  results.prefill_tokens = type(stats) == "table" and stats.prefill_tokens or vim.NIL
end

-- The gate hides every suggestion (min_confidence 1.0: the tiny model is never that sure): the statusline says why.
local function gate_section(opts)
  opts.settings = vim.tbl_deep_extend("force", opts.settings, { postprocess = { min_confidence = 1.0 } })
  dglsp.setup(opts) -- sends the changed settings; its handlers replace the recording one
  record_previews()
  vim.api.nvim_win_set_cursor(0, { 2, 0 })
  press("A")
  local gated
  for char in (" + a"):gmatch(".") do
    local seen = #results.previews
    press(char)
    local found = wait_for(function()
      for i = seen + 1, #results.previews do
        if results.previews[i].reason == "low_confidence" then
          gated = results.previews[i]
          return true
        end
      end
      return false
    end, 15000)
    if found then
      break
    end
  end
  results.gated = gated or vim.NIL
  press("<Esc>")
end

local draft
results.draft = { renders = {}, progress = {}, previews = {}, attempts = 0 }

-- Every ghost render, and whether a draft was still in flight when it happened.
local function record_renders()
  local render = ghost.render
  ghost.render = function(buf, row, col, text)
    local state = draft.inspect()
    table.insert(
      results.draft.renders,
      { row = row, col = col, text = text or vim.NIL, drafting = state ~= nil and state.drafting }
    )
    return render(buf, row, col, text)
  end
  vim.api.nvim_create_autocmd("LspProgress", {
    callback = function(args)
      local params = args.data.params
      if type(params.token) == "string" and params.token:match("^dglsp/draft/") then
        table.insert(
          results.draft.progress,
          { token = params.token, kind = params.value.kind, message = params.value.message or vim.NIL }
        )
      end
    end,
  })
end

function draft_section()
  draft = require("dglsp.draft")
  record_renders()
  -- Insert mode at the end of the first line; random weights may draft nothing at one spot: try a few.
  vim.api.nvim_win_set_cursor(0, { 1, 0 })
  press("A")
  local shown = false
  for char in ("  x"):gmatch(".") do
    results.draft.attempts = results.draft.attempts + 1
    results.draft.renders = {}
    results.draft.progress = {}
    results.draft.previews = {}
    press("<M-d>")
    -- A typing event queued behind the draft key asks for a suggestion: none may be sent while drafting.
    local requests_before = inline.stats.requests
    inline.request(vim.api.nvim_get_current_buf())
    results.draft.inline_requests_while_drafting = inline.stats.requests - requests_before
    wait_for(function()
      local s = draft.inspect()
      return s == nil or not s.drafting
    end, 60000)
    local state = draft.inspect()
    if state and state.text then
      shown = true
      break
    end
    press(char)
  end
  results.draft.shown = shown
  local step = snapshot("draft shown")
  step.draft = draft.inspect() or vim.NIL
  step.draft_stats = vim.deepcopy(draft.stats)
  press("<Tab>")
  snapshot("draft accepted")
  press("<Esc>")

  -- The dismiss key while drafting cancels it: nothing is inserted.
  vim.api.nvim_win_set_cursor(0, { 1, 0 })
  press("A")
  local cancelled_before = draft.stats.cancelled
  snapshot("before dismissed draft")
  press("<M-d>")
  results.draft.dismiss_inflight = draft.inspect() and draft.inspect().request_id or vim.NIL
  press("<C-]>")
  sleep(1000)
  snapshot("draft dismissed while drafting")
  results.draft.dismiss_cancelled = draft.stats.cancelled - cancelled_before
  press("<Esc>")

  -- Visual mode: the draft goes after the selection (an instruction comment); :DglspDraftCancel stops it.
  vim.api.nvim_buf_set_lines(bufnr, -1, -1, false, { "# add two numbers", "# and return their sum" })
  vim.api.nvim_win_set_cursor(0, { vim.api.nvim_buf_line_count(bufnr) - 1, 0 })
  snapshot("before cancelled draft")
  press("Vj<M-d>")
  results.draft.visual_inflight = draft.inspect() and draft.inspect().request_id or vim.NIL
  vim.cmd("DglspDraftCancel")
  sleep(1000)
  snapshot("draft cancelled")
end

-- Next edits (the server's substitution predictor): rename a name; the edit at its next use is drawn there,
-- <Tab> jumps to it (far) and applies it; the next one (near) is dismissed by <Esc>, asked for again by
-- :DglspNextEdit and applied by one <Tab>.
local function next_edit_section(opts)
  local next_edit = require("dglsp.next_edit")
  local record = { steps = {} }
  results.next_edit = record
  local sample = vim.api.nvim_get_current_buf()
  vim.cmd.edit(vim.env.DGLSP_WORKDIR .. "/edit.py")
  vim.bo.filetype = "python"
  local buf = vim.api.nvim_get_current_buf()
  sleep(300)
  local function step(name)
    local row, col = unpack(vim.api.nvim_win_get_cursor(0))
    local stats = vim.deepcopy(next_edit.stats)
    stats.last_error = stats.last_error or vim.NIL
    table.insert(record.steps, {
      name = name,
      lines = vim.api.nvim_buf_get_lines(buf, 0, -1, false),
      cursor = { row - 1, col },
      shown = next_edit.inspect() or vim.NIL,
      marks = h.extmarks(buf, next_edit.ns),
      stats = stats,
      statusline = dglsp.statusline(),
      sent_seen = #results.sent,
      previews_seen = #results.previews,
    })
  end
  local function wait_shown()
    return wait_for(function()
      return next_edit.inspect() ~= nil
    end, 10000)
  end
  vim.api.nvim_win_set_cursor(0, { 2, 4 })
  step("before rename")
  press("ciwsum_<Esc>")
  record.far_shown = wait_shown()
  step("far edit shown")
  press("<Tab>")
  step("jumped")
  press("<Tab>")
  step("applied")
  record.near_shown = wait_shown() -- asked again after the applied edit
  step("near edit shown")
  press("<Esc>")
  step("dismissed")
  sleep(500)
  step("still dismissed") -- dismissing changes no text: nothing asks again
  vim.cmd("DglspNextEdit")
  record.asked_shown = wait_shown()
  step("asked again")
  press("<Tab>")
  step("applied near")
  sleep(500)
  record.uri = vim.uri_from_bufnr(buf)
  -- Automatic next edits off from here on: the gate section's outcome stays the last one.
  opts.next_edit = { enabled = false }
  vim.cmd.buffer(sample)
end

local function main()
  local settings = vim.json.decode(vim.env.DGLSP_SETTINGS or "{}")
  -- A mapping the user had before setup: it must still work when no suggestion is shown.
  vim.keymap.set("i", "<M-[>", "PREV")
  dglsp = require("dglsp")
  ghost = require("dglsp.ghost")
  inline = require("dglsp.inline")
  local opts = {
    cmd = vim.json.decode(vim.env.DGLSP_CMD),
    settings = settings,
    debounce_ms = 30,
    next_edit = { debounce_ms = 100 },
  }
  vim.o.showmode = false
  dglsp.setup(opts)
  results.lsp_autocmds = { #vim.api.nvim_get_autocmds({ group = "dglsp.lsp" }) }
  dglsp.setup(opts) -- idempotent: no second mapping, autocmd or server
  table.insert(results.lsp_autocmds, #vim.api.nvim_get_autocmds({ group = "dglsp.lsp" }))
  results.tab_map_desc = vim.fn.maparg("<Tab>", "i", false, true).desc
  record_previews()

  vim.lsp.handlers["window/logMessage"] = function(_, params)
    table.insert(results.server_log, params.message)
  end

  vim.cmd.edit(vim.env.DGLSP_WORKDIR .. "/sample.py")
  vim.bo.filetype = "python"
  vim.bo.expandtab = false
  results.loading_statuslines = {}
  local ready = wait_for(function()
    table.insert(results.loading_statuslines, dglsp.statusline())
    local status
    require("dglsp.lsp").status(function(_, s)
      status = s
    end)
    wait_for(function()
      return status ~= nil
    end, 2000)
    return status and status.ready
  end, 120000)
  results.ready = ready
  -- Record what goes over the wire (method, id), below the plugin, at the RPC transport.
  local rpc = vim.lsp.get_clients({ name = "dglsp" })[1].rpc
  local request, notify = rpc.request, rpc.notify
  rpc.request = function(method, params, callback, on_reply)
    local id
    local function record(err, result)
      table.insert(results.responses, { id = id, method = method, error = err or vim.NIL, result = result or vim.NIL })
      return callback(err, result)
    end
    local ok
    ok, id = request(method, params, record, on_reply)
    table.insert(
      results.sent,
      { method = method, id = id, params = method == "workspace/executeCommand" and params or vim.NIL }
    )
    return ok, id
  end
  rpc.notify = function(method, params)
    table.insert(results.sent, { method = method, id = method == "$/cancelRequest" and params.id or vim.NIL })
    if method == "dglsp/focus" then
      table.insert(results.focus, params)
    end
    return notify(method, params)
  end
  results.clients = #vim.lsp.get_clients({ name = "dglsp" })
  if not ready then
    return finish("server never became ready")
  end

  -- 0. Focus: entering a buffer, a jump.
  focus_section()

  -- 1. Type, see ghost text, accept it with <Tab>.
  vim.api.nvim_win_set_cursor(0, { 2, 0 })
  press("A")
  results.first_ghost = type_until_ghost(" retun")
  snapshot("ghost")
  press("<Tab>")
  snapshot("accepted")

  -- 2. Keep typing: a keystroke while a request is in flight cancels it; a new suggestion follows.
  press("<CR>")
  local saw_inflight = wait_for(function()
    return inline.inspect(bufnr).inflight ~= nil
  end, 5000)
  local before = snapshot("in flight")
  before.saw_inflight = saw_inflight
  before.inflight = inline.inspect(bufnr).inflight
  press("x")
  local after = snapshot("typed over")
  after.inflight = inline.inspect(bufnr).inflight or vim.NIL
  results.second_ghost = type_until_ghost(" = 1")
  snapshot("new ghost")

  -- 3. Dismiss: the ghost goes, the buffer stays.
  press("<C-]>")
  snapshot("dismissed")

  -- 4. No suggestion shown: keys do what they did before (the user's mapping, a literal <Tab>).
  press("<M-[>")
  press("<Esc>")
  snapshot("left insert mode")
  press("o<Tab>")
  snapshot("tab without suggestion")

  -- 5. Several items: cycle; partial accepts keep the rest on screen.
  inline.reset(bufnr)
  local row, col = unpack(vim.api.nvim_win_get_cursor(0))
  inline.set_items(bufnr, row - 1, col, { "alpha", "foo bar\nbaz" })
  snapshot("two items")
  press("<M-]>")
  snapshot("next")
  press("<M-Right>")
  snapshot("accept word")
  press("<M-C-Right>")
  snapshot("accept line")
  press("<M-C-Right>")
  snapshot("accept line again")
  press("<Esc>")

  -- 6. Drafts (:DglspDraft): what was drawn while drafting, what the server streamed, accept, cancel.
  draft_section()

  -- 7. Next edits: shown where they land, jumped to, applied, dismissed.
  next_edit_section(opts)

  -- 8. Hidden by the gate: the statusline says why.
  gate_section(opts)

  -- 9. Status, toggle, health.
  local status_text
  dglsp.status(function(text)
    status_text = text
  end)
  wait_for(function()
    return status_text ~= nil
  end, 5000)
  results.status = status_text
  vim.cmd("DglspToggle")
  results.enabled_after_toggle = inline.enabled
  vim.cmd("DglspToggle")
  vim.cmd("checkhealth dglsp")
  results.health = vim.api.nvim_buf_get_lines(0, 0, -1, false)
  finish(nil)
end

h.run(function()
  bufnr = 0
  vim.api.nvim_create_autocmd("BufEnter", {
    pattern = "*.py",
    callback = function(args)
      bufnr = args.buf
    end,
  })
  main()
end)
