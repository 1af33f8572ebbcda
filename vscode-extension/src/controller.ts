// The language client's life (start, restart, crash), settings forwarding, and the status bar.

import * as vscode from "vscode";
import {
  CloseAction,
  DidChangeConfigurationNotification,
  ErrorAction,
  LanguageClient,
  State,
  type LanguageClientOptions,
  type ServerOptions,
} from "vscode-languageclient/node";

import { resolveServer, type ServerLaunch } from "./server";
import { buildServerSettings, languageBlock, type ConfigGetter, type ServerSettings } from "./settings";
import { describeStatus, summarize, type ServerState, type ServerStatus, type StatusInput } from "./status";

export const API_KEY_SECRET = "codeassist.remote.apiKey";
const STATUS_METHOD = "codeassist/status";
const STATUS_TIMEOUT_MS = 5000;

export function configGetter(): ConfigGetter {
  const cfg = vscode.workspace.getConfiguration("codeassist");
  return (key) => cfg.get(key);
}

export class Controller implements vscode.Disposable {
  private client: LanguageClient | undefined;
  private state: ServerState = "starting";
  private detail: string | undefined;
  private status: ServerStatus | undefined;
  private lastLatencyMs: number | undefined;
  private timer: NodeJS.Timeout | undefined;
  private polling = false;
  private crashes: number[] = [];
  private missingPython = "python3";
  private readonly disposables: vscode.Disposable[] = [];

  constructor(
    private readonly context: vscode.ExtensionContext,
    private readonly output: vscode.LogOutputChannel,
    private readonly item: vscode.StatusBarItem,
  ) {
    item.name = "codeassist";
    item.command = "codeassist.showStatus";
    item.show();
    this.disposables.push(
      vscode.window.onDidChangeActiveTextEditor(() => this.render()),
      vscode.workspace.onDidChangeConfiguration((e) => void this.onConfigurationChanged(e)),
      context.secrets.onDidChange((e) => {
        if (e.key === API_KEY_SECRET) void this.sendSettings();
      }),
    );
  }

  get pythonForInstall(): string {
    return this.missingPython;
  }

  log(line: string): void {
    this.output.info(line);
  }

  async settings(): Promise<ServerSettings> {
    return buildServerSettings(configGetter(), await this.context.secrets.get(API_KEY_SECRET));
  }

  async start(): Promise<void> {
    const resolved = resolveServer(configGetter());
    if (!resolved.ok) {
      this.missingPython = resolved.python;
      this.setState("missing", resolved.reason);
      this.log(`cannot start: ${resolved.reason}`);
      void this.offerInstall(resolved.reason);
      return;
    }
    this.setState("starting");
    await this.startClient(resolved.launch);
  }

  private async startClient(launch: ServerLaunch): Promise<void> {
    this.log(`starting ${launch.command} ${launch.args.join(" ")}`);
    const serverOptions: ServerOptions = { command: launch.command, args: launch.args, options: { env: process.env } };
    const clientOptions: LanguageClientOptions = {
      documentSelector: [{ scheme: "file" }, { scheme: "untitled" }],
      initializationOptions: await this.settings(),
      outputChannel: this.output,
      middleware: {
        provideInlineCompletionItems: async (document, position, context, token, next) => {
          const blocked = languageBlock(document.languageId, configGetter());
          if (blocked) {
            this.render();
            return null;
          }
          const t0 = Date.now();
          const result = await next(document, position, context, token);
          if (!token.isCancellationRequested) {
            this.lastLatencyMs = Date.now() - t0;
            void this.poll();
          }
          return result;
        },
        // The server also offers a classic completion list; ghost text is this extension's UI,
        // and a suggest widget on top of it would take the Tab meant for the ghost text.
        provideCompletionItem: () => null,
      },
      errorHandler: {
        error: () => ({ action: ErrorAction.Continue }),
        closed: () => {
          // Restart after a crash, but not in a loop: three crashes in three minutes stop it.
          const now = Date.now();
          this.crashes = [...this.crashes.filter((t) => now - t < 180_000), now];
          if (this.crashes.length <= 3) {
            this.log("the language server exited; restarting it");
            this.setState("starting");
            return { action: CloseAction.Restart };
          }
          this.setState("stopped", "the language server exited three times in three minutes; the log has its last words");
          return { action: CloseAction.DoNotRestart };
        },
      },
      initializationFailedHandler: (error) => {
        this.setState("stopped", `the language server failed to initialise: ${String(error)}`);
        return false;
      },
    };
    const client = new LanguageClient("codeassist", "codeassist", serverOptions, clientOptions);
    this.client = client;
    client.onDidChangeState((e) => {
      if (e.newState === State.Running) this.setState("running");
    });
    try {
      await client.start();
      this.log("language server running");
      this.startPolling();
      void this.poll();
    } catch (err) {
      this.setState("stopped", `the language server could not start: ${err instanceof Error ? err.message : String(err)}`);
      this.log(`start failed: ${String(err)}`);
    }
  }

