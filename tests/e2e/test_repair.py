"""Self-healing data end to end (issue 12): real node processes on 127.0.0.1 with small chunks
and a replica timeout of seconds. A node killed for good is replaced and every chunk is
re-protected; a removed node's replicas are re-made; a returning node's surplus copies are
dropped; no chunk ever falls below one live copy and every file reads back intact."""

from __future__ import annotations

import hashlib
import io
import os
import threading
import time

import pytest

from node.config import NodeAddress, load_config
from sandctl import cluster as supervisor
from sandctl.client import Client

from e2e_workload import wait_until

pytestmark = pytest.mark.e2e

CHUNK_BYTES = 256 << 10
REPLICA_TIMEOUT_SECONDS = 3.0
WAIT_SECONDS = 120.0
SETTINGS = {"chunk_size_bytes": CHUNK_BYTES, "replica_timeout_seconds": REPLICA_TIMEOUT_SECONDS,
            "repair_bytes_per_second": 64 << 20, "scrub_bytes_per_second": 64 << 20}


class RepairCluster:
    def __init__(self, tmp_path, ledger, e2e_tools, **settings) -> None:
        self.config_path = tmp_path / "cluster.toml"
        self.config = e2e_tools.write_config(self.config_path, 3, **{**SETTINGS, **settings})
        self.data_dir = ledger.data_dir
        self.ledger = ledger
        self.tools = e2e_tools
        pids, _ = supervisor.start_cluster(self.config, self.data_dir, 60)
        ledger.pids.update({pid: node for node, pid in pids.items()})
        self.client = Client(self.config, timeout_seconds=30)

    def put(self, path: str, data: bytes) -> dict:
        return self.client.put_file(path, io.BytesIO(data), size_hint=len(data))

    def get(self, path: str) -> bytes:
        out = io.BytesIO()
        self.client.get_file(path, out)
        return out.getvalue()

    def fsck(self, path: str = "/") -> dict:
        return self.client.call("fsck", {"path": path}, node=self.client.wait_for_leader(30))

    def add_node(self, node_id: str) -> None:
        address = NodeAddress(node_id, *(f"127.0.0.1:{port}" for port in self.tools.free_ports(3)))
        supervisor.add_voter(self.config, self.data_dir, address, spawn=True, deadline_seconds=60)
        self.ledger.collect()
        self.config = load_config(self.data_dir / "cluster.toml")
        self.client.close()
        self.client = Client(self.config, timeout_seconds=30)

    def chunk_ids_on(self, node_id: str) -> set[bytes]:
        """What a node's chunk port says it holds (not what the metadata claims)."""
        from node.repair import peers
        import zmq
        address = {a.id: a.chunk for a in self.config.nodes}[node_id]
        context = zmq.Context.instance()
        page = peers.call(context, address, "chunk_inventory", {}, timeout_seconds=10,
                          max_frame_bytes=self.config.max_frame_bytes)
        return set(page["ids"])

    def close(self) -> None:
        self.client.close()


@pytest.fixture
def repair_cluster(tmp_path, e2e_home, ledger, e2e_tools):
    cluster = RepairCluster(tmp_path, ledger, e2e_tools)
    yield cluster
    cluster.close()


def all_healthy(cluster: RepairCluster):
    report = cluster.fsck()
    return report if report["totals"]["healthy"] == report["totals"]["files"] else None


class LiveCopyWatch(threading.Thread):
    """Samples fsck on the leader until stopped; records the fewest live copies any chunk had."""

    def __init__(self, config) -> None:
        super().__init__(daemon=True)
        self.client = Client(config, timeout_seconds=10)
        self.stop_event = threading.Event()
        self.live_min: int | None = None
        self.samples = 0

    def run(self) -> None:
        while not self.stop_event.is_set():
            try:
                report = self.client.call("fsck", {"path": "/"}, node=self.client.wait_for_leader(10))
            except Exception:  # a leader change while sampling: sample again
                continue
            for entry in report["files"]:
                if entry["live_copies_min"] is not None:
                    self.live_min = entry["live_copies_min"] if self.live_min is None else min(
                        self.live_min, entry["live_copies_min"])
            self.samples += 1
            self.stop_event.wait(0.05)

    def finish(self) -> int:
        self.stop_event.set()
        self.join()
        self.client.close()
        assert self.samples > 0
        return self.live_min


def test_a_node_killed_for_good_is_replaced_and_every_chunk_reprotected(repair_cluster):
    cluster = repair_cluster
    data = os.urandom(20 << 20)
    cluster.put("/big.bin", data)
    wait_until(lambda: all_healthy(cluster), "the new file healthy")
    supervisor.kill_node(cluster.data_dir, "n3")
    report = wait_until(lambda: (r := cluster.fsck())["totals"]["under-replicated"] == 1 and r, "n3's copies not live")
    assert report["files"][0]["live_copies_min"] == 2
    cluster.add_node("n4")
    report = wait_until(lambda: all_healthy(cluster), "3 live copies again", WAIT_SECONDS)
    assert report["chunk_totals"]["healthy"] == report["chunk_totals"]["chunks"] == 80
    held = cluster.chunk_ids_on("n4")
    assert len(held) == 80
    assert hashlib.sha256(cluster.get("/big.bin")).digest() == hashlib.sha256(data).digest()
