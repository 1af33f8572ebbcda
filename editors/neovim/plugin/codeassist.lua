-- Commands; the plugin does nothing else until require("codeassist").setup() is called.
if vim.g.loaded_codeassist then
  return
end
vim.g.loaded_codeassist = true

local function ca()
  return require("codeassist")
end

vim.api.nvim_create_user_command("CodeassistStatus", function()
  ca().show_status()
end, { desc = "codeassist: model, backend, latency, and why nothing is suggested" })
vim.api.nvim_create_user_command("CodeassistEnable", function(o)
  ca().set_enabled(true, o.bang and vim.bo.filetype or nil)
end, { bang = true, desc = "codeassist: enable completions (! for this filetype only)" })
vim.api.nvim_create_user_command("CodeassistDisable", function(o)
  ca().set_enabled(false, o.bang and vim.bo.filetype or nil)
end, { bang = true, desc = "codeassist: disable completions (! for this filetype only)" })
vim.api.nvim_create_user_command("CodeassistRestart", function()
  ca().restart()
end, { desc = "codeassist: restart the language server" })
vim.api.nvim_create_user_command("CodeassistSuggest", function()
  ca().suggest(1)
end, { desc = "codeassist: ask for a suggestion now" })
