-- Settings: the same keys as the VS Code extension and the language server (ARCHITECTURE.md, "LSP"),
-- plus the client-side ones (server command, enabling, keymaps).
local M = {}

local islist = vim.islist or vim.tbl_islist -- renamed in 0.10

M.defaults = {
  -- The language server: a command list, as vim.lsp takes it.
  cmd = { "codeassist-lsp" },
  enabled = true,
  disabled_languages = {}, -- filetypes that get no suggestion (:CodeassistDisable! adds the current one)
  auto_trigger = true, -- ask while typing; false: only on keymaps.next / :CodeassistSuggest
  trigger_delay_ms = 60, -- client-side pause after a keystroke before asking
  status_timeout_ms = 3000,
  hl_group = "Comment",
  keymaps = {
    accept = "<Tab>", -- falls back to a real <Tab> when there is no suggestion
    accept_word = "<M-Right>",
    accept_line = "<M-Down>",
    dismiss = "<C-]>",
    next = "<M-]>",
  },
  -- Sent to the server as initializationOptions and workspace/didChangeConfiguration.
  backend = "local",
  model = "default",
  device = "auto",
  remote = { url = "", api = "codeassist", apiKey = nil, model = nil, timeoutMs = 2000 },
  maxTokens = 48,
  temperature = 0,
  debounceMs = 0,
  multiline = "auto",
  languages = {}, -- empty: every filetype
  exclude = {},
  context = { maxPromptTokens = 896, openFiles = 4 },
}

local SERVER_KEYS = {
  "backend", "model", "device", "remote", "maxTokens", "temperature", "debounceMs",
  "multiline", "languages", "exclude", "context",
}

local function copy(t)
  return vim.deepcopy(t)
end

--- The defaults with the user's options merged in (tables merged key by key, lists replaced).
function M.merge(opts)
  local out = copy(M.defaults)
  for k, v in pairs(opts or {}) do
    if type(v) == "table" and type(out[k]) == "table" and not islist(v) and not islist(out[k]) then
      out[k] = vim.tbl_extend("force", out[k], v)
    elseif type(v) == "table" and vim.tbl_isempty(v) and type(out[k]) == "table" then
      out[k] = {} -- an empty table is a list here
    else
      out[k] = v
    end
  end
  if type(out.cmd) == "string" then
    out.cmd = { out.cmd }
  end
  -- An API key from the environment, so it need not be written into init.lua.
  if out.remote.apiKey == nil and os.getenv("CODEASSIST_API_KEY") then
    out.remote.apiKey = os.getenv("CODEASSIST_API_KEY")
  end
  return out
end

--- The `codeassist` settings object for the server.
function M.server_settings(cfg)
  local out = {}
  for _, k in ipairs(SERVER_KEYS) do
    out[k] = copy(cfg[k])
  end
  return out
end

--- Why a buffer of this filetype gets no suggestion from the client's side, or nil.
function M.language_block(cfg, filetype)
  if not cfg.enabled then
    return "completions are disabled (:CodeassistEnable turns them on)"
  end
  if vim.tbl_contains(cfg.disabled_languages or {}, filetype) then
    return "completions are disabled for " .. filetype
  end
  if #(cfg.languages or {}) > 0 and not vim.tbl_contains(cfg.languages, filetype) then
    return filetype .. " is not in the languages setting"
  end
  return nil
end

return M
