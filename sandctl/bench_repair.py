"""The repair workload: a node is lost for good and replaced; how fast is every chunk back at
full replication?

Store the test file, SIGKILL a follower and remove it, then add a new node (the documented
replacement) and time from the new node's addition until fsck reports every file healthy.
Repair MB/s is the bytes the leader had to re-copy (every chunk the dead node held) over that
time, shown beside the machine's replication ceiling and the configured repair_bytes_per_second
(the throttle caps it by design). Needs --local: the benchmark only kills nodes it started, and
the new node runs from a config in the throwaway cluster's directory (nothing is remembered).
"""

from __future__ import annotations

import time
from pathlib import Path

from node.config import NodeAddress, load_config, render_config
from node.errors import Refused, SandStoreError

from sandctl import cluster as supervisor
from sandctl.bench_cluster import LocalCluster
from sandctl.bench_machine import MB
from sandctl.bench_workloads import BenchContext
from sandctl.client import Client

REPAIR_DEADLINE_SECONDS = 600.0
JOIN_DEADLINE_SECONDS = 60.0
POLL_SECONDS = 0.05  # pacing of status polls inside a deadline
NEW_NODE_ID = "r1"


def repair_workload(context: BenchContext, cluster: LocalCluster | None, test_file: Path) -> list[dict]:
    if cluster is None:
        return [{"workload": "repair", "mode": "", "outstanding": "",
                 "unavailable": "needs --local (the benchmark only kills nodes it started)"}]
    client = context.client
    path = f"{context.directory('repair')}/file"
    with open(test_file, "rb") as reader:
        client.put_file(path, reader, size_hint=test_file.stat().st_size)
    _wait_healthy(client, path)
    leader = client.wait_for_leader(context.request_timeout_seconds)
    victim = next(node for node in sorted(cluster.pids) if node != leader)
    lost_bytes = sum(size for _, size, replicas in client.stat(path)["chunks"] if victim in replicas)
    cluster.kill(victim)
    _retry_refused(lambda: client.remove_node(victim))
    grown = _spawn_new_node(cluster)
    try:
        with Client(grown, timeout_seconds=context.request_timeout_seconds) as grown_client:
            started = time.monotonic()
            _join(grown_client, grown.node(NEW_NODE_ID))
            _wait_healthy(grown_client, path)
            elapsed_seconds = time.monotonic() - started
            repair = grown_client.status(grown_client.wait_for_leader(context.request_timeout_seconds)).get("repair", {})
    finally:
        supervisor.stop_nodes(cluster.data_dir, [NEW_NODE_ID])
    return [{
        "workload": "repair", "mode": f"replace {victim} by {NEW_NODE_ID}",
        "outstanding": grown.repair_copies_in_flight_max,
        "repair_bytes": lost_bytes, "repair_seconds": round(elapsed_seconds, 2),
        "repair_mb_per_second": round(lost_bytes / MB / max(elapsed_seconds, 1e-9), 1),
        "repair_limit_mb_per_second": round(grown.repair_bytes_per_second / MB, 1),
        "repair_copies": (repair.get("counters") or {}).get("copies"),
    }]


def _wait_healthy(client: Client, path: str) -> None:
    deadline = time.monotonic() + REPAIR_DEADLINE_SECONDS
    while True:
        try:
            report = client.call("fsck", {"path": path})
            if report["totals"]["healthy"] == report["totals"]["files"]:
                return
        except SandStoreError:
            pass  # a leader change: ask again
        if time.monotonic() >= deadline:
            raise SandStoreError(f"{path} was not healthy again within {REPAIR_DEADLINE_SECONDS:g} s")
        time.sleep(POLL_SECONDS)


def _spawn_new_node(cluster: LocalCluster):
    ports = supervisor.free_ports(3)
    address = NodeAddress(NEW_NODE_ID, *(f"127.0.0.1:{port}" for port in ports))
    config_path = cluster.directory / "bench-repair.toml"
    config_path.write_text(render_config(cluster.config.with_node(address)))
    grown = load_config(config_path)
    supervisor.spawn_node(grown, cluster.data_dir, NEW_NODE_ID, join=True)
    return grown


def _join(client: Client, address: NodeAddress) -> None:
    """Add the new node as a learner and promote it once it has caught up."""
    _retry_refused(lambda: client.add_learner(address.id, address.raft, address.client, address.chunk))
    _retry_refused(lambda: client.promote(address.id))


def _retry_refused(change) -> None:
    """A membership change is refused while the previous one is not applied, or while the
    learner catches up: ask again until the deadline."""
    deadline = time.monotonic() + JOIN_DEADLINE_SECONDS
    while True:
        try:
            change()
            return
        except Refused:
            if time.monotonic() >= deadline:
                raise
            time.sleep(POLL_SECONDS)
