"""A follower's driver holds committed entries back for up to apply_hold_seconds and applies
them in one batch (node/replicator/driver.py, APPLY_HOLD_ENTRIES_MAX): its acknowledgements do
not wait for it, and whatever waits for the follower's applied state releases the hold at once."""

import math

from raft_harness import Cluster, _Outbox, _TranscriptDriver, _TranscriptMachine

from node.raft.types import ConfChange, ConfChangeKind, ConfChangeStep, Role
from node.replicator.driver import APPLY_HOLD_ENTRIES_MAX

HOLD_SECONDS = 0.01


class _RecordingOutbox(_Outbox):
    def __init__(self) -> None:
        super().__init__()
        self.reads: list[int] = []
        self.forwards: list[tuple[str, bytes]] = []

    def reads_ready(self, tokens) -> None:
        self.reads.extend(tokens)

    def send_forward(self, leader: str, command: bytes) -> None:
        self.forwards.append((leader, command))


def _holding_driver(cluster: Cluster, node_id: str) -> _TranscriptDriver:
    """Replace node_id's driver by one that holds committed entries for HOLD_SECONDS; its
    clock is `cluster.clock_seconds` (the harness's other drivers stand at time 0)."""
    node = cluster.nodes[node_id]
    outbox = _RecordingOutbox()
    driver = _TranscriptDriver(node, cluster.disks[node_id], _TranscriptMachine(), outbox, outbox, node_id=node_id,
                               incarnation=b"held", applied_index=node.log.applied,
                               read_timeout_seconds=math.inf, apply_hold_seconds=HOLD_SECONDS)
    driver.read_states = cluster.read_states[node_id]
    driver.outbox = outbox
    cluster.drivers[node_id] = driver
    return driver


def _cluster_with_holding_follower() -> tuple[Cluster, _TranscriptDriver]:
    cluster = Cluster("abc")
    cluster.elect("a")
    return cluster, _holding_driver(cluster, "b")


def _applied_indexes(cluster: Cluster, node_id: str) -> list[int]:
    return [entry.index for entry in cluster.applied[node_id]]


def test_a_follower_acknowledges_at_once_and_applies_when_the_hold_ends():
    cluster, driver = _cluster_with_holding_follower()
    b = cluster.nodes["b"]
    index = cluster.propose("a", b"x")[1]
    # Committed on the leader with b's acknowledgement, and b knows it is committed...
    assert cluster.nodes["a"].log.committed >= index
    assert b.log.committed >= index
    # ...but holds it: not applied yet, and the loop is told when to come back.
    assert index not in _applied_indexes(cluster, "b")
    assert b.log.committed_held
    assert driver.committed_held_until() == HOLD_SECONDS  # the hold began at time 0
    assert index in _applied_indexes(cluster, "c")  # a follower without the hold applied it
    driver.process(HOLD_SECONDS / 2)
    assert index not in _applied_indexes(cluster, "b")
    driver.process(HOLD_SECONDS)
    assert index in _applied_indexes(cluster, "b")
    assert driver.applied_index == b.log.applied == b.log.committed
    assert driver.committed_held_until() is None


def test_a_leader_never_holds():
    cluster = Cluster("abc")
    cluster.elect("a")
    driver = _holding_driver(cluster, "a")
    index = cluster.propose("a", b"x")[1]
    assert cluster.nodes["a"].role == Role.LEADER
    assert index in _applied_indexes(cluster, "a")
    assert driver.committed_held_until() is None


def test_a_read_waiting_on_the_follower_releases_the_hold():
    cluster, driver = _cluster_with_holding_follower()
    index = cluster.propose("a", b"x")[1]
    assert index not in _applied_indexes(cluster, "b")
    driver.read_barrier(7)
    cluster.stabilize()  # b asks the leader for a read index at or past `index`, and gets it
    assert driver.outbox.reads == [7]
    assert index in _applied_indexes(cluster, "b")


def test_a_follower_that_forwarded_a_write_applies_at_once_until_it_applied_that_write():
    cluster, driver = _cluster_with_holding_follower()
    held = cluster.propose("a", b"x")[1]
    assert held not in _applied_indexes(cluster, "b")
    driver.propose(b"from a client of b", 0.0)
    assert driver.outbox.forwards == [("a", b"from a client of b")]
    other = cluster.propose("a", b"y")[1]
    assert {held, other} <= set(_applied_indexes(cluster, "b"))  # the forward may be in there
    forwarded = cluster.propose("a", b"from a client of b")[1]  # as the leader does with the forward
    assert forwarded in _applied_indexes(cluster, "b")  # its client waits for b to apply it
    later = cluster.propose("a", b"z")[1]
    assert later not in _applied_indexes(cluster, "b")  # applied: b holds again
    assert cluster.nodes["b"].log.committed_held


def test_a_membership_change_is_not_held():
    cluster, driver = _cluster_with_holding_follower()
    held = cluster.propose("a", b"x")[1]
    assert held not in _applied_indexes(cluster, "b")
    change = ConfChange((ConfChangeStep(ConfChangeKind.ADD_LEARNER, "d"),))
    index = cluster.nodes["a"].propose_membership_change(change)[1]
    cluster.stabilize()
    assert {held, index} <= set(_applied_indexes(cluster, "b"))
    assert "d" in cluster.nodes["b"].tracker.conf_state.learners


def test_a_long_committed_tail_is_not_held():
    cluster, driver = _cluster_with_holding_follower()
    held = cluster.propose("a", b"x")[1]
    assert held not in _applied_indexes(cluster, "b")
    cut_off_b = lambda m: "b" in (m.source, m.target)
    for number in range(APPLY_HOLD_ENTRIES_MAX):
        cluster.nodes["a"].propose(number.to_bytes(4, "big"))
        cluster.stabilize(drop=cut_off_b)
    committed = cluster.nodes["a"].log.committed
    cluster.stabilize(cluster.tick("a", cluster.settings["heartbeat_ticks"]))  # b catches up
    assert cluster.nodes["b"].log.committed == committed
    assert cluster.nodes["b"].log.applied == committed


def test_a_stale_read_releases_the_hold_once():
    cluster, driver = _cluster_with_holding_follower()
    assert not driver.release_hold()  # nothing held: nothing to release
    index = cluster.propose("a", b"x")[1]
    assert index not in _applied_indexes(cluster, "b")
    assert driver.release_hold()
    assert driver.has_work()  # the loop comes back at once, not when the hold would end
    driver.process(0.0)  # long before the hold ends
    assert index in _applied_indexes(cluster, "b")
    later = cluster.propose("a", b"y")[1]
    assert later not in _applied_indexes(cluster, "b")  # released once: b holds again
    assert cluster.nodes["b"].log.committed_held
