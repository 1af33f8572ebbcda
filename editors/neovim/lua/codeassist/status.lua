-- What :CodeassistStatus and statusline() say: the same states and wording as the VS Code item.
local M = {}

local ORDINARY = { "^the cursor is inside a word", "^the model suggested nothing", "^the suggestion was dropped" }

function M.is_ordinary(reason)
  for _, pat in ipairs(ORDINARY) do
    if reason:find(pat) then
      return true
    end
  end
  return false
end

local function ms(v)
  if v == nil or v == vim.NIL then
    return "-"
  end
  return string.format("%d ms", math.floor(v + 0.5))
end

local function reason_of(s)
  local r = s and s.lastReason
  if r == vim.NIL then
    return nil
  end
  return r
end

--- {level = ok|busy|off|warning|error, short = one line, lines = {...}}
--- `state` = {server = starting|running|missing|stopped|unresponsive, detail, status, blocked, last_latency_ms}
function M.describe(state)
  local s = state.status
  if state.server == "missing" or state.server == "stopped" then
    local what = state.server == "missing" and "server not found" or "server stopped"
    return { level = "error", short = "codeassist: " .. what, lines = { "codeassist: " .. what .. ": " .. (state.detail or "") } }
  end
  if state.server == "unresponsive" then
    return { level = "warning", short = "codeassist: server not responding",
             lines = { "codeassist: server not responding: " .. (state.detail or "") } }
  end
  if state.blocked then
    return { level = "off", short = "codeassist: off", lines = { "codeassist: off: " .. state.blocked } }
  end
  if not s then
    return { level = "busy", short = "codeassist: starting", lines = { "codeassist: starting the language server" } }
  end
  local reason = reason_of(s)
  local head = string.format("model %s, backend %s, device %s", s.model, s.backend, s.device)
  if not s.ready then
    reason = reason or "the backend is not ready"
    local level = reason:find("loading") and "busy" or "warning"
    return { level = level, short = "codeassist: " .. reason,
             lines = { "codeassist: not ready: " .. reason, head } }
  end
  local level = "ok"
  local lines = { "codeassist: ready", head,
                  string.format("latency: last %s, p50 %s, p95 %s", ms(state.last_latency_ms), ms(s.p50Ms), ms(s.p95Ms)) }
  local latency = state.last_latency_ms or (s.p50Ms ~= vim.NIL and s.p50Ms or nil)
  local short = string.format("codeassist: %s %s/%s %s", s.model, s.backend, s.device, ms(latency))
  if reason then
    table.insert(lines, "no suggestion: " .. reason)
    short = short .. " - " .. reason
    if not M.is_ordinary(reason) then
      level = "warning"
      lines[1] = "codeassist: ready, but " .. reason
    end
  end
  return { level = level, short = short, lines = lines }
end

return M
