-- A tiny test harness for headless Neovim 0.7+: each check records {name, ok, message} and the
-- results go to $CODEASSIST_TEST_RESULT as JSON, read by tests/editors/test_neovim.py.
local H = { results = {} }

local plugin = assert(os.getenv("CODEASSIST_PLUGIN_DIR"), "CODEASSIST_PLUGIN_DIR is not set")
vim.opt.runtimepath:append(plugin)
vim.cmd("runtime plugin/codeassist.lua")
vim.cmd("filetype on")
vim.o.swapfile = false
H.lsp_cmd = assert(os.getenv("CODEASSIST_LSP"), "CODEASSIST_LSP is not set")
H.workdir = assert(os.getenv("CODEASSIST_WORKDIR"), "CODEASSIST_WORKDIR is not set")

function H.check(name, ok, message)
  table.insert(H.results, { name = name, ok = ok and true or false, message = message and tostring(message) or "" })
end

function H.eq(name, want, got)
  H.check(name, vim.deep_equal(want, got), string.format("want %s, got %s", vim.inspect(want), vim.inspect(got)))
end

-- The test body runs in a coroutine that yields to Neovim's main loop while it waits, so typed
-- keys, timers and LSP answers are handled exactly as when a user types (vim.wait would not
-- process typeahead).
local co = nil

function H.sleep(ms)
  local me = coroutine.running()
  vim.defer_fn(function()
    local ok, err = coroutine.resume(me)
    if not ok then
      H.finish(err)
    end
  end, ms)
  coroutine.yield()
end

function H.wait(ms, fn)
  local deadline = vim.loop.now() + ms
  while true do
    local ok, res = pcall(fn)
    if ok and res then
      return true
    end
    if vim.loop.now() > deadline then
      return false
    end
    H.sleep(20)
  end
end

--- Writes `text` to a file in the work folder and opens it.
function H.open(name, text)
  local path = H.workdir .. "/" .. name
  local f = assert(io.open(path, "w"))
  f:write(text)
  f:close()
  vim.cmd("edit! " .. vim.fn.fnameescape(path))
  return path
end

--- Typed keys, as a user types them (mappings apply; Insert mode is kept).
function H.type(keys)
  vim.api.nvim_feedkeys(vim.api.nvim_replace_termcodes(keys, true, false, true), "t", false)
  H.sleep(60)
end

function H.ghost_texts()
  local ns = require("codeassist.ghost").ns
  local out = {}
  for _, m in ipairs(vim.api.nvim_buf_get_extmarks(0, ns, 0, -1, { details = true })) do
    local d = m[4]
    local parts = {}
    for _, chunk in ipairs(d.virt_text or {}) do
      table.insert(parts, chunk[1])
    end
    for _, vl in ipairs(d.virt_lines or {}) do
      local line = {}
      for _, chunk in ipairs(vl) do
        table.insert(line, chunk[1])
      end
      table.insert(parts, "\n" .. table.concat(line))
    end
    table.insert(out, table.concat(parts))
  end
  return out
end

function H.line(n)
  return vim.api.nvim_buf_get_lines(0, n - 1, n, false)[1]
end

--- Runs `fn` guarded, writes the results and quits (a Lua error must not leave nvim waiting).
local finished = false

function H.finish(err)
  if finished then
    return
  end
  finished = true
  if err then
    H.check("no Lua error", false, err)
  end
  local out = assert(io.open(assert(os.getenv("CODEASSIST_TEST_RESULT")), "w"))
  out:write(vim.json.encode({ version = tostring(vim.version().major) .. "." .. tostring(vim.version().minor), results = H.results }))
  out:close()
  vim.cmd("stopinsert")
  vim.schedule(function()
    vim.cmd("qa!")
  end)
end

function H.run(fn)
  co = coroutine.create(function()
    local ok, err = xpcall(fn, debug.traceback)
    H.finish(not ok and err or nil)
  end)
  local ok, err = coroutine.resume(co)
  if not ok then
    H.finish(err)
  end
end

return H
