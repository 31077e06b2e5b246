-- luacheck config for the Neovim plugin (run from editors/nvim: `luacheck .`).
std = "luajit"
globals = { "vim" } -- Neovim's API; plugins set its fields (vim.g, vim.bo, vim.lsp.handlers)
max_line_length = 120
