"""Fixtures for the client library and CLI tests: an isolated HOME and in-process fake nodes."""

from __future__ import annotations

import pytest

from fake_node import FakeNode


@pytest.fixture(autouse=True)
def _private_home(isolated_home):
    """Every test here gets tests/conftest.py's isolated_home."""
    return isolated_home


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
