"""A leader's own entries written without a flush (Driver, OWN ENTRIES) on the simulator.

The leader may leave its own entries unflushed only because it does not count itself for them:
its followers' durable acks commit them. The scenario gives a leader one follower that acks a
new write and one that does not get it, then cuts the leader's power before its flush and
brings the cluster back without the follower that acked. A leader that counted its unflushed
copy would have acknowledged the write, and lost it with its power.
"""

from __future__ import annotations

import pytest

from node.raft.node import RaftNode

from tests.sim.cluster import Cluster
from tests.sim.invariants import InvariantViolation
from tests.sim.network import LinkFaults


def _leader_loses_power_after_one_ack(cluster: Cluster) -> tuple[bytes, str, str, str]:
    leader = cluster.wait_for_leader()
    assert leader is not None
    assert cluster.commit_value(b"before") is not None  # followers replicating, recently heard
    acking, starved = sorted(node_id for node_id in cluster.nodes if node_id != leader)
    cluster.block(leader, starved)  # still heard from a moment ago: it counts as fresh
    value = cluster.new_value()
    assert cluster.client_write(leader, value)
    driver = cluster.nodes[leader].driver
    assert driver._own_entries_unflushed is not None, "the leader flushed its entry with the write"
    acking_disk = cluster.nodes[acking].disk
    assert cluster.run_until(lambda: value in [e.data for e in acking_disk.storage.entries(
        acking_disk.storage.first_index(), acking_disk.storage.last_index() + 1)], 50)
    # The ack reaches the leader, and the leader's loop runs on it, before any flush is due.
    cluster.run_until(lambda: cluster.is_acked(value) or driver._own_entries_unflushed is None, 5)
    unflushed = driver._own_entries_unflushed is not None
    cluster.power_loss(leader, lose_all=True)
    return value, leader, acking, starved if unflushed else ""


def _recover_without(cluster: Cluster, leader: str, acking: str) -> str:
    cluster.crash(acking, lose_deferred=False)
    cluster.heal()
    cluster.set_faults(LinkFaults())
    cluster.restart(leader)
    new_leader = cluster.wait_for_leader(among=[node_id for node_id in cluster.nodes if node_id != acking])
    assert new_leader is not None
    assert cluster.commit_value(b"after") is not None
    cluster.read_index(new_leader, b"read-after")
    cluster.run_until(lambda: b"read-after" in cluster.read_results, 10 * cluster.election_timeout_ms())
    return new_leader


def test_a_write_one_follower_acked_is_not_acknowledged_by_a_leader_that_has_not_flushed():
    cluster = Cluster(3, seed=11, own_entries_unflushed=True)
    value, leader, acking, starved = _leader_loses_power_after_one_ack(cluster)
    assert starved, "the leader flushed before its power went: the scenario tests nothing"
    assert not cluster.is_acked(value), "acknowledged with one durable copy besides an unflushed one"
    _recover_without(cluster, leader, acking)
    assert b"read-after" in cluster.read_results  # and every invariant held throughout


def test_the_simulator_catches_a_leader_that_counts_its_unflushed_entries(monkeypatch):
    advance = RaftNode.advance

    def advance_counting_everything(self, ready, *, entries_durable=True):
        return advance(self, ready, entries_durable=True)

    monkeypatch.setattr(RaftNode, "advance", advance_counting_everything)
    cluster = Cluster(3, seed=11, own_entries_unflushed=True)
    value, leader, acking, _ = _leader_loses_power_after_one_ack(cluster)
    assert cluster.is_acked(value)  # on the strength of its own unflushed copy
    with pytest.raises(InvariantViolation, match="leader completeness|stale read"):
        _recover_without(cluster, leader, acking)
