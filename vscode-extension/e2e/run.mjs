// End-to-end: the packaged extension in a real VS Code (code-server), driven by headless Chromium.
//
//   node run.mjs --vsix ../codeassist.vsix --server /path/codeassist-lsp --server-arg=--backend \
//     --server-arg=fake --expect fake_completion() --work /tmp/x --artifacts ../../test-artifacts
//
// Installs the .vsix, opens a Python file, types, waits for ghost text in `.ghost-text-decoration`,
// accepts it with Tab, saves, and checks the file on disk; then disables Python from the command
// palette and checks that the status bar says so. Writes a screenshot and result.json to --artifacts.
// Exits 0 only when every check passed. Waits are generous (a shared, slow CPU); nothing is timed.
import { spawn, spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as net from "node:net";
import * as path from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";

import { chromium } from "playwright-core";

const here = path.dirname(fileURLToPath(import.meta.url));
const { values: opt } = parseArgs({
  options: {
    vsix: { type: "string" },
    server: { type: "string" },
    "server-arg": { type: "string", multiple: true, default: [] },
    expect: { type: "string", default: "" }, // the ghost text must contain this ("" = any text)
    work: { type: "string" },
    artifacts: { type: "string" },
    chromium: { type: "string", default: "/usr/bin/chromium" },
    "wait-ms": { type: "string", default: "120000" },
  },
});
for (const k of ["vsix", "server", "work", "artifacts"]) {
  if (!opt[k]) throw new Error(`--${k} is required`);
}
const WAIT = Number(opt["wait-ms"]);
const entry = path.join(here, "node_modules", "code-server", "out", "node", "entry.js");
const work = path.resolve(opt.work);
const artifacts = path.resolve(opt.artifacts);
fs.mkdirSync(artifacts, { recursive: true });
const dirs = Object.fromEntries(["userdata", "extensions", "workspace"].map((d) => [d, path.join(work, d)]));
for (const d of Object.values(dirs)) fs.mkdirSync(d, { recursive: true });
const configFile = path.join(work, "code-server.yaml");
fs.writeFileSync(configFile, "auth: none\ncert: false\n");

const result = { checks: [], consoleLines: [], ghostText: null, statusBar: [] };
const t0 = Date.now();
function log(msg) {
  const line = `[e2e +${((Date.now() - t0) / 1000).toFixed(1)}s] ${msg}`;
  console.log(line);
}
function check(name, ok, detail = "") {
  result.checks.push({ name, ok: Boolean(ok), detail: String(detail) });
  log(`${ok ? "PASS" : "FAIL"} ${name}${detail ? `: ${detail}` : ""}`);
  return ok;
}

// 1. Install the packaged extension.
const install = spawnSync(process.execPath, [entry, "--config", configFile, "--user-data-dir", dirs.userdata,
  "--extensions-dir", dirs.extensions, "--install-extension", path.resolve(opt.vsix)], { encoding: "utf8" });
check("the .vsix installs", install.status === 0 && fs.readdirSync(dirs.extensions).some((d) => d.startsWith("codeassist.codeassist")),
  (install.stdout + install.stderr).trim().split("\n").slice(-2).join(" | "));

// 2. User settings: our server, and no suggest widget competing with the ghost text for Tab.
fs.mkdirSync(path.join(dirs.userdata, "User"), { recursive: true });
const settingsFile = path.join(dirs.userdata, "User", "settings.json");
const settings = {
  "codeassist.server.command": path.resolve(opt.server),
  "codeassist.server.args": opt["server-arg"],
  "codeassist.status.pollMs": 1000,
  "editor.inlineSuggest.enabled": true,
  "editor.quickSuggestions": { other: false, comments: false, strings: false },
  "editor.suggestOnTriggerCharacters": false,
  "workbench.startupEditor": "none",
  "workbench.tips.enabled": false,
  "security.workspace.trust.enabled": false,
  "telemetry.telemetryLevel": "off",
  "extensions.autoCheckUpdates": false,
  "extensions.autoUpdate": false,
  "chat.commandCenter.enabled": false,
  "files.autoSave": "off",
};
fs.writeFileSync(settingsFile, JSON.stringify(settings, null, 2));
const file = path.join(dirs.workspace, "hello.py");
fs.writeFileSync(file, "import os\n\n\n");

async function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.listen(0, "127.0.0.1", () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
    srv.on("error", reject);
  });
}

async function waitFor(what, fn, ms = WAIT) {
  const deadline = Date.now() + ms;
  let last;
  while (Date.now() < deadline) {
    try {
      last = await fn();
      if (last) return last;
    } catch (err) {
      last = err;
    }
    await new Promise((r) => setTimeout(r, 250));
  }
  throw new Error(`timed out after ${ms} ms waiting for ${what} (last: ${String(last)})`);
}

const port = await freePort();
const server = spawn(process.execPath, [entry, "--config", configFile, "--bind-addr", `127.0.0.1:${port}`, "--auth", "none",
  "--user-data-dir", dirs.userdata, "--extensions-dir", dirs.extensions, "--disable-telemetry",
  "--disable-update-check", "--disable-workspace-trust", dirs.workspace], { stdio: ["ignore", "pipe", "pipe"], detached: true });
