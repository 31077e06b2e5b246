--- dglsp.keymaps: insert-mode keys for accept / accept word / accept line / dismiss / next / prev,
--- normal-mode keys for next edits (apply, dismiss, ask), and the draft key (`:DglspDraft`).
---
--- A key acts on the suggestion only when one is shown; otherwise it does exactly what it did
--- before setup (the mapping that was there, or the key's built-in meaning), so mapping <Tab>
--- does not take <Tab> away. Accept and dismiss also work in normal mode, on a draft only. Actions
--- sharing a key in a mode are one mapping that tries them in order (normal-mode <Tab>: a shown
--- draft, then a next edit, then the key itself). The draft and edit-request keys are mapped only
--- where their lhs is free (they have no "nothing shown" state to fall back from). `apply()` is
--- idempotent: it restores what it replaced first.
local draft = require("dglsp.draft")
local inline = require("dglsp.inline")
local next_edit = require("dglsp.next_edit")

local M = {}

local DESC = "dglsp: "
-- action -> mode -> function returning false when there was nothing to act on.
local actions = {
  accept = {
    i = function()
      return draft.accept() or inline.accept("all")
    end,
    n = function()
      return draft.accept()
    end,
  },
  accept_word = {
    i = function()
      return inline.accept("word")
    end,
  },
  accept_line = {
    i = function()
      return inline.accept("line")
    end,
  },
  dismiss = {
    i = function()
      return draft.dismiss() or inline.dismiss()
    end,
    n = function()
      return draft.dismiss()
    end,
  },
  next = {
    i = function()
      return inline.cycle(1)
    end,
  },
  prev = {
    i = function()
      return inline.cycle(-1)
    end,
  },
  edit_apply = {
    n = function()
      return next_edit.jump_or_apply()
    end,
  },
  edit_dismiss = {
    n = function()
      return next_edit.dismiss()
    end,
  },
}
-- The order in which actions sharing a key are tried.
local ORDER = { "accept", "accept_word", "accept_line", "dismiss", "next", "prev", "edit_apply", "edit_dismiss" }

-- Keys mapped only where free. The draft key: insert and normal mode draft at the cursor, visual mode
-- after the selection.
local free_rhs = {
  draft = {
    i = function()
      draft.start()
    end,
    n = function()
      draft.start()
    end,
    x = ":DglspDraft<CR>",
  },
  edit_request = {
    n = function()
      next_edit.request(nil, true)
    end,
  },
}

-- { mode, lhs, previous }: what we mapped and the mapping that was there before (maparg() dict; {} when none).
local replaced = {}

local function feed(keys, noremap)
  -- "i": in front of anything typed after this key, as if the key itself had produced it.
  vim.api.nvim_feedkeys(keys, noremap and "ni" or "mi", false)
end

local function fallback(lhs, previous)
  if vim.tbl_isempty(previous) then
    -- "n": the key's built-in meaning (in normal mode too: <Tab> is <C-i>, <C-]> jumps to a tag).
    feed(vim.keycode(lhs), true)
    return
  end
  local noremap = previous.noremap == 1
  if previous.callback then
    local keys = previous.callback()
    if previous.expr == 1 and type(keys) == "string" then
      feed(previous.replace_keycodes == 1 and vim.keycode(keys) or keys, noremap)
    end
    return
  end
  local rhs = previous.expr == 1 and vim.api.nvim_eval(previous.rhs) or previous.rhs
  feed(vim.keycode(rhs), noremap)
end

local function restore()
  for _, entry in ipairs(replaced) do
    local mode, lhs, previous = unpack(entry)
    pcall(vim.keymap.del, mode, lhs)
    if not vim.tbl_isempty(previous) then
      vim.fn.mapset(mode, false, previous)
    end
  end
  replaced = {}
end

local function map_free_key(action, lhs)
  for mode, rhs in pairs(free_rhs[action]) do
    if vim.tbl_isempty(vim.fn.maparg(lhs, mode, false, true)) then
      table.insert(replaced, { mode, lhs, {} })
      vim.keymap.set(mode, lhs, rhs, { desc = DESC .. action, silent = true })
    else
      vim.notify(
        ("dglsp: %s is already mapped in mode %s; keys.%s left unmapped there"):format(lhs, mode, action),
        vim.log.levels.WARN
      )
    end
  end
end

--- Map `keys` ({ action = lhs | false }), replacing an earlier apply().
function M.apply(keys)
  restore()
  local chains, order = {}, {} -- "mode lhs" -> { mode, lhs, acts, names }, in the order first seen
  for _, action in ipairs(ORDER) do
    for mode, act in pairs(keys[action] and actions[action] or {}) do
      local id = mode .. " " .. keys[action]
      if not chains[id] then
        chains[id] = { mode = mode, lhs = keys[action], acts = {}, names = {} }
        table.insert(order, id)
      end
      table.insert(chains[id].acts, act)
      table.insert(chains[id].names, action)
    end
  end
  for _, id in ipairs(order) do
    local chain = chains[id]
    local previous = vim.fn.maparg(chain.lhs, chain.mode, false, true)
    table.insert(replaced, { chain.mode, chain.lhs, previous })
    vim.keymap.set(chain.mode, chain.lhs, function()
      for _, act in ipairs(chain.acts) do
        if act() then
          return
        end
      end
      fallback(chain.lhs, previous)
    end, { desc = DESC .. table.concat(chain.names, ", "), silent = true })
  end
  for action in pairs(free_rhs) do
    if keys[action] then
      map_free_key(action, keys[action])
    end
  end
end

return M
