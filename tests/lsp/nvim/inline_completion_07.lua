-- Neovim 0.7: start_client + buf_attach_client + buf_request_sync (there is no vim.lsp.start).
local py = os.getenv("CA_PY")
local out = os.getenv("CA_OUT")
local dir = os.getenv("CA_DIR")
local function finish(o)
  vim.fn.writefile({vim.fn.json_encode(o)}, out)
  vim.cmd("qa!")
end
local ok, err = pcall(function()
  local client_id = vim.lsp.start_client({cmd = {py, "-m", "codeassist.cli.main", "lsp", "--backend", "fake"},
                                          root_dir = dir, name = "codeassist"})
  local buf = vim.api.nvim_get_current_buf()
  vim.api.nvim_buf_set_name(buf, dir .. "/x.py")
  vim.api.nvim_buf_set_lines(buf, 0, -1, false, {"import os", "x = ", ""})
  vim.bo[buf].filetype = "python"
  vim.lsp.buf_attach_client(buf, client_id)
  local ready = vim.wait(20000, function()
    local c = vim.lsp.get_client_by_id(client_id)
    return c ~= nil and c.initialized
  end, 50)
  local params = {textDocument = {uri = vim.uri_from_bufnr(buf)}, position = {line = 1, character = 4},
                  context = {triggerKind = 1}}
  local res, req_err = vim.lsp.buf_request_sync(buf, "textDocument/inlineCompletion", params, 20000)
  -- "ready" also waits for the server's background warm-up (tokenizer, prompt tables), which a
  -- loaded machine may not have finished by the first answer: ask until it says so
  local status
  vim.wait(20000, function()
    status = vim.lsp.buf_request_sync(buf, "codeassist/status", {}, 5000)
    for _, r in pairs(status or {}) do
      if r.result and r.result.ready then return true end
    end
    return false
  end, 200)
  vim.lsp.stop_client(client_id)
  vim.wait(3000, function() return vim.lsp.get_client_by_id(client_id) == nil end, 50)
  finish({initialized = ready, err = req_err, res = res, status = status, version = vim.version()})
end)
if not ok then finish({error = tostring(err)}) end
