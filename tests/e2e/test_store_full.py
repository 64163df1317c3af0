"""A node whose LMDB map fills up refuses writes with STORE_FULL and keeps serving reads."""

from __future__ import annotations

import dataclasses

import pytest

from node.config import load_config, render_config
from node.errors import SandStoreError
from sandctl import cluster as supervisor
from sandctl.client import Client

pytestmark = pytest.mark.e2e


@pytest.mark.parametrize("replicator, nodes", [("none", 1), ("raft", 3)])
def test_full_store_refuses_writes_and_keeps_serving(tmp_path, ledger, e2e_tools, e2e_home, replicator, nodes):
    path = tmp_path / "cluster.toml"
    config = e2e_tools.write_config(path, nodes, replicator)
    config = dataclasses.replace(config, lmdb_map_size_bytes=2 << 20, snapshot_threshold_entries=100_000)
    path.write_text(render_config(config))
    config = load_config(path)
    pids, _ = supervisor.start_cluster(config, ledger.data_dir, 30)
    ledger.pids.update({pid: node_id for node_id, pid in pids.items()})
    stored = []
    with Client(config, timeout_seconds=20) as client:
        with pytest.raises(SandStoreError) as raised:
            for number in range(200):  # 200 x 60 KiB is far beyond a 2 MiB map
                client.write_file(f"/f{number}", bytes([number % 256]) * 60_000)
                stored.append(number)
        assert raised.value.code == "STORE_FULL", raised.value
        assert "full" in str(raised.value)
        assert stored, "nothing could be written at all"
        # Everything acknowledged before the refusal is intact and readable on every node.
        for number in stored:
            _, data = client.read(f"/f{number}")
            assert data == bytes([number % 256]) * 60_000
        for node_id in config.node_ids():
            assert client.call("ping", {}, node=node_id)["id"] == node_id
