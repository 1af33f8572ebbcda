-- Ghost text: ask textDocument/inlineCompletion at the cursor, draw the answer with extmarks
-- (virt_text on the cursor line, virt_lines below), and accept it whole, by word or by line.
local lsp = require("codeassist.lsp")

local M = {}

M.ns = vim.api.nvim_create_namespace("codeassist_ghost")
-- 0.10 can draw virtual text inside a line; before that it goes at the end of the line.
local HAS_INLINE = vim.fn.has("nvim-0.10") == 1
local NEW_BYTEINDEX = vim.fn.has("nvim-0.11") == 1
local uv = vim.uv or vim.loop

local function byteindex(line, units, encoding)
  if NEW_BYTEINDEX then
    return vim.str_byteindex(line, encoding or "utf-16", units, false)
  end
  return vim.str_byteindex(line, units, encoding ~= "utf-8" and encoding ~= "utf-32")
end

-- The suggestion on screen: {bufnr, row, col, tick, text, items, index} (row/col 0-based, col in bytes).
M.current = nil
local pending = nil -- {client, id}
local expected_tick = nil -- the changedtick our own partial accept produced
M.last_latency_ms = nil

function M.clear()
  if M.current and vim.api.nvim_buf_is_valid(M.current.bufnr) then
    vim.api.nvim_buf_clear_namespace(M.current.bufnr, M.ns, 0, -1)
  end
  M.current = nil
end

function M.cancel_pending()
  if pending then
    pcall(lsp.cancel, pending.client, pending.id)
    pending = nil
  end
end

local function cursor()
  local pos = vim.api.nvim_win_get_cursor(0)
  return pos[1] - 1, pos[2]
end

local function item_text(item)
  local t = item.insertText
  if type(t) == "table" then
    t = t.value -- a snippet string: shown and inserted as plain text
  end
  return type(t) == "string" and t or ""
end

