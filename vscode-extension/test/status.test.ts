import assert from "node:assert/strict";
import { test } from "node:test";

import { describeStatus, summarize, type ServerStatus, type StatusInput } from "../src/status";

const READY: ServerStatus = {
  model: "default", backend: "local", device: "cpu", ready: true, p50Ms: 31.6, p95Ms: 80, lastReason: null,
};

function view(input: Partial<StatusInput>) {
  return describeStatus({ server: "running", slowMs: 600, status: READY, ...input });
}

test("a healthy server shows the model, backend, device and last latency", () => {
  const v = view({ lastLatencyMs: 42 });
  assert.equal(v.level, "ok");
  assert.equal(v.text, "$(sparkle) codeassist: default · local/cpu · 42 ms");
  assert.match(v.tooltip, /p50 32 ms, p95 80 ms/);
});

test("without a client-side latency the server's median is shown", () => {
  assert.match(view({}).text, /· 32 ms$/);
});

test("a missing server is an error that says which command", () => {
  const v = describeStatus({ server: "missing", detail: "the language server codeassist-lsp was not found on PATH", slowMs: 600 });
  assert.equal(v.level, "error");
  assert.match(v.text, /server not found/);
  assert.match(v.tooltip, /codeassist-lsp was not found/);
});

test("a stopped or silent server is not shown as healthy, even with an old status", () => {
  assert.equal(view({ server: "stopped", detail: "exited" }).level, "error");
  const silent = view({ server: "unresponsive", detail: "timed out" });
  assert.equal(silent.level, "warning");
  assert.match(silent.text, /not responding/);
});

test("a model that cannot load puts the server's reason in the status bar", () => {
  const reason = "model file /x.safetensors does not exist";
  const v = view({ status: { ...READY, ready: false, lastReason: reason } });
  assert.equal(v.level, "warning");
  assert.match(v.text, /does not exist/);
  assert.match(v.tooltip, /is not ready: model file/);
});

test("a model still loading is busy, not a warning", () => {
  const v = view({ status: { ...READY, ready: false, lastReason: "the model is still loading" } });
  assert.equal(v.level, "busy");
});

test("a dead remote server turns the item into a warning with the reason", () => {
  const reason = "cannot reach the completion server at http://127.0.0.1:9 (ConnectError)";
  const v = view({ status: { ...READY, backend: "remote", device: "remote", lastReason: reason } });
  assert.equal(v.level, "warning");
  assert.match(v.text, /^\$\(warning\) codeassist: .*cannot reach/);
  assert.match(v.tooltip, /no suggestion: cannot reach the completion server/);
});

test("an ordinary reason for no suggestion is shown without a warning", () => {
  const v = view({ status: { ...READY, lastReason: "the cursor is inside a word" } });
  assert.equal(v.level, "ok");
  assert.match(v.text, /inside a word/);
});

test("a disabled language says so, whatever the server is doing", () => {
  const v = view({ blocked: "completions are disabled for python" });
  assert.equal(v.level, "off");
  assert.match(v.text, /off/);
  assert.equal(v.tooltip, "completions are disabled for python");
});

test("a slow median latency is a warning", () => {
  const v = view({ status: { ...READY, p50Ms: 900 } });
  assert.equal(v.level, "warning");
  assert.match(v.text, /slow/);
});

test("the summary names every part of the state", () => {
  const s = summarize({ server: "running", status: { ...READY, lastReason: "the model suggested nothing" }, slowMs: 600 });
  for (const part of ["model: default", "backend: local", "device: cpu", "ready: true", "last reason: the model suggested nothing"]) {
    assert.ok(s.includes(part), part);
  }
});
