"""Snapshots and log compaction in a running cluster (issue 5).

Thresholds are set low so that a few thousand operations take many snapshots per node.
"""

from __future__ import annotations

import dataclasses
import random
import threading
import time

import pytest

from node.config import NodeAddress, load_config, render_config
from node.errors import Refused, SandStoreError, TimedOut
from sandctl import cluster as supervisor
from sandctl.client import Client
from tests.waiting import wait_until

pytestmark = pytest.mark.e2e

WAIT_SECONDS = 60.0
START_SECONDS = 30.0


def start_compacting_cluster(tmp_path, ledger, e2e_tools, *, threshold: int, trailing: int):
    path = tmp_path / "cluster.toml"
    config = e2e_tools.write_config(path, 3)
    config = dataclasses.replace(config, snapshot_threshold_entries=threshold, snapshot_trailing_entries=trailing,
                                 snapshot_log_to_state_ratio=0.0)  # these tests count entries
    path.write_text(render_config(config))
    config = load_config(path)
    pids, _ = supervisor.start_cluster(config, ledger.data_dir, START_SECONDS)
    ledger.pids.update({pid: node_id for node_id, pid in pids.items()})
    return config


def run_operations(config, total: int, threads: int = 8, prefix: str = "/ops") -> list[str]:
    """`total` namespace operations from `threads` clients: file writes, with every fifth one
    removing the file written just before. Returns the paths that must exist at the end."""
    per_thread = total // threads
    survivors: list[list[str]] = [[] for _ in range(threads)]
    errors: list[BaseException] = []

    def work(number: int) -> None:
        try:
            with Client(config, timeout_seconds=30) as client:
                client.mkdir(f"{prefix}/t{number}", parents=True)
                for i in range(per_thread - 1):
                    path = f"{prefix}/t{number}/f{i}"
                    if i % 5 == 4:
                        client.rm(survivors[number].pop())
                    else:
                        client.write_file(path, path.encode())
                        survivors[number].append(path)
        except BaseException as error:
            errors.append(error)

    workers = [threading.Thread(target=work, args=(n,)) for n in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(600)
    assert not errors, errors[0]
    return [path for paths in survivors for path in paths]


def wait_until_converged(config, node_ids, deadline_seconds: float = WAIT_SECONDS) -> dict:
    """Wait until every listed node has applied the same index; return their digests."""
    deadline = time.monotonic() + deadline_seconds
    with Client(config, timeout_seconds=5) as client:
        while True:
            digests = {}
            for node_id in node_ids:
                try:
                    digests[node_id] = client.call("digest", {}, node=node_id, deadline_seconds=2)
                except SandStoreError:
                    digests[node_id] = None
            applied = {d["applied"] for d in digests.values() if d}
            if None not in digests.values() and len(applied) == 1:
                return digests
            assert time.monotonic() < deadline, f"nodes did not converge: {digests}"
            time.sleep(0.05)


def node_status(config, node_id: str) -> dict:
    with Client(config, node=node_id, timeout_seconds=10) as client:
        return client.status(node_id)


def wait_for_leader(config) -> str:
    with Client(config, timeout_seconds=WAIT_SECONDS) as client:
        return client.wait_for_leader(WAIT_SECONDS)


def test_compaction_bounds_the_log_and_a_stopped_follower_catches_up_by_snapshot(tmp_path, ledger, e2e_tools, e2e_home):
    threshold, trailing = 500, 100
    config = start_compacting_cluster(tmp_path, ledger, e2e_tools, threshold=threshold, trailing=trailing)
    leader = wait_for_leader(config)
    follower = next(node_id for node_id in config.node_ids() if node_id != leader)
    supervisor.kill_node(ledger.data_dir, follower)

    survivors = run_operations(config, 20_000)

    # Every live node compacted: the log holds at most a threshold's worth plus the trailing
    # entries (a snapshot is built in the background, so allow one more threshold of slack).
    bound = 2 * threshold + trailing
    for node_id in config.node_ids():
        if node_id == follower:
            continue
        status = node_status(config, node_id)
        assert status["snapshot_index"] > 15_000, status["snapshot_index"]
        assert status["log_entries"] <= bound, (node_id, status["log_entries"])

    # The follower was down for all of it: the log it needs is gone, so it gets a snapshot.
    supervisor.spawn_node(config, ledger.data_dir, follower)
    ledger.collect()
    digests = wait_until_converged(config, config.node_ids())
    assert len({d["digest"] for d in digests.values()}) == 1, digests
    status = node_status(config, follower)
    assert status["snapshots_installed"] >= 1
    with Client(config, node=follower, timeout_seconds=30) as pinned:
        for path in random.Random(5).sample(survivors, 200):
            _, data = pinned.read(path)  # linearizable, served by the caught-up follower
            assert data == path.encode()

    # A restart after compaction loads the snapshot's state and only the log's tail.
    restarted = next(node_id for node_id in config.node_ids() if node_id != follower)
    supervisor.kill_node(ledger.data_dir, restarted)
    supervisor.spawn_node(config, ledger.data_dir, restarted)
    ledger.collect()
    wait_until_converged(config, config.node_ids())
    status = node_status(config, restarted)
    assert status["log_entries_at_start"] <= bound, status["log_entries_at_start"]
    assert status["applied_at_start"] >= status["snapshot_index"] > 15_000


def _snapshot_taken(client: Client, node_id: str) -> bool:
    """Whether node_id took a snapshot now, or holds one of everything it applied: it refuses
    while it builds one of its own ("try again in a moment"), and refuses for good ("nothing to
    snapshot") when its own automatic snapshot already covers its applied index."""
    try:
        client.snapshot(node_id)
    except Refused:
        status = client.status(node_id)
        return status["snapshot_index"] >= status["applied"]
    return True


def test_voter_added_after_compaction_joins_through_a_snapshot(tmp_path, ledger, e2e_tools, e2e_home):
    config = start_compacting_cluster(tmp_path, ledger, e2e_tools, threshold=100, trailing=10)
    survivors = run_operations(config, 600, threads=4)
    with Client(config, timeout_seconds=30) as client:
        for node_id in config.node_ids():
            # With a threshold of 100 entries a node may be building its own snapshot at that
            # moment and refuse ours ("try again in a moment"): try again until it takes it.
            wait_until(lambda: _snapshot_taken(client, node_id), f"{node_id} takes a snapshot")
        assert all(client.status(n)["first_index"] > 100 for n in config.node_ids())
    ports = e2e_tools.free_ports(3)
    address = NodeAddress("n4", f"127.0.0.1:{ports[0]}", f"127.0.0.1:{ports[1]}", f"127.0.0.1:{ports[2]}")
    supervisor.add_voter(config, ledger.data_dir, address, spawn=True, deadline_seconds=WAIT_SECONDS)
    ledger.collect()
    grown = load_config(ledger.data_dir / "cluster.toml")
    status = node_status(grown, "n4")
    assert status["snapshots_installed"] >= 1
    assert "n4" in status["voters"]
    with Client(grown, node="n4", timeout_seconds=30) as pinned:
        for path in survivors[:50]:
            _, data = pinned.read(path)  # a linearizable read served by the new voter
            assert data == path.encode()
    digests = wait_until_converged(grown, grown.node_ids())
    assert len({d["digest"] for d in digests.values()}) == 1


def test_sigkill_during_snapshot_creation_and_installation_loses_nothing(tmp_path, ledger, e2e_tools, e2e_home):
    # Snapshots every 50 entries: kills land while snapshots are built and while a restarted
    # follower installs one. Each restart must recover a usable state and converge.
    config = start_compacting_cluster(tmp_path, ledger, e2e_tools, threshold=50, trailing=5)
    rng = random.Random(7)
    print("seed 7")
    acknowledged: list[str] = []
    stop = threading.Event()
    failures: list[BaseException] = []

    def write_forever() -> None:
        try:
            with Client(config, timeout_seconds=30) as client:
                client.mkdir("/k", parents=True)
                number = 0
                while not stop.is_set():
                    number += 1
                    try:
                        client.write_file(f"/k/{number}", str(number).encode())
                    except TimedOut:
                        continue
                    acknowledged.append(f"/k/{number}")
        except BaseException as error:
            failures.append(error)

    writer = threading.Thread(target=write_forever)
    writer.start()
    try:
        for round_number in range(4):
            leader = wait_for_leader(config)
            victim = rng.choice([n for n in config.node_ids() if n != leader] if round_number % 2 else [leader])
            target = len(acknowledged) + 150
            deadline = time.monotonic() + WAIT_SECONDS
            while len(acknowledged) < target:
                assert not failures, failures[0]
                assert time.monotonic() < deadline, "writes stalled"
                time.sleep(0.01)
            supervisor.kill_node(ledger.data_dir, victim)
            # Let the others compact past the victim, then restart it and kill it again while
            # it is most likely receiving or installing the snapshot.
            target = len(acknowledged) + 200
            while len(acknowledged) < target:
                assert not failures, failures[0]
                assert time.monotonic() < deadline, "writes stalled"
                time.sleep(0.01)
            supervisor.spawn_node(config, ledger.data_dir, victim)
            ledger.collect()
            with Client(config, node=victim, timeout_seconds=30) as pinned:
                pinned.call("ping", {}, node=victim)  # it is up and serving
            supervisor.kill_node(ledger.data_dir, victim)
            supervisor.spawn_node(config, ledger.data_dir, victim)
            ledger.collect()
    finally:
        stop.set()
        writer.join(120)
    assert not failures, failures[0]
    digests = wait_until_converged(config, config.node_ids())
    assert len({d["digest"] for d in digests.values()}) == 1, digests
    with Client(config, timeout_seconds=30) as client:
        for path in acknowledged:
            _, data = client.read(path)
            assert data == path.rsplit("/", 1)[1].encode()