-- The part of the item still to insert: the item may replace text before the cursor (its range).
local function remainder(bufnr, row, col, item, encoding)
  local text = item_text(item)
  local range = item.range
  if range and range.start.line == row then
    local line = vim.api.nvim_buf_get_lines(bufnr, row, row + 1, false)[1] or ""
    local ok, start = pcall(byteindex, line, range.start.character, encoding)
    if ok and start < col then
      local typed = line:sub(start + 1, col)
      if text:sub(1, #typed) ~= typed then
        return ""
      end
      return text:sub(#typed + 1)
    end
  end
  return text
end

function M.draw(bufnr, row, col, text, hl)
  vim.api.nvim_buf_clear_namespace(bufnr, M.ns, 0, -1)
  if text == "" then
    return
  end
  local lines = vim.split(text, "\n", { plain = true })
  local line = vim.api.nvim_buf_get_lines(bufnr, row, row + 1, false)[1] or ""
  local opts = { virt_text = { { lines[1], hl } }, hl_mode = "combine" }
  if HAS_INLINE then
    opts.virt_text_pos = "inline"
  elseif col >= #line then
    opts.virt_text_pos = "overlay" -- right after the last character, where the text would go
  else
    opts.virt_text_pos = "eol" -- mid-line before 0.10: shown after the line
  end
  if #lines > 1 then
    opts.virt_lines = {}
    for i = 2, #lines do
      table.insert(opts.virt_lines, { { lines[i], hl } })
    end
  end
  vim.api.nvim_buf_set_extmark(bufnr, M.ns, row, col, opts)
end

--- Asks for a suggestion at the cursor. `opts.blocked` is the client-side reason to ask nothing.
function M.request(cfg, trigger_kind)
  M.cancel_pending()
  local bufnr = vim.api.nvim_get_current_buf()
  local client = lsp.client()
  if not client or not client.initialized then
    M.clear()
    return
  end
  local row, col = cursor()
  local tick = vim.api.nvim_buf_get_changedtick(bufnr)
  local params = vim.lsp.util.make_position_params(0, client.offset_encoding)
  params.context = { triggerKind = trigger_kind or 2 } -- 1 invoked, 2 automatic
  local t0 = uv.hrtime()
  local ok, id
  ok, id = lsp.request(client, "textDocument/inlineCompletion", params, function(err, result)
    if pending and pending.id == id then
      pending = nil
    end
    M.last_latency_ms = (uv.hrtime() - t0) / 1e6
    if err or not vim.api.nvim_buf_is_valid(bufnr) then
      return
    end
    -- A stale answer (the user typed on or moved) is dropped, not drawn in the wrong place.
    local r, c = cursor()
    if vim.api.nvim_get_current_buf() ~= bufnr or vim.api.nvim_buf_get_changedtick(bufnr) ~= tick or r ~= row or c ~= col then
      return
    end
    local items = result and (result.items or result) or {}
    M.show(bufnr, row, col, tick, items, 1, cfg, client.offset_encoding)
  end, bufnr)
  if ok and id then
    pending = { client = client, id = id }
  end
end

function M.show(bufnr, row, col, tick, items, index, cfg, encoding)
  local texts = {}
  for _, item in ipairs(items) do
    local t = remainder(bufnr, row, col, item, encoding)
    if t ~= "" then
      table.insert(texts, t)
    end
  end
  if #texts == 0 then
    M.clear()
    return
  end
  index = ((index - 1) % #texts) + 1
  M.current = { bufnr = bufnr, row = row, col = col, tick = tick, texts = texts, index = index, text = texts[index] }
  M.draw(bufnr, row, col, M.current.text, cfg.hl_group)
end

--- Is a suggestion on screen for the cursor as it is now?
function M.visible()
  local cur = M.current
  if not cur or cur.bufnr ~= vim.api.nvim_get_current_buf() then
    return false
  end
  local row, col = cursor()
  return row == cur.row and col == cur.col and vim.api.nvim_buf_get_changedtick(cur.bufnr) == cur.tick
end

-- The first word of `text`: leading blanks, then a run of word characters or of other characters.
local function first_word(text)
  local s = text:match("^%s*[%w_]+") or text:match("^%s*[^%w_%s]+") or text:match("^%s+") or text
  return s
end

-- Through the end of the first line; a suggestion that starts with a newline takes the next line.
local function first_line(text)
  local nl = text:find("\n", 1, true)
  if not nl then
    return text
  end
  if nl == 1 then
    local nl2 = text:find("\n", 2, true)
    return nl2 and text:sub(1, nl2 - 1) or text
  end
  return text:sub(1, nl - 1)
end

--- Inserts all (`how` = "all"), a word or a line of the suggestion; true if something was inserted.
function M.accept(how, cfg)
  if not M.visible() then
    return false
  end
  local cur = M.current
  local text = cur.text
  local part = text
  if how == "word" then
    part = first_word(text)
  elseif how == "line" then
    part = first_line(text)
  end
  local rest = text:sub(#part + 1)
  local lines = vim.split(part, "\n", { plain = true })
  vim.api.nvim_buf_clear_namespace(cur.bufnr, M.ns, 0, -1)
  vim.api.nvim_buf_set_text(cur.bufnr, cur.row, cur.col, cur.row, cur.col, lines)
  local row = cur.row + #lines - 1
  local col = (#lines == 1 and cur.col or 0) + #lines[#lines]
  vim.api.nvim_win_set_cursor(0, { row + 1, col })
  M.current = nil
  if rest ~= "" then
    -- Keep showing what is left, without asking the server again for this change.
    local tick = vim.api.nvim_buf_get_changedtick(cur.bufnr)
    expected_tick = tick
    M.current = { bufnr = cur.bufnr, row = row, col = col, tick = tick, texts = { rest }, index = 1, text = rest }
    M.draw(cur.bufnr, row, col, rest, cfg.hl_group)
  end
  return true
end

--- True once for the change a partial accept made (so the autocmd does not ask again).
function M.is_own_change(bufnr)
  if expected_tick and vim.api.nvim_buf_get_changedtick(bufnr) == expected_tick then
    expected_tick = nil
    return true
  end
  return false
end

--- The next suggestion in the list, or a fresh request when there is only one.
function M.next(cfg)
  local cur = M.current
  if M.visible() and #cur.texts > 1 then
    M.current.index = cur.index % #cur.texts + 1
    M.current.text = cur.texts[M.current.index]
    M.draw(cur.bufnr, cur.row, cur.col, M.current.text, cfg.hl_group)
    return
  end
  M.request(cfg, 1)
end

return M
