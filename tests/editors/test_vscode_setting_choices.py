"""The VS Code setting enums offer exactly the values the language server accepts."""

import json

import pytest

from codeassist.lsp.settings import SETTING_CHOICES

from .paths import EXTENSION


@pytest.mark.parametrize("key", ["backend", "multiline", "remote.api", "remote.template"])
def test_enums_match_the_server(key: str) -> None:
    properties = json.loads((EXTENSION / "package.json").read_text())["contributes"]["configuration"]["properties"]
    entry = properties[f"codeassist.{key}"]
    assert tuple(entry["enum"]) == SETTING_CHOICES[key]
    assert entry["default"] in entry["enum"]
    if "enumDescriptions" in entry:
        assert len(entry["enumDescriptions"]) == len(entry["enum"])
