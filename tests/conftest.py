"""Fixtures every test directory shares: waiting on a condition, a private HOME, a ZeroMQ context."""

from __future__ import annotations

import pytest
import zmq

from tests import waiting


@pytest.fixture
def wait_until():
    """wait_until(condition, what, deadline_seconds=30): tests/waiting.py's, as a fixture."""
    return waiting.wait_until


@pytest.fixture
def isolated_home(tmp_path, monkeypatch):
    """A HOME of the test's own (so ~/.sandstore/cluster.json is private) and no SANDSTORE_*
    variables from the developer's shell."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("SANDSTORE_CONFIG", raising=False)
    monkeypatch.delenv("SANDSTORE_DATA_DIR", raising=False)
    return home


@pytest.fixture
def context():
    """A ZeroMQ context, terminated at teardown (which hangs if a test leaks a socket)."""
    context = zmq.Context()
    yield context
    context.term()
