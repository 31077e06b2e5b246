--- dglsp.keymaps: insert-mode keys for accept / accept word / accept line / dismiss / next / prev,
--- and the draft key (`:DglspDraft`).
---
--- A key acts on the suggestion only when one is shown; otherwise it does exactly what it did
--- before setup (the mapping that was there, or the key's built-in meaning), so mapping <Tab>
--- does not take <Tab> away. Accept and dismiss also work in normal mode, on a draft only. The
--- draft key is mapped only where its lhs is free (it has no "nothing shown" state to fall back
--- from). `apply()` is idempotent: it restores what it replaced first.
local draft = require("dglsp.draft")
local inline = require("dglsp.inline")

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
}

-- The draft key: insert and normal mode draft at the cursor, visual mode after the selection.
local draft_rhs = {
  i = function()
    draft.start()
  end,
  n = function()
    draft.start()
  end,
  x = ":DglspDraft<CR>",
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

local function map_draft_key(lhs)
  for mode, rhs in pairs(draft_rhs) do
    if vim.tbl_isempty(vim.fn.maparg(lhs, mode, false, true)) then
      table.insert(replaced, { mode, lhs, {} })
      vim.keymap.set(mode, lhs, rhs, { desc = DESC .. "draft", silent = true })
    else
      vim.notify(
        ("dglsp: %s is already mapped in mode %s; keys.draft left unmapped there"):format(lhs, mode),
        vim.log.levels.WARN
      )
    end
  end
end

--- Map `keys` ({ action = lhs | false }), replacing an earlier apply().
function M.apply(keys)
  restore()
  for action, lhs in pairs(keys) do
    if lhs and action == "draft" then
      map_draft_key(lhs)
    elseif lhs and actions[action] then
      for mode, act in pairs(actions[action]) do
        local previous = vim.fn.maparg(lhs, mode, false, true)
        table.insert(replaced, { mode, lhs, previous })
        vim.keymap.set(mode, lhs, function()
          if not act() then
            fallback(lhs, previous)
          end
        end, { desc = DESC .. action, silent = true })
      end
    end
  end
end

return M