  async stop(): Promise<void> {
    this.stopPolling();
    const client = this.client;
    this.client = undefined;
    this.status = undefined;
    if (client) {
      try {
        await client.stop(2000);
      } catch (err) {
        this.log(`stop: ${String(err)}`);
      }
    }
  }

  async restart(): Promise<void> {
    await this.stop();
    await this.start();
  }

  /** Asks the server for `codeassist/status` and redraws; a silent server shows as a warning. */
  async poll(): Promise<ServerStatus | undefined> {
    const client = this.client;
    if (!client || !client.isRunning() || this.polling) return this.status;
    this.polling = true;
    let timeout: NodeJS.Timeout | undefined;
    try {
      const status = await Promise.race([
        client.sendRequest<ServerStatus>(STATUS_METHOD, {}),
        new Promise<never>((_, reject) => {
          timeout = setTimeout(() => reject(new Error("timed out")), STATUS_TIMEOUT_MS);
        }),
      ]);
      this.status = status;
      if (this.state !== "stopped") this.setState("running");
    } catch (err) {
      if (client === this.client && client.isRunning()) {
        this.setState("unresponsive", `the server did not answer ${STATUS_METHOD} (${err instanceof Error ? err.message : String(err)})`);
      }
    } finally {
      clearTimeout(timeout);
      this.polling = false;
    }
    return this.status;
  }

  async sendSettings(): Promise<void> {
    if (!this.client?.isRunning()) return;
    const settings = await this.settings();
    await this.client.sendNotification(DidChangeConfigurationNotification.type, { settings: { codeassist: settings } });
    this.log("settings sent to the server");
    void this.poll();
  }

  private async onConfigurationChanged(e: vscode.ConfigurationChangeEvent): Promise<void> {
    if (!e.affectsConfiguration("codeassist")) return;
    if (e.affectsConfiguration("codeassist.server")) {
      this.log("server settings changed: restarting");
      await this.restart();
      return;
    }
    if (e.affectsConfiguration("codeassist.status.pollMs")) this.startPolling();
    await this.sendSettings();
    this.render();
  }

  private startPolling(): void {
    this.stopPolling();
    const every = Math.max(250, (configGetter()("status.pollMs") as number | undefined) ?? 3000);
    this.timer = setInterval(() => void this.poll(), every);
  }

  private stopPolling(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
  }

  private setState(state: ServerState, detail?: string): void {
    this.state = state;
    this.detail = detail;
    this.render();
  }

  statusInput(): StatusInput {
    const editor = vscode.window.activeTextEditor;
    const get = configGetter();
    return {
      server: this.state,
      detail: this.detail,
      status: this.status,
      blocked: editor ? languageBlock(editor.document.languageId, get) : null,
      lastLatencyMs: this.lastLatencyMs,
      slowMs: (get("status.slowMs") as number | undefined) ?? 600,
    };
  }

  summary(): string {
    return summarize(this.statusInput());
  }

  render(): void {
    const view = describeStatus(this.statusInput());
    this.item.text = view.text;
    this.item.tooltip = view.tooltip;
    this.item.backgroundColor =
      view.level === "error"
        ? new vscode.ThemeColor("statusBarItem.errorBackground")
        : view.level === "warning"
          ? new vscode.ThemeColor("statusBarItem.warningBackground")
          : undefined;
  }

  private async offerInstall(reason: string): Promise<void> {
    const choice = await vscode.window.showWarningMessage(
      `codeassist: ${reason}.`,
      "Install codeassist",
      "Set server path",
      "Show log",
    );
    if (choice === "Install codeassist") await vscode.commands.executeCommand("codeassist.installServer");
    else if (choice === "Set server path") {
      await vscode.commands.executeCommand("workbench.action.openSettings", "codeassist.server");
    } else if (choice === "Show log") this.output.show();
  }

  dispose(): void {
    this.stopPolling();
    for (const d of this.disposables) d.dispose();
    void this.client?.stop(2000);
  }
}
