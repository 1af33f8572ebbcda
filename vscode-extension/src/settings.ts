// The settings the language server reads (ARCHITECTURE.md, "LSP"), built from `codeassist.*`.
// Pure: no `vscode` import, so the unit tests run in plain Node.

/** Reads one `codeassist.*` key (without the prefix); undefined when unset. */
export type ConfigGetter = (key: string) => unknown;

export interface ServerSettings {
  backend: string;
  model: string;
  device: string;
  remote: {
    url: string;
    api: string;
    apiKey?: string;
    model?: string;
    template: string;
    timeoutMs: number;
    fallbackLocal: boolean;
  };
  maxTokens: number;
  temperature: number;
  debounceMs: number;
  multiline: string;
  languages: string[];
  exclude: string[];
  copy: boolean;
  context: { maxPromptTokens: number; openFiles: number; repository: boolean };
}

function str(get: ConfigGetter, key: string, fallback: string): string {
  const v = get(key);
  return typeof v === "string" ? v : fallback;
}

function num(get: ConfigGetter, key: string, fallback: number): number {
  const v = get(key);
  return typeof v === "number" && Number.isFinite(v) ? v : fallback;
}

function strings(get: ConfigGetter, key: string): string[] {
  const v = get(key);
  return Array.isArray(v) ? v.filter((x): x is string => typeof x === "string") : [];
}

/**
 * The object sent as initializationOptions and as `workspace/didChangeConfiguration`
 * `{settings: {codeassist: ...}}`. The API key comes from SecretStorage, never from settings.
 */
export function buildServerSettings(get: ConfigGetter, apiKey: string | undefined): ServerSettings {
  const remoteModel = str(get, "remote.model", "");
  const settings: ServerSettings = {
    backend: str(get, "backend", "local"),
    model: str(get, "model", "default") || "default",
    device: str(get, "device", "auto"),
    remote: {
      url: str(get, "remote.url", ""),
      api: str(get, "remote.api", "codeassist"),
      template: str(get, "remote.template", "auto"),
      timeoutMs: num(get, "remote.timeoutMs", 2000),
      fallbackLocal: get("remote.fallbackLocal") === true,
    },
    maxTokens: num(get, "maxTokens", 48),
    temperature: num(get, "temperature", 0),
    debounceMs: num(get, "debounceMs", 0),
    multiline: str(get, "multiline", "auto"),
    languages: strings(get, "languages"),
    exclude: strings(get, "exclude"),
    copy: get("copy") !== false,
    context: {
      maxPromptTokens: num(get, "context.maxPromptTokens", 896),
      openFiles: num(get, "context.openFiles", 4),
      repository: get("context.repository") !== false,
    },
  };
  if (remoteModel) settings.remote.model = remoteModel;
  if (apiKey) settings.remote.apiKey = apiKey;
  return settings;
}

/** Why a document of this language gets no suggestion from the client's side, or null. */
export function languageBlock(languageId: string, get: ConfigGetter): string | null {
  if (get("enable") === false) return "completions are disabled (codeassist.enable is off)";
  if (strings(get, "disabledLanguages").includes(languageId)) {
    return `completions are disabled for ${languageId}`;
  }
  const only = strings(get, "languages");
  if (only.length > 0 && !only.includes(languageId)) {
    return `${languageId} is not in codeassist.languages`;
  }
  return null;
}

/** The list after turning one language on or off (order kept, no duplicates). */
export function withLanguage(disabled: readonly string[], languageId: string, enable: boolean): string[] {
  const rest = disabled.filter((l) => l !== languageId);
  return enable ? rest : [...rest, languageId];
}
