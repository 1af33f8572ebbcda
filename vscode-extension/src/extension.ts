// Entry point: the status-bar item, the controller that owns the language client, and commands.

import * as vscode from "vscode";

import { API_KEY_SECRET, configGetter, Controller } from "./controller";
import { installCommand } from "./server";
import { withLanguage } from "./settings";

let controller: Controller | undefined;

export async function activate(context: vscode.ExtensionContext): Promise<void> {
  const output = vscode.window.createOutputChannel("codeassist", { log: true });
  const item = vscode.window.createStatusBarItem("codeassist.status", vscode.StatusBarAlignment.Right, 100);
  const ctl = new Controller(context, output, item);
  controller = ctl;
  context.subscriptions.push(output, item, ctl);
  registerCommands(context, ctl, output);
  await ctl.start();
  // The end-to-end test waits for this line in the browser console before it types.
  console.log("codeassist: activated");
}

export async function deactivate(): Promise<void> {
  await controller?.stop();
  controller = undefined;
}

async function setEnabled(enable: boolean): Promise<void> {
  await vscode.workspace.getConfiguration("codeassist").update("enable", enable, vscode.ConfigurationTarget.Global);
}

async function setLanguage(enable: boolean): Promise<void> {
  const languageId = vscode.window.activeTextEditor?.document.languageId;
  if (!languageId) {
    void vscode.window.showInformationMessage("codeassist: open a file of the language first.");
    return;
  }
  const cfg = vscode.workspace.getConfiguration("codeassist");
  const disabled = cfg.get<string[]>("disabledLanguages") ?? [];
  await cfg.update("disabledLanguages", withLanguage(disabled, languageId, enable), vscode.ConfigurationTarget.Global);
}

async function chooseModel(): Promise<void> {
  const current = configGetter()("model");
  const picks: vscode.QuickPickItem[] = [
    { label: "default", description: "the embedded model (fast, small)" },
    { label: "gpt2", description: "GPT-2 124M (downloaded once from Hugging Face)" },
    { label: "hf:Qwen/Qwen2.5-Coder-0.5B", description: "Qwen2.5-Coder 0.5B (downloaded once; fits a laptop CPU)" },
    { label: "hf:Qwen/Qwen2.5-Coder-1.5B", description: "Qwen2.5-Coder 1.5B (downloaded once; best with a GPU)" },
    { label: "Enter a model name or path…" },
    { label: "Choose a model file…" },
  ];
  const pick = await vscode.window.showQuickPick(picks, { placeHolder: `current model: ${String(current)}` });
  if (!pick) return;
  let model: string | undefined = pick.label;
  if (pick.label.startsWith("Enter")) {
    model = await vscode.window.showInputBox({
      prompt: "A model name (from codeassist train --out), hf:ORG/NAME[@REVISION] from Hugging Face, or a path",
    });
  } else if (pick.label.startsWith("Choose")) {
    const files = await vscode.window.showOpenDialog({ filters: { "model files": ["safetensors"] } });
    model = files?.[0]?.fsPath;
  }
  if (!model) return;
  const cfg = vscode.workspace.getConfiguration("codeassist");
  await cfg.update("model", model, vscode.ConfigurationTarget.Global);
}

function registerCommands(context: vscode.ExtensionContext, ctl: Controller, output: vscode.LogOutputChannel): void {
  const commands: Record<string, () => unknown> = {
    "codeassist.enable": () => setEnabled(true),
    "codeassist.disable": () => setEnabled(false),
    "codeassist.enableLanguage": () => setLanguage(true),
    "codeassist.disableLanguage": () => setLanguage(false),
    "codeassist.restartServer": () => ctl.restart(),
    "codeassist.showLog": () => output.show(),
    "codeassist.chooseModel": () => chooseModel(),
    "codeassist.triggerCompletion": () => vscode.commands.executeCommand("editor.action.inlineSuggest.trigger"),
    "codeassist.showStatus": async () => {
      await ctl.poll();
      ctl.render();
      const summary = ctl.summary();
      ctl.log(`status: ${summary}`);
      const choice = await vscode.window.showInformationMessage(`codeassist — ${summary}`, "Show log", "Restart server");
      if (choice === "Show log") output.show();
      else if (choice === "Restart server") await ctl.restart();
    },
    "codeassist.setApiKey": async () => {
      const key = await vscode.window.showInputBox({ prompt: "The remote server's API key", password: true, ignoreFocusOut: true });
      if (key) await context.secrets.store(API_KEY_SECRET, key);
    },
    "codeassist.clearApiKey": () => context.secrets.delete(API_KEY_SECRET),
    "codeassist.installServer": () => {
      const terminal = vscode.window.createTerminal("codeassist install");
      terminal.show();
      terminal.sendText(installCommand(ctl.pythonForInstall, String(configGetter()("server.installSource") ?? "")));
      void vscode.window.showInformationMessage(
        "codeassist: when the install finishes, run 'codeassist: Restart the language server'.",
      );
    },
  };
  for (const [name, fn] of Object.entries(commands)) {
    context.subscriptions.push(vscode.commands.registerCommand(name, fn));
  }
}
