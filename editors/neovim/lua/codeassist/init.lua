-- codeassist for Neovim 0.7+: ghost text from codeassist-lsp's textDocument/inlineCompletion.
--
--   require("codeassist").setup({ model = "default", keymaps = { accept = "<Tab>" } })
--
-- See editors/neovim/README.md (and, on 0.11+, the native vim.lsp.inline_completion path there).
local config = require("codeassist.config")
local ghost = require("codeassist.ghost")
local lsp = require("codeassist.lsp")
local status = require("codeassist.status")

local M = {}

M.config = nil
local group = nil
local timer = nil
local mapped = {}

local function cfg()
  if not M.config then
    M.config = config.merge({})
  end
  return M.config
end

local function blocked(bufnr)
  return config.language_block(cfg(), vim.bo[bufnr or 0].filetype)
end

local function attachable(bufnr)
  return vim.bo[bufnr].buftype == "" and vim.bo[bufnr].filetype ~= ""
end

--- Attaches the current buffer (starting the server if needed); false if it cannot.
function M.attach(bufnr)
  bufnr = bufnr or vim.api.nvim_get_current_buf()
  if not attachable(bufnr) then
    return false
  end
  return lsp.attach(cfg(), config.server_settings(cfg()), bufnr)
end

--- Asks for a suggestion now (what typing does after trigger_delay_ms).
function M.suggest(trigger_kind)
  local bufnr = vim.api.nvim_get_current_buf()
  if blocked(bufnr) then
    ghost.clear()
    return
  end
  if M.attach(bufnr) then
    ghost.request(cfg(), trigger_kind)
  end
end

local function schedule_suggest()
  local uv = vim.uv or vim.loop
  if timer then
    timer:stop()
  else
    timer = uv.new_timer()
  end
  timer:start(cfg().trigger_delay_ms, 0, vim.schedule_wrap(function()
    if vim.fn.mode():sub(1, 1) == "i" then
      M.suggest(2)
    end
  end))
end

function M.accept()
  return ghost.accept("all", cfg())
end

function M.accept_word()
  return ghost.accept("word", cfg())
end

function M.accept_line()
  return ghost.accept("line", cfg())
end

function M.dismiss()
  ghost.cancel_pending()
  ghost.clear()
end

function M.next()
  if not blocked() and M.attach() then
    ghost.next(cfg())
  end
end

function M.visible()
  return ghost.visible()
end

--- The state, refreshed from the server: {server, detail, status, blocked, last_latency_ms, level, short, lines}.
function M.status(timeout_ms)
  local bufnr = vim.api.nvim_get_current_buf()
  local why = blocked(bufnr)
  if not why and attachable(bufnr) then
    M.attach(bufnr)
  end
  local st = lsp.refresh_status(timeout_ms or cfg().status_timeout_ms)
  local state = { server = st.server, detail = st.detail, status = st.status, blocked = why,
                  last_latency_ms = ghost.last_latency_ms }
  local view = status.describe(state)
  state.level, state.short, state.lines = view.level, view.short, view.lines
  return state
end

--- A short string for a statusline (no request is made: the last known state).
function M.statusline()
  local st = lsp.state
  return status.describe({ server = st.server, detail = st.detail, status = st.status, blocked = blocked(),
                           last_latency_ms = ghost.last_latency_ms }).short
end

function M.show_status()
  local state = M.status()
  local level = ({ error = vim.log.levels.ERROR, warning = vim.log.levels.WARN })[state.level] or vim.log.levels.INFO
  vim.notify(table.concat(state.lines, "\n"), level)
  return state
end

--- Turns completions on or off, globally or (`filetype` given) for one filetype.
function M.set_enabled(enable, filetype)
  local c = cfg()
  if filetype then
    c.disabled_languages = vim.tbl_filter(function(l)
      return l ~= filetype
    end, c.disabled_languages)
    if not enable then
      table.insert(c.disabled_languages, filetype)
    end
  else
    c.enabled = enable
  end
  if not enable then
    M.dismiss()
  end
end

function M.restart()
  M.dismiss()
  lsp.stop()
  return M.attach()
end

local function map(lhs, fn, fallback)
  if not lhs or lhs == "" then
    return
  end
  vim.keymap.set("i", lhs, function()
    if not fn() and fallback then
      vim.api.nvim_feedkeys(vim.api.nvim_replace_termcodes(lhs, true, false, true), "n", false)
    end
  end, { silent = true, desc = "codeassist" })
  table.insert(mapped, lhs)
end

local function set_keymaps(keys)
  for _, lhs in ipairs(mapped) do
    pcall(vim.keymap.del, "i", lhs)
  end
  mapped = {}
  map(keys.accept, M.accept, true)
  map(keys.accept_word, M.accept_word, true)
  map(keys.accept_line, M.accept_line, true)
  map(keys.dismiss, function()
    local shown = ghost.visible()
    M.dismiss()
    return shown
  end, true)
  map(keys.next, function()
    M.next()
    return true
  end, false)
end

--- Takes the same settings as the VS Code extension (see config.lua); call again to change them.
function M.setup(opts)
  local old = M.config
  M.config = config.merge(opts)
  local c = M.config
  set_keymaps(c.keymaps)
  group = vim.api.nvim_create_augroup("codeassist", { clear = true })
  vim.api.nvim_create_autocmd({ "TextChangedI", "TextChangedP" }, {
    group = group,
    callback = function(args)
      if ghost.is_own_change(args.buf) then
        return
      end
      ghost.clear()
      if c.auto_trigger then
        schedule_suggest()
      end
    end,
  })
  vim.api.nvim_create_autocmd("InsertEnter", {
    group = group,
    callback = function()
      if c.auto_trigger then
        schedule_suggest()
      end
    end,
  })
  vim.api.nvim_create_autocmd({ "InsertLeave", "BufLeave" }, { group = group, callback = M.dismiss })
  vim.api.nvim_create_autocmd("CursorMovedI", {
    group = group,
    callback = function()
      if ghost.current and not ghost.visible() then
        ghost.clear()
      end
    end,
  })
  vim.api.nvim_create_autocmd("FileType", {
    group = group,
    callback = function(args)
      if not blocked(args.buf) then
        M.attach(args.buf)
      end
    end,
  })
  -- Settings for a running server go over didChangeConfiguration; a new command needs a restart.
  if old and table.concat(old.cmd, " ") ~= table.concat(c.cmd, " ") then
    M.restart()
  elseif old and lsp.client() then
    lsp.send_settings(config.server_settings(c))
  end
end

return M
