import assert from "node:assert/strict";
import { test } from "node:test";

import { buildServerSettings, languageBlock, withLanguage, type ConfigGetter } from "../src/settings";

function getter(values: Record<string, unknown>): ConfigGetter {
  return (key) => values[key];
}

test("defaults match the server's defaults and carry no API key", () => {
  const s = buildServerSettings(getter({}), undefined);
  assert.equal(s.backend, "local");
  assert.equal(s.model, "default");
  assert.equal(s.maxTokens, 48);
  assert.deepEqual(s.context, { maxPromptTokens: 896, openFiles: 4, repository: true });
  assert.equal(s.copy, true);
  assert.equal("apiKey" in s.remote, false);
  assert.equal("model" in s.remote, false);
  assert.equal(s.remote.template, "auto");
});

test("user values are forwarded under the server's key names, nested as the server reads them", () => {
  const s = buildServerSettings(
    getter({
      backend: "remote",
      "remote.url": "http://team:8000",
      "remote.api": "openai",
      "remote.model": "starcoder",
      "remote.template": "starcoder",
      "remote.timeoutMs": 900,
      maxTokens: 64,
      multiline: "never",
      languages: ["python", 3, "rust"],
      exclude: ["**/secrets/**"],
      "context.openFiles": 0,
      "context.repository": false,
      copy: false,
    }),
    "sk-secret",
  );
  assert.deepEqual(s.remote, {
    url: "http://team:8000",
    api: "openai",
    template: "starcoder",
    timeoutMs: 900,
    fallbackLocal: false,
    model: "starcoder",
    apiKey: "sk-secret",
  });
  assert.equal(s.maxTokens, 64);
  assert.equal(s.multiline, "never");
  assert.deepEqual(s.languages, ["python", "rust"]); // a wrong element is dropped, not forwarded
  assert.deepEqual(s.exclude, ["**/secrets/**"]);
  assert.equal(s.context.openFiles, 0);
  assert.equal(s.context.repository, false);
  assert.equal(s.copy, false);
});

test("wrongly typed values fall back to the defaults", () => {
  const s = buildServerSettings(getter({ maxTokens: "lots", temperature: Number.NaN, model: "" }), undefined);
  assert.equal(s.maxTokens, 48);
  assert.equal(s.temperature, 0);
  assert.equal(s.model, "default");
});

test("a disabled or unlisted language is blocked with a reason", () => {
  assert.equal(languageBlock("python", getter({})), null);
  assert.match(languageBlock("python", getter({ enable: false })) ?? "", /disabled/);
  assert.equal(languageBlock("python", getter({ disabledLanguages: ["python"] })), "completions are disabled for python");
  assert.equal(languageBlock("rust", getter({ disabledLanguages: ["python"] })), null);
  assert.equal(languageBlock("go", getter({ languages: ["python"] })), "go is not in codeassist.languages");
  assert.equal(languageBlock("python", getter({ languages: ["python"] })), null);
});

test("turning a language off and on edits the list without duplicates", () => {
  assert.deepEqual(withLanguage(["go"], "python", false), ["go", "python"]);
  assert.deepEqual(withLanguage(["go", "python"], "python", false), ["go", "python"]);
  assert.deepEqual(withLanguage(["go", "python"], "python", true), ["go"]);
});
