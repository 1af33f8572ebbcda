// Where the language server comes from: `codeassist.server.*` → an executable and its arguments.
// Pure apart from reading the file system, so the unit tests run in plain Node.

import * as fs from "node:fs";
import * as path from "node:path";

import type { ConfigGetter } from "./settings";

export interface ServerLaunch {
  command: string;
  args: string[];
}

export type ServerResolution =
  | { ok: true; launch: ServerLaunch }
  | { ok: false; reason: string; python: string };

function isExecutable(file: string): boolean {
  try {
    fs.accessSync(file, fs.constants.X_OK);
    return fs.statSync(file).isFile();
  } catch {
    return false;
  }
}

/** The absolute path of `command` (a path, or a name looked up on PATH), or null. */
export function findExecutable(command: string, env: NodeJS.ProcessEnv = process.env): string | null {
  if (!command) return null;
  if (command.includes("/") || command.includes("\\")) {
    return isExecutable(command) ? path.resolve(command) : null;
  }
  const exts = process.platform === "win32" ? (env.PATHEXT ?? ".EXE;.CMD;.BAT").split(";") : [""];
  for (const dir of (env.PATH ?? "").split(path.delimiter)) {
    if (!dir) continue;
    for (const ext of exts) {
      const candidate = path.join(dir, command + ext);
      if (isExecutable(candidate)) return candidate;
    }
  }
  return null;
}

/**
 * pythonPath wins when set (`python -m codeassist.cli lsp --stdio`); otherwise the command.
 * A missing executable is reported with one sentence, and with the Python an install would use.
 */
export function resolveServer(get: ConfigGetter, env: NodeJS.ProcessEnv = process.env): ServerResolution {
  const extra = ((get("server.args") as unknown[] | undefined) ?? []).filter(
    (a): a is string => typeof a === "string",
  );
  const pythonPath = typeof get("server.pythonPath") === "string" ? (get("server.pythonPath") as string) : "";
  if (pythonPath) {
    const python = findExecutable(pythonPath, env);
    if (!python) {
      return { ok: false, reason: `the Python interpreter ${pythonPath} was not found`, python: pythonPath };
    }
    return { ok: true, launch: { command: python, args: ["-m", "codeassist.cli", "lsp", "--stdio", ...extra] } };
  }
  const command = typeof get("server.command") === "string" ? (get("server.command") as string) : "";
  const name = command || "codeassist-lsp";
  const found = findExecutable(name, env);
  if (!found) {
    return {
      ok: false,
      reason: `the language server ${name} was not found on PATH`,
      python: findExecutable("python3", env) ?? "python3",
    };
  }
  return { ok: true, launch: { command: found, args: [...extra] } };
}

function shellQuote(word: string): string {
  return /[\s"'$`\\]/.test(word) ? `"${word.replace(/(["$`\\])/g, "\\$1")}"` : word;
}

/** The shell command that installs the server into `python`'s environment from `source`
 *  (a package name, wheel, folder or git URL; codeassist.server.installSource). */
export function installCommand(python: string, source = "codeassist"): string {
  return `${shellQuote(python)} -m pip install --upgrade ${shellQuote(source || "codeassist")}`;
}
