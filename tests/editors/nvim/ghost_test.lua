-- Ghost text end to end against the real codeassist-lsp with its deterministic fake backend,
-- which suggests "fake_completion()" wherever the cursor is.
local H = dofile(vim.fn.fnamemodify(debug.getinfo(1, "S").source:sub(2), ":h") .. "/harness.lua")

H.run(function()
  local ca = require("codeassist")
  ca.setup({ cmd = { H.lsp_cmd, "--backend", "fake" }, trigger_delay_ms = 10 })
  H.open("hello.py", "import os\n\nresult = \n")
  local lsp = require("codeassist.lsp")
  H.check("the server starts", H.wait(60000, function()
    local c = lsp.client()
    return c ~= nil and c.initialized
  end), vim.inspect(lsp.state))

  -- Typing: Insert mode at the end of line 3 asks for a suggestion, drawn as an extmark.
  vim.api.nvim_win_set_cursor(0, { 3, 0 })
  H.type("A")
  H.check("ghost text appears", H.wait(20000, ca.visible), vim.inspect(lsp.state))
  H.eq("the extmark holds the suggestion", { "fake_completion()" }, H.ghost_texts())

  -- Tab accepts it into the buffer.
  H.type("<Tab>")
  H.eq("Tab accepts the suggestion", "result = fake_completion()", H.line(3))
  H.eq("the cursor ends after the accepted text", { 3, #"result = fake_completion()" }, vim.api.nvim_win_get_cursor(0))

  -- Accept a word, then the rest of the line.
  H.type("<CR>value = ")
  H.check("a new suggestion appears after typing", H.wait(20000, ca.visible))
  H.type("<M-Right>")
  H.eq("accept word takes one word", "value = fake_completion", H.line(4))
  H.eq("the rest stays on screen", { "()" }, H.ghost_texts())
  H.type("<M-Down>")
  H.eq("accept line takes the rest of the line", "value = fake_completion()", H.line(4))

  -- Dismiss, then ask again with the next-suggestion key.
  H.type("<CR>other = ")
  H.check("a suggestion before dismissing", H.wait(20000, ca.visible))
  H.type("<C-]>")
  H.eq("dismiss removes the ghost text", {}, H.ghost_texts())
  H.type("<M-]>")
  H.check("next asks again and shows a suggestion", H.wait(20000, ca.visible))
  H.type("<C-]>")
  H.type("<Tab>")
  H.eq("Tab without a suggestion inserts a tab", "other = \t", H.line(5))

  -- :CodeassistStatus names the model and backend.
  local st = ca.status()
  H.eq("status is ok", "ok", st.level)
  H.check("status names the fake backend", st.short:find("fake", 1, true) ~= nil, st.short)
  local shown = {}
  local notify = vim.notify
  vim.notify = function(msg, level)
    table.insert(shown, { msg = msg, level = level })
  end
  vim.cmd("CodeassistStatus")
  vim.notify = notify
  H.check(":CodeassistStatus reports the model", #shown == 1 and shown[1].msg:find("model fake", 1, true) ~= nil, vim.inspect(shown))

  -- A disabled language: no request, and the reason in the status.
  vim.cmd("CodeassistDisable!")
  H.type("<CR>more = ")
  vim.wait(500)
  H.eq("a disabled language gets no ghost text", {}, H.ghost_texts())
  st = ca.status()
  H.eq("status level for a disabled language", "off", st.level)
  H.check("status says the language is disabled", table.concat(st.lines, "\n"):find("disabled for python", 1, true) ~= nil, vim.inspect(st.lines))
  vim.cmd("CodeassistEnable!")
  H.type("x")
  H.type("<BS>")
  H.check("enabling it again brings suggestions back", H.wait(20000, ca.visible))
end)
