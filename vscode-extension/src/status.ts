// What the status-bar item says. Pure: the extension feeds it the client's state and the last
// `codeassist/status` answer; the unit tests feed it every bad state.

export type ServerState = "starting" | "running" | "missing" | "stopped" | "unresponsive";

/** The answer to the `codeassist/status` request. */
export interface ServerStatus {
  model: string;
  backend: string;
  device: string;
  ready: boolean;
  p50Ms: number | null;
  p95Ms: number | null;
  lastReason: string | null;
}

export interface StatusInput {
  server: ServerState;
  detail?: string; // why the server is missing, stopped or unresponsive
  status?: ServerStatus;
  blocked?: string | null; // why the active editor's language gets nothing (client side)
  lastLatencyMs?: number; // the last inline request's round trip, measured by the client
  slowMs: number;
}

export type Level = "ok" | "busy" | "off" | "warning" | "error";

export interface StatusView {
  text: string;
  tooltip: string;
  level: Level;
}

// Reasons that are part of normal typing, not a fault: they are shown, but not as a warning.
const ORDINARY = [/^the cursor is inside a word/, /^the model suggested nothing/, /^the suggestion was dropped/];

export function isOrdinaryReason(reason: string): boolean {
  return ORDINARY.some((re) => re.test(reason));
}

function shorten(text: string, max = 48): string {
  return text.length <= max ? text : `${text.slice(0, max - 1)}…`;
}

function ms(value: number | null | undefined): string {
  return value === null || value === undefined ? "–" : `${Math.round(value)} ms`;
}

export function describeStatus(input: StatusInput): StatusView {
  const s = input.status;
  switch (input.server) {
    case "missing":
      return {
        text: "$(error) codeassist: server not found",
        tooltip: `${input.detail ?? "the language server was not found"}. Click for options.`,
        level: "error",
      };
    case "stopped":
      return {
        text: "$(error) codeassist: server stopped",
        tooltip: `${input.detail ?? "the language server stopped"}. Run 'codeassist: Restart the language server'.`,
        level: "error",
      };
    case "unresponsive":
      return {
        text: "$(warning) codeassist: server not responding",
        tooltip: input.detail ?? "the language server did not answer the status request",
        level: "warning",
      };
    case "starting":
      if (!s) return { text: "$(loading~spin) codeassist: starting", tooltip: "starting the language server", level: "busy" };
      break;
    case "running":
      break;
  }
  if (input.blocked) {
    return { text: "$(circle-slash) codeassist: off", tooltip: input.blocked, level: "off" };
  }
  if (!s) return { text: "$(loading~spin) codeassist", tooltip: "waiting for the server's status", level: "busy" };
  const where = `${s.backend}/${s.device}`;
  if (!s.ready) {
    const reason = s.lastReason ?? "the backend is not ready";
    const loading = /loading/.test(reason);
    return {
      text: `${loading ? "$(loading~spin)" : "$(warning)"} codeassist: ${shorten(reason)}`,
      tooltip: `${s.model} (${where}) is not ready: ${reason}`,
      level: loading ? "busy" : "warning",
    };
  }
  const latency = input.lastLatencyMs ?? s.p50Ms;
  const lines = [
    `model ${s.model}, backend ${s.backend}, device ${s.device}`,
    `latency: last ${ms(input.lastLatencyMs)}, p50 ${ms(s.p50Ms)}, p95 ${ms(s.p95Ms)}`,
  ];
  let text = `$(sparkle) codeassist: ${s.model} · ${where} · ${ms(latency)}`;
  let level: Level = "ok";
  if (s.p50Ms !== null && s.p50Ms > input.slowMs) {
    level = "warning";
    text = `$(warning) codeassist: slow · ${s.model} · ${ms(s.p50Ms)}`;
    lines.push(`slow: the median latency is above codeassist.status.slowMs (${input.slowMs} ms)`);
  }
  if (s.lastReason) {
    lines.push(`no suggestion: ${s.lastReason}`);
    text += ` · ${shorten(s.lastReason, 40)}`;
    if (!isOrdinaryReason(s.lastReason)) {
      level = "warning";
      text = text.replace("$(sparkle)", "$(warning)");
    }
  }
  return { text, tooltip: lines.join("\n"), level };
}

/** The multi-line summary for 'codeassist: Show status' (and the log). */
export function summarize(input: StatusInput): string {
  const view = describeStatus(input);
  const s = input.status;
  const parts = [`server: ${input.server}${input.detail ? ` (${input.detail})` : ""}`];
  if (s) {
    parts.push(`model: ${s.model}`, `backend: ${s.backend}`, `device: ${s.device}`, `ready: ${s.ready}`);
    parts.push(`latency p50 ${ms(s.p50Ms)}, p95 ${ms(s.p95Ms)}, last ${ms(input.lastLatencyMs)}`);
    if (s.lastReason) parts.push(`last reason: ${s.lastReason}`);
  }
  if (input.blocked) parts.push(`this editor: ${input.blocked}`);
  parts.push(`state: ${view.level}`);
  return parts.join("; ");
}
