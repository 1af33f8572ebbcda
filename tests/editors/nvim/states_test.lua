-- Bad states are visible, not silent: a missing server, a model that cannot load, and a dead
-- remote server each put a reason in :CodeassistStatus (a disabled language: ghost_test.lua).
local H = dofile(vim.fn.fnamemodify(debug.getinfo(1, "S").source:sub(2), ":h") .. "/harness.lua")

local function status_text(st)
  return table.concat(st.lines, "\n")
end

H.run(function()
  local ca = require("codeassist")
  local notes = {}
  vim.notify = function(msg, level)
    table.insert(notes, { msg = msg, level = level })
  end

  -- 1. No server at the configured command.
  ca.setup({ cmd = { H.workdir .. "/no-such-codeassist-lsp" } })
  H.open("a.py", "x = \n")
  local st = ca.status(1000)
  H.eq("a missing server is an error", "error", st.level)
  H.check("the status says the server was not found", status_text(st):find("not found", 1, true) ~= nil, status_text(st))
  H.check("the user is told once, with how to install it",
    #notes >= 1 and notes[1].msg:find("pip install codeassist", 1, true) ~= nil, vim.inspect(notes))

  -- 2. The real server, with a model file that does not exist.
  local missing_model = H.workdir .. "/no-such-model.safetensors"
  ca.setup({ cmd = { H.lsp_cmd }, model = missing_model })
  vim.cmd("edit!")
  H.check("the server starts", H.wait(60000, function()
    local c = require("codeassist.lsp").client()
    return c ~= nil and c.initialized
  end))
  H.check("the model failure reaches the status", H.wait(90000, function()
    st = ca.status()
    return st.status ~= nil and st.status.ready == false and not status_text(st):find("loading", 1, true)
  end), status_text(st))
  H.eq("a model that cannot load is a warning", "warning", st.level)
  H.check("the status names the reason", status_text(st):find("not ready", 1, true) ~= nil, status_text(st))
  local shown = #notes
  vim.cmd("CodeassistStatus")
  H.check(":CodeassistStatus shows it as a warning", #notes == shown + 1 and notes[#notes].level == vim.log.levels.WARN
    and notes[#notes].msg:find("not ready", 1, true) ~= nil, vim.inspect(notes[#notes]))

  -- 3. A remote server that is down (settings changed on the running server).
  local dead = assert(os.getenv("CODEASSIST_DEAD_URL"))
  ca.setup({ cmd = { H.lsp_cmd }, backend = "remote", remote = { url = dead, timeoutMs = 500 } })
  vim.api.nvim_win_set_cursor(0, { 1, 0 })
  H.type("A")
  H.check("the dead remote's reason reaches the status", H.wait(30000, function()
    st = ca.status()
    return st.status ~= nil and st.status.backend == "remote" and st.status.lastReason ~= vim.NIL
      and st.status.lastReason ~= nil
  end), status_text(st))
  H.eq("a dead remote is a warning", "warning", st.level)
  H.check("the status says the server cannot be reached", status_text(st):find(dead, 1, true) ~= nil, status_text(st))
  H.eq("no ghost text from a dead remote", {}, H.ghost_texts())
  H.check("statusline() gives the short form", ca.statusline():find("codeassist:", 1, true) == 1, ca.statusline())
end)
