-- Commands only; nothing starts until require("dglsp").setup(opts) (lazy.nvim: `opts = {}`).
if vim.g.loaded_dglsp then
  return
end
vim.g.loaded_dglsp = true

vim.api.nvim_create_user_command("DglspToggle", function()
  require("dglsp").toggle()
end, { desc = "dglsp: turn automatic suggestions on/off" })

vim.api.nvim_create_user_command("DglspStatus", function()
  require("dglsp").status()
end, { desc = "dglsp: model, device, last latency" })

vim.api.nvim_create_user_command("DglspDraft", function(args)
  require("dglsp.draft").start(args.range > 0 and { args.line1, args.line2 } or nil)
end, { range = true, desc = "dglsp: draft at the cursor (or after the selected lines), shown as it grows" })

vim.api.nvim_create_user_command("DglspDraftCancel", function()
  require("dglsp.draft").cancel()
end, { desc = "dglsp: stop the draft in flight (nothing is inserted), or remove the shown draft" })

vim.api.nvim_create_user_command("DglspNextEdit", function()
  require("dglsp.next_edit").request(nil, true)
end, { desc = "dglsp: ask for the next edit now (shown where it lands; <Tab> jumps to it / applies it)" })
