"""Fixtures for the client library and CLI tests: an isolated HOME and in-process fake nodes."""

from __future__ import annotations

import pytest

from fake_node import FakeNode


@pytest.fixture(autouse=True)
def isolated_home(tmp_path, monkeypatch):
    """Each test gets its own HOME (so ~/.sandstore/cluster.json is private) and no
    SANDSTORE_* variables from the developer's shell."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("SANDSTORE_CONFIG", raising=False)
    monkeypatch.delenv("SANDSTORE_DATA_DIR", raising=False)
    return home


@pytest.fixture
def fake_nodes():
    """Factory: fake_nodes(node_id, handler) -> a running FakeNode, closed at teardown."""
    started: list[FakeNode] = []

    def start(node_id: str, handler) -> FakeNode:
        node = FakeNode(node_id, handler)
        started.append(node)
        return node

    yield start
    for node in started:
        node.close()