// code-server starts its own children (extension host, language server): end the whole group.
function stopServer() {
  try {
    process.kill(-server.pid, "SIGTERM");
  } catch {
    // already gone
  }
}
for (const sig of ["SIGTERM", "SIGINT"]) {
  process.on(sig, () => {
    stopServer();
    process.exit(1);
  });
}
const serverLog = fs.createWriteStream(path.join(artifacts, "code-server.log"));
server.stdout.pipe(serverLog);
server.stderr.pipe(serverLog);

let browser;
let page;
let exitCode = 1;
try {
  await waitFor("code-server to answer", async () => (await fetch(`http://127.0.0.1:${port}/healthz`)).ok);
  log(`code-server is up on port ${port}`);
  browser = await chromium.launch({
    executablePath: opt.chromium,
    headless: true,
    args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
      "--disable-component-update", "--disable-sync"],
  });
  page = await browser.newPage({ viewport: { width: 1280, height: 720 } });
  let activated = false;
  page.on("console", (m) => {
    const text = m.text();
    if (text.includes("codeassist")) result.consoleLines.push(text.slice(0, 300));
    if (text.includes("codeassist: activated")) activated = true;
  });
  await page.goto(`http://127.0.0.1:${port}/?folder=${encodeURIComponent(dirs.workspace)}`);
  await page.waitForSelector(".monaco-workbench", { timeout: WAIT });
  await waitFor("the extension to activate", () => activated);
  log("the extension activated");

  const statusItem = page.locator(".statusbar-item", { hasText: "codeassist" }).first();
  const statusText = async () => ((await statusItem.textContent({ timeout: 2000 })) ?? "").trim();
  // The status bar shows the server's model once codeassist/status has answered.
  const ready = await waitFor("the status bar to show a ready server", async () => {
    const t = await statusText();
    return /codeassist: \S+ · \S+\/\S+/.test(t) ? t : false;
  });
  result.statusBar.push(ready);
  check("the status bar shows the model, backend and device", true, ready);

  // 3. Open the Python file and type.
  await page.keyboard.press("Control+P");
  await page.waitForSelector(".quick-input-widget input", { timeout: WAIT });
  await page.keyboard.type("hello.py");
  await waitFor("the quick-open result", async () => (await page.locator(".quick-input-list .monaco-list-row").count()) > 0);
  await page.keyboard.press("Enter");
  const editor = page.locator(".editor-instance .monaco-editor").first();
  await editor.locator(".view-lines", { hasText: "import os" }).waitFor({ timeout: WAIT });
  await editor.locator(".view-lines").click();
  await page.keyboard.press("Control+End");
  await page.keyboard.type("result = ", { delay: 30 });

  // 4. Ghost text.
  const ghost = page.locator(".ghost-text-decoration").first();
  let ghostText = "";
  try {
    await ghost.waitFor({ timeout: WAIT });
    ghostText = ((await ghost.textContent()) ?? "").replace(/\u00a0/g, " ");
  } catch (err) {
    log(`no ghost text: ${String(err).split("\n")[0]}`);
  }
  result.ghostText = ghostText;
  check("ghost text appears in .ghost-text-decoration", ghostText.trim().length > 0, JSON.stringify(ghostText));
  if (opt.expect) check("the ghost text is the server's suggestion", ghostText.includes(opt.expect), JSON.stringify(ghostText));
  await page.screenshot({ path: path.join(artifacts, "vscode-ghost-text.png") });

  // 5. Tab accepts it; the saved file has it.
  await page.keyboard.press("Tab");
  await page.keyboard.press("Control+S");
  const saved = await waitFor("the file to be saved", () => {
    const text = fs.readFileSync(file, "utf8");
    return text.includes("result = ") ? text : false;
  }).catch(() => fs.readFileSync(file, "utf8"));
  const line = saved.split("\n").find((l) => l.startsWith("result = ")) ?? "";
  result.acceptedLine = line;
  check("Tab accepts the ghost text into the buffer", ghostText.trim() !== "" && line === `result = ${ghostText}`.trimEnd(),
    JSON.stringify(line));
  await page.screenshot({ path: path.join(artifacts, "vscode-accepted.png") });

  // 6. A disabled language is visible in the status bar, not silent.
  await page.keyboard.press("F1");
  await page.waitForSelector(".quick-input-widget input", { timeout: WAIT });
  await page.keyboard.type("codeassist: Disable completions for this language");
  await waitFor("the command in the palette", async () =>
    (await page.locator(".quick-input-list .monaco-list-row", { hasText: "Disable completions for this language" }).count()) > 0);
  await page.keyboard.press("Enter");
  const off = await waitFor("the status bar to say off", async () => {
    const t = await statusText();
    return t.includes("codeassist: off") ? t : false;
  }, 30000).catch((err) => String(err));
  result.statusBar.push(off);
  check("disabling Python shows in the status bar", off.includes("codeassist: off"), off);
  await page.screenshot({ path: path.join(artifacts, "vscode-disabled.png") });

  exitCode = result.checks.every((c) => c.ok) ? 0 : 1;
} catch (err) {
  check("the run completes", false, String(err).split("\n")[0]);
  if (page) await page.screenshot({ path: path.join(artifacts, "vscode-failure.png") }).catch(() => {});
} finally {
  fs.writeFileSync(path.join(artifacts, "result.json"), JSON.stringify(result, null, 2));
  if (browser) await browser.close().catch(() => {});
  stopServer();
}
process.exit(exitCode);
