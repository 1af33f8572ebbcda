"""The VS Code extension's build: lint, unit tests, and the packaged .vsix."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import zipfile
from pathlib import Path

from codeassist.lsp.settings import SETTING_KEYS

from .paths import EXTENSION, npm

# Server keys that are for benchmarks or sent from SecretStorage, not user settings.
NOT_CONTRIBUTED = {"timeBudgetMs", "cache", "prefixReuse", "remote.apiKey"}


def test_lint_and_unit_tests_pass(extension_modules: Path) -> None:
    lint = npm(["run", "lint"], EXTENSION, timeout=300)
    assert lint.returncode == 0, lint.stdout[-3000:] + lint.stderr[-3000:]
    unit = npm(["test"], EXTENSION, timeout=300)
    assert unit.returncode == 0, unit.stdout[-4000:] + unit.stderr[-2000:]
    passed = re.search(r"^# pass (\d+)$", unit.stdout, re.M)
    failed = re.search(r"^# fail (\d+)$", unit.stdout, re.M)
    assert passed and failed, unit.stdout[-2000:]
    assert int(failed.group(1)) == 0
    assert int(passed.group(1)) >= 20  # the node --test suites in vscode-extension/test all ran


def test_vsix_holds_the_bundle_and_the_contract_settings(vsix: Path) -> None:
    with zipfile.ZipFile(vsix) as z:
        names = set(z.namelist())
        manifest = json.loads(z.read("extension/package.json"))
        bundle = z.read("extension/dist/extension.js").decode()
    assert "extension/dist/extension.js" in names
    assert not any("node_modules" in n or n.endswith(".ts") for n in names), sorted(names)
    assert manifest["main"] == "./dist/extension.js"
    assert "vscode-languageclient" in manifest["dependencies"]
    # vscode-languageclient is bundled, and its inline completion feature with it
    assert "textDocument/inlineCompletion" in bundle
    contributed = set(manifest["contributes"]["configuration"]["properties"])
    server_keys = set(SETTING_KEYS)
    missing = {k for k in server_keys - NOT_CONTRIBUTED if f"codeassist.{k}" not in contributed}
    assert not missing, f"server settings without a VS Code setting: {sorted(missing)}"
    assert "codeassist.remote.apiKey" not in contributed  # the key lives in SecretStorage
    commands = {c["command"] for c in manifest["contributes"]["commands"]}
    for needed in ("enable", "disable", "enableLanguage", "disableLanguage", "restartServer", "showStatus",
                   "showLog", "chooseModel", "triggerCompletion", "setApiKey", "installServer"):
        assert f"codeassist.{needed}" in commands


def test_plain_vsce_package_bundles_first(extension_modules: Path, tmp_path: Path) -> None:
    """`vsce package` alone, as publishing to the Marketplace runs it, from a tree with no dist/: the
    `vscode:prepublish` script must build the bundle, or vsce stops with "entrypoint(s) missing"."""
    tree = tmp_path / "vscode-extension"
    shutil.copytree(EXTENSION, tree, ignore=shutil.ignore_patterns("node_modules", "dist", "out", "e2e", "*.vsix"))
    (tree / "node_modules").symlink_to(extension_modules, target_is_directory=True)
    assert not (tree / "dist").exists()
    out = tmp_path / "plain.vsix"
    env = {**os.environ, "npm_config_update_notifier": "false", "npm_config_fund": "false"}
    # --no-dependencies: the copy's node_modules is a link to the real one, which npm's dependency
    # listing (run by vsce otherwise) misreads after `npm ci`; the bundle carries the dependencies
    proc = subprocess.run([str(extension_modules / ".bin" / "vsce"), "package", "--no-dependencies", "--out", str(out)],
                          cwd=tree,
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    with zipfile.ZipFile(out) as z:
        bundle = z.read("extension/dist/extension.js").decode()
    assert "textDocument/inlineCompletion" in bundle  # the esbuild bundle, languageclient included
