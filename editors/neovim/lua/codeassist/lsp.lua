-- The language client: one codeassist-lsp for the session, started on the first buffer,
-- on Neovim 0.7 (start_client + buf_attach_client) and later (vim.lsp.start).
local M = {}

local NAME = "codeassist"

-- 0.11 made the client an object: methods are called with ':'; 0.7-0.10 use closures with '.'.
local METHOD_CALLS = vim.fn.has("nvim-0.11") == 1

M.state = { server = "starting", detail = nil, status = nil, client_id = nil }

function M.client()
  local id = M.state.client_id
  return id and vim.lsp.get_client_by_id(id) or nil
end

function M.request(client, method, params, handler, bufnr)
  if METHOD_CALLS then
    return client:request(method, params, handler, bufnr)
  end
  return client.request(method, params, handler, bufnr)
end

function M.notify(client, method, params)
  if METHOD_CALLS then
    return client:notify(method, params)
  end
  return client.notify(method, params)
end

function M.cancel(client, id)
  if METHOD_CALLS then
    return client:cancel_request(id)
  end
  return client.cancel_request(id)
end

local function is_stopped(client)
  if METHOD_CALLS then
    return client:is_stopped()
  end
  return client.is_stopped()
end

local function set_state(server, detail)
  M.state.server = server
  M.state.detail = detail
end

--- Starts the server if needed and attaches `bufnr`; false (with the reason in M.state) if it cannot.
function M.attach(cfg, settings, bufnr)
  local client = M.client()
  if client and not is_stopped(client) then
    if not vim.lsp.buf_is_attached(bufnr, client.id) then
      vim.lsp.buf_attach_client(bufnr, client.id)
    end
    return true
  end
  if M.state.server == "missing" or M.state.server == "stopped" then
    return false -- said once; :CodeassistRestart tries again
  end
  local exe = cfg.cmd[1]
  if vim.fn.executable(exe) ~= 1 then
    set_state("missing", string.format("the language server %s was not found (install it: pip install codeassist)", exe))
    vim.notify("codeassist: " .. M.state.detail, vim.log.levels.WARN)
    return false
  end
  set_state("starting")
  local config = {
    name = NAME,
    cmd = cfg.cmd,
    root_dir = vim.fn.getcwd(),
    init_options = settings,
    settings = { codeassist = settings },
    on_init = function()
      set_state("running")
    end,
    on_exit = function(code, signal)
      if M.state.server ~= "restarting" then
        set_state("stopped", string.format("the language server exited (code %s, signal %s); :CodeassistRestart starts it again", code, signal))
      end
      M.state.client_id = nil
      M.state.status = nil
    end,
  }
  local id
  if vim.lsp.start then
    id = vim.lsp.start(config, { bufnr = bufnr })
  else
    id = vim.lsp.start_client(config)
    if id then
      vim.lsp.buf_attach_client(bufnr, id)
    end
  end
  if not id then
    set_state("stopped", "the language server could not be started: " .. table.concat(cfg.cmd, " "))
    return false
  end
  M.state.client_id = id
  return true
end

--- Asks codeassist/status and waits for it (at most timeout_ms); updates M.state.
function M.refresh_status(timeout_ms)
  local client = M.client()
  if not client or not client.initialized then
    if client then
      vim.wait(timeout_ms, function()
        return client.initialized
      end, 20)
    end
    if not client or not client.initialized then
      return M.state
    end
  end
  local done, result, err = false, nil, nil
  M.request(client, "codeassist/status", {}, function(e, r)
    err, result, done = e, r, true
  end)
  vim.wait(timeout_ms, function()
    return done
  end, 10)
  if not done then
    set_state("unresponsive", "no answer to codeassist/status within " .. timeout_ms .. " ms")
  elseif err then
    set_state("unresponsive", "codeassist/status failed: " .. tostring(err.message or err))
  else
    set_state("running")
    M.state.status = result
  end
  return M.state
end

function M.send_settings(settings)
  local client = M.client()
  if client then
    M.notify(client, "workspace/didChangeConfiguration", { settings = { codeassist = settings } })
  end
end

function M.stop()
  local client = M.client()
  M.state.server = "restarting"
  if client then
    if METHOD_CALLS then
      client:stop(true)
    else
      client.stop(true)
    end
    vim.wait(2000, function()
      return is_stopped(client)
    end, 20)
  end
  M.state = { server = "starting", detail = nil, status = nil, client_id = nil }
end

return M
