-- Neovim >= 0.11: the native vim.lsp.inline_completion accepts a suggestion into the buffer.
local py = os.getenv("CA_PY")
local dir = os.getenv("CA_DIR")
local out = os.getenv("CA_OUT")
local function finish(o)
  vim.fn.writefile({vim.fn.json_encode(o)}, out)
  vim.cmd("qa!")
end
local ok, err = pcall(function()
  local buf = vim.api.nvim_get_current_buf()
  vim.api.nvim_buf_set_name(buf, dir .. "/y.py")
  vim.api.nvim_buf_set_lines(buf, 0, -1, false, {"import os", "x = ", ""})
  vim.bo[buf].filetype = "python"
  local client_id = vim.lsp.start({name = "codeassist", cmd = {py, "-m", "codeassist.cli.main", "lsp", "--backend", "fake"}, root_dir = dir}, {bufnr = buf})
  vim.wait(20000, function() local c = vim.lsp.get_client_by_id(client_id); return c ~= nil and c.initialized end, 50)
  vim.lsp.inline_completion.enable(true, {bufnr = buf})
  vim.api.nvim_win_set_cursor(0, {2, 3})
  local deadline = vim.uv.now() + 15000
  local accepted = false
  local timer = vim.uv.new_timer()
  timer:start(100, 100, vim.schedule_wrap(function()
    if not accepted then
      accepted = vim.lsp.inline_completion.get({bufnr = buf})
    elseif vim.api.nvim_buf_get_lines(buf, 1, 2, false)[1] ~= "x = " then
      timer:stop()
      finish({accepted = true, lines = vim.api.nvim_buf_get_lines(buf, 0, -1, false), mode = vim.api.nvim_get_mode().mode})
      return
    end
    if vim.uv.now() > deadline then
      timer:stop()
      finish({accepted = accepted, lines = vim.api.nvim_buf_get_lines(buf, 0, -1, false), timeout = true})
    end
  end))
  vim.cmd("startinsert!")
end)
if not ok then finish({error = tostring(err)}) end
