"""Membership changes and snapshot transfer transcripts."""

import pytest

from node.raft.errors import ConfChangeInProgress, InvalidConfChange
from node.raft.types import ConfChange, ConfChangeKind, ConfChangeStep, ConfState, MessageKind, Role
from raft_harness import Cluster

ADD_VOTER, ADD_LEARNER, REMOVE = ConfChangeKind.ADD_VOTER, ConfChangeKind.ADD_LEARNER, ConfChangeKind.REMOVE_NODE


def change(kind: ConfChangeKind, node: str) -> ConfChange:
    return ConfChange(steps=(ConfChangeStep(kind, node),))


def conf_states(cluster: Cluster) -> set[ConfState]:
    return {node.tracker.conf_state for node in cluster.nodes.values()}


def test_add_learner_then_promote_through_joint_consensus():
    cluster = Cluster("abc")
    cluster.add_node("d", seed=40)  # empty: waits to be contacted
    cluster.elect("a")
    a = cluster.nodes["a"]
    a.propose_membership_change(change(ADD_LEARNER, "d"))
    cluster.stabilize()
    assert conf_states(cluster) == {ConfState(voters=frozenset("abc"), learners=frozenset("d"))}
    assert cluster.storages["d"].initial_state()[1].learners == {"d"}  # reported in Ready.conf_state

    a.propose_membership_change(change(ADD_VOTER, "d"))
    cluster.stabilize()  # the joint entry applies, the leader appends LEAVE_JOINT by itself
    assert conf_states(cluster) == {ConfState(voters=frozenset("abcd"))}
    kinds = [ConfChange.decode(e.data).steps[0].kind for e in cluster.applied["d"] if e.kind.name == "CONF_CHANGE"]
    assert kinds == [ADD_LEARNER, ADD_VOTER, ConfChangeKind.LEAVE_JOINT]


def test_one_change_at_a_time():
    cluster = Cluster("abc")
    cluster.elect("a")
    a = cluster.nodes["a"]
    a.propose_membership_change(change(ADD_LEARNER, "d"))
    with pytest.raises(ConfChangeInProgress):
        a.propose_membership_change(change(ADD_LEARNER, "e"))
    cluster.stabilize()
    a.propose_membership_change(change(ADD_VOTER, "d"))
    appends = cluster.process_all()  # the joint entry is not even committed yet
    with pytest.raises(ConfChangeInProgress):
        a.propose_membership_change(change(REMOVE, "c"))
    cluster.stabilize(appends)
    assert not a.tracker.conf_state.joint
    a.propose_membership_change(change(REMOVE, "d"))


def test_invalid_change_is_refused_up_front():
    cluster = Cluster("abc")
    cluster.elect("a")
    with pytest.raises(InvalidConfChange):
        cluster.nodes["a"].propose_membership_change(change(REMOVE, "zz"))
    assert cluster.nodes["a"].log.last_index() == 2


def test_removed_leader_leads_until_the_change_applies_then_steps_down():
    cluster = Cluster("abc")
    cluster.elect("a")
    a = cluster.nodes["a"]
    a.propose_membership_change(change(REMOVE, "a"))
    cluster.stabilize()
    assert a.role == Role.FOLLOWER and a.lead == ""
    assert a.tracker.conf_state == ConfState(voters=frozenset("bc"))
    assert cluster.tick("a", 5 * cluster.settings["election_ticks_max"]) == []  # a never campaigns
    b = cluster.nodes["b"]
    assert cluster.tick("c", cluster.settings["election_ticks_min"]) == []  # c's lease on a runs out
    cluster.stabilize(cluster.tick("b", b.randomized_election_ticks))
    assert b.role == Role.LEADER
    cluster.stabilize(cluster.tick("b", cluster.settings["heartbeat_ticks"]))
    assert conf_states(cluster) == {ConfState(voters=frozenset("bc"))}
    assert set(b.tracker.progress) == {"b", "c"}  # a is sent nothing any more
    cluster.propose("b", b"after")
    assert cluster.applied["c"][-1].data == b"after"


def compact(cluster: Cluster, node_id: str) -> None:
    """What a driver does: snapshot the applied state, compact, tell the core."""
    node, storage = cluster.nodes[node_id], cluster.storages[node_id]
    image = b"|".join(entry.data for entry in cluster.applied[node_id])
    storage.create_snapshot(node.log.applied, storage.initial_state()[1], image)
    storage.compact(node.log.applied)
    node.compacted(node.log.applied)


def test_lagging_follower_gets_the_snapshot_in_chunks_one_at_a_time():
    cluster = Cluster("abc", snapshot_chunk_bytes=10)
    cluster.elect("a")
    cut_off_c = lambda m: "c" in (m.source, m.target)
    for number in range(5):
        cluster.nodes["a"].propose(b"entry%d" % number)
    cluster.stabilize(drop=cut_off_c)
    compact(cluster, "a")
    image = cluster.storages["a"].snapshot().data
    assert len(image) == 35  # four chunks of at most 10 bytes

    chunks = []
    pending = cluster.tick("a", cluster.settings["heartbeat_ticks"])
    for _ in range(30):
        snapshot_messages = [m for m in pending if m.kind == MessageKind.INSTALL_SNAPSHOT]
        assert len(snapshot_messages) <= 1  # flow control: one chunk in flight
        chunks += [(m.snapshot_offset, len(m.snapshot_data), m.snapshot_done) for m in snapshot_messages]
        pending = cluster.deliver(pending)
        if not pending:
            break
    assert chunks == [(0, 10, False), (10, 10, False), (20, 10, False), (30, 5, True)]
    c = cluster.nodes["c"]
    assert cluster.storages["c"].snapshot().data == image
    assert c.log.committed == c.log.last_index() == cluster.nodes["a"].log.last_index() == 7
    assert cluster.nodes["a"].tracker.progress["c"].describe() == {"match": 7, "next": 8, "state": "replicate"}
    cluster.propose("a", b"after")
    assert cluster.applied["c"][-1].data == b"after"


def test_snapshot_transfer_restarts_when_the_follower_lost_its_chunks():
    cluster = Cluster("ab", snapshot_chunk_bytes=4)
    cluster.elect("a")
    for number in range(3):
        cluster.nodes["a"].propose(b"e%d" % number)
    cluster.stabilize(drop=lambda m: m.target == "b")
    compact(cluster, "a")
    pending = cluster.deliver(cluster.tick("a", cluster.settings["heartbeat_ticks"]))
    for _ in range(3):  # a couple of chunks arrive, then b restarts and forgets them
        pending = cluster.deliver(pending)
    cluster.restart("b")
    cluster.stabilize(pending)
    cluster.stabilize(cluster.tick("a", 2 * cluster.settings["heartbeat_ticks"]))
    assert cluster.storages["b"].snapshot().data == cluster.storages["a"].snapshot().data
    assert cluster.nodes["b"].log.committed == 5


def test_new_node_learns_the_initial_configuration_from_the_bootstrap_snapshot():
    cluster = Cluster("abc")
    cluster.elect("a")
    cluster.add_node("d", seed=40)
    cluster.nodes["a"].propose_membership_change(change(ADD_LEARNER, "d"))
    cluster.stabilize()
    assert cluster.storages["d"].snapshot().meta.index == 1
    assert cluster.nodes["d"].tracker.conf_state == ConfState(voters=frozenset("abc"), learners=frozenset("d"))
