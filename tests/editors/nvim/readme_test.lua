-- Runs a Lua block from editors/neovim/README.md ($CODEASSIST_SNIPPET, with the server command
-- pointed at the real codeassist-lsp and its fake backend), types, and accepts with the snippet's <Tab>.
local H = dofile(vim.fn.fnamemodify(debug.getinfo(1, "S").source:sub(2), ":h") .. "/harness.lua")

local function any_ghost()
  for _, ns in pairs(vim.api.nvim_get_namespaces()) do -- every namespace (0.7 has no ns_id -1)
    for _, m in ipairs(vim.api.nvim_buf_get_extmarks(0, ns, 0, -1, { details = true })) do
      local d = m[4]
      if d.virt_text and #d.virt_text > 0 then
        return true
      end
    end
  end
  return false
end

H.run(function()
  dofile(assert(os.getenv("CODEASSIST_SNIPPET")))
  H.open("snippet.py", "import os\n\nvalue = \n")
  vim.api.nvim_win_set_cursor(0, { 3, 0 })
  H.check("the server attaches", H.wait(60000, function()
    for _, c in pairs((vim.lsp.get_clients or vim.lsp.get_active_clients)()) do
      if c.name == "codeassist" and c.initialized then
        return true
      end
    end
    return false
  end))
  H.type("A")
  H.check("ghost text appears", H.wait(20000, any_ghost))
  H.type("<Tab>")
  H.eq("the snippet's <Tab> accepts it", "value = fake_completion()", H.line(3))
end)
