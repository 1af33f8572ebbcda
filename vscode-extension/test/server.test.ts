import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { test } from "node:test";

import { findExecutable, installCommand, resolveServer } from "../src/server";

function tempBin(name: string, mode = 0o755): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "codeassist-ext-"));
  const file = path.join(dir, name);
  fs.writeFileSync(file, "#!/bin/sh\n");
  fs.chmodSync(file, mode);
  return dir;
}

test("the server command is found on PATH, with the extra arguments", () => {
  const dir = tempBin("codeassist-lsp");
  const r = resolveServer((k) => ({ "server.args": ["--backend", "fake"] })[k], { PATH: dir });
  assert.ok(r.ok);
  assert.equal(r.launch.command, path.join(dir, "codeassist-lsp"));
  assert.deepEqual(r.launch.args, ["--backend", "fake"]);
});

test("a missing server is reported with one sentence, not thrown", () => {
  const r = resolveServer(() => undefined, { PATH: fs.mkdtempSync(path.join(os.tmpdir(), "empty-")) });
  assert.equal(r.ok, false);
  if (!r.ok) assert.equal(r.reason, "the language server codeassist-lsp was not found on PATH");
});

test("a file that is not executable does not count", () => {
  const dir = tempBin("codeassist-lsp", 0o644);
  assert.equal(findExecutable("codeassist-lsp", { PATH: dir }), null);
  assert.equal(findExecutable(path.join(dir, "codeassist-lsp")), null);
});

test("pythonPath runs the module and wins over the command", () => {
  const dir = tempBin("python3");
  const python = path.join(dir, "python3");
  const r = resolveServer((k) => ({ "server.pythonPath": python, "server.command": "nope" })[k], { PATH: "" });
  assert.ok(r.ok);
  assert.deepEqual(r.launch, { command: python, args: ["-m", "codeassist.cli", "lsp", "--stdio"] });
  const missing = resolveServer((k) => ({ "server.pythonPath": "/no/such/python" })[k], { PATH: "" });
  assert.equal(missing.ok, false);
  if (!missing.ok) assert.match(missing.reason, /Python interpreter \/no\/such\/python was not found/);
});

test("the install command quotes a Python path with spaces", () => {
  assert.equal(installCommand("python3"), "python3 -m pip install --upgrade codeassist");
  assert.equal(installCommand("/opt/my py/bin/python"), '"/opt/my py/bin/python" -m pip install --upgrade codeassist');
  assert.equal(installCommand("python3", "/src/my repo"), 'python3 -m pip install --upgrade "/src/my repo"');
  assert.equal(installCommand("python3", ""), "python3 -m pip install --upgrade codeassist");
});
