"""The self-healing settings in the cluster config: defaults, units, validation."""

from __future__ import annotations

import pytest

from node.config import parse_config
from node.errors import ConfigError

NODES = [{"id": f"n{i}", "raft": f"127.0.0.1:{7000 + i}", "client": f"127.0.0.1:{8000 + i}",
          "chunk": f"127.0.0.1:{9000 + i}"} for i in (1, 2, 3)]


def config(**cluster):
    return parse_config({"cluster": cluster, "nodes": NODES})


def test_defaults_are_hdfs_like_and_a_put_needs_a_majority():
    defaults = config()
    assert defaults.replica_timeout_seconds == 600.0
    assert defaults.write_replicas_min() == 2  # of replication 3
    assert config(replication=1).write_replicas_min() == 1
    assert config(replication=5).write_replicas_min() == 3
    assert config(min_write_replicas=3).write_replicas_min() == 3
    assert defaults.repair_bytes_per_second > 0 and defaults.scrub_bytes_per_second > 0


@pytest.mark.parametrize("settings, message", [
    ({"min_write_replicas": 4}, "must not exceed cluster.replication"),
    ({"min_write_replicas": -1}, "at least 0"),
    ({"replica_timeout_seconds": 0}, "at least 0.1"),
    ({"repair_bytes_per_second": 10}, "at least 1024"),
    ({"repair_copies_in_flight_max": 0}, "at least 1"),
    ({"scrub_bytes_per_second": "fast"}, "must be an integer"),
    ({"rebalance_spread_fraction": 0}, "at least 0.01"),
])
def test_invalid_settings_are_refused_with_the_key_named(settings, message):
    with pytest.raises(ConfigError, match=message):
        config(**settings)
