"""The tiny Hugging Face folders of every open family, built once per test session, and the team
servers (`codeassist serve`) of the team-server test, started when this folder's tests begin."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.families_fixture import FAMILIES, TinyFolder, build_folder
from tests.integration.team_server import TeamServer, start_team_server

# the test that talks to a `codeassist serve` process per family (test_family_features.py)
SERVE_TEST = "test_team_server_batches_concurrent_requests_and_fills_in_the_middle"


@pytest.fixture(scope="session")
def tiny_folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, TinyFolder]:
    root = tmp_path_factory.mktemp("families")
    return {family: build_folder(root / family, family, seed=i) for i, family in enumerate(FAMILIES)}


@pytest.fixture(params=FAMILIES)
def tiny(request: pytest.FixtureRequest, tiny_folders: dict[str, TinyFolder]) -> TinyFolder:
    """One family's folder: a test that takes it runs once per family."""
    return tiny_folders[request.param]


@pytest.fixture(scope="module", autouse=True)
def team_servers(request: pytest.FixtureRequest) -> Iterator[dict[str, TeamServer]]:
    """A `codeassist serve` process for each family the team-server test will run, started before
    the module's first test: a process takes about 5 s of CPU to import and load, which a second
    core spends while the in-process tests run. Nothing starts when that test is not selected."""
    wanted = [item.callspec.params["tiny"] for item in request.session.items
              if getattr(item, "originalname", "") == SERVE_TEST and hasattr(item, "callspec")
              and getattr(item, "module", None) is request.module]
    folders: dict[str, TinyFolder] = request.getfixturevalue("tiny_folders") if wanted else {}
    servers: dict[str, TeamServer] = {}
    try:
        for family in wanted:
            servers[family] = start_team_server(folders[family])
        yield servers
    finally:
        for server in servers.values():
            server.stop()
