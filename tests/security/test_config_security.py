"""cluster.security in the config: CurveZMQ unless a config says plaintext."""

from __future__ import annotations

import pytest

from node.config import parse_config
from node.errors import ConfigError

NODES = [{"id": "n1", "raft": "127.0.0.1:7001", "client": "127.0.0.1:8001", "chunk": "127.0.0.1:9001"}]


def test_the_default_mode_is_curve_and_plaintext_needs_the_setting():
    assert parse_config({"nodes": NODES}).security == "curve"
    assert parse_config({"cluster": {"security": "plaintext"}, "nodes": NODES}).security == "plaintext"
    with pytest.raises(ConfigError, match="cluster.security must be one of 'curve', 'plaintext', got 'off'"):
        parse_config({"cluster": {"security": "off"}, "nodes": NODES})
