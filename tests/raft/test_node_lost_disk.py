"""A member restarted on a wiped disk learns it from the first message of a peer that saw it
hold a later term (Message.promised_term), leader or follower alike, and no healthy node is
ever told so."""

import random

import pytest

from node.raft.errors import StateLost
from node.raft.memory_storage import MemoryStorage
from node.raft.node import RaftNode
from node.raft.types import ConfChange, ConfChangeKind, ConfChangeStep, Config, MessageKind, Role
from raft_harness import FAST, Cluster

cut_off_a = lambda message: "a" in (message.source, message.target)


def wipe_and_restart(cluster: Cluster, node_id: str, *, join: bool = False) -> RaftNode:
    """The node's data directory replaced by an empty one; started as before (bootstrap from
    the config's voters) or with --join (no membership until the leader sends it)."""
    cluster.storages[node_id] = MemoryStorage()
    node = RaftNode(Config(node_id=node_id, **FAST), cluster.storages[node_id], random.Random(5),
                    peers=() if join else "abc")
    cluster.nodes[node_id] = node
    return node


def elect_while_a_is_down(cluster: Cluster, node_id: str) -> None:
    for other in "bc":
        cluster.tick(other, FAST["election_ticks_min"])  # the leases on a run out
    node = cluster.nodes[node_id]
    cluster.stabilize(cluster.tick(node_id, node.randomized_election_ticks - node.election_elapsed_ticks),
                      drop=cut_off_a)
    assert node.role == Role.LEADER


def test_a_wiped_leader_is_told_by_the_first_heartbeat_of_its_successor():
    cluster = Cluster("abc")
    cluster.elect("a")  # a asked b and c for their votes in term 2: both saw it hold term 2
    cluster.propose("a", b"x")
    assert cluster.nodes["b"].promised_terms["a"] == 2
    elect_while_a_is_down(cluster, "b")  # a is gone; b leads term 3 (and knows a's match as 0)

    wiped = wipe_and_restart(cluster, "a")
    heartbeats = [m for m in cluster.tick("b", FAST["heartbeat_ticks"]) if m.target == "a"]
    assert heartbeats and heartbeats[0].commit == 0  # the old check (commit beyond the log) cannot fire
    with pytest.raises(StateLost, match="b saw this node hold term 2 but it holds term 1") as raised:
        wiped.step(heartbeats[0])
    assert raised.value.lost_state and (raised.value.promised_term, raised.value.held_term) == (2, 1)
    assert wiped.term == 1 and wiped.vote == ""  # nothing was taken in


def test_a_wiped_follower_whose_vote_made_the_new_leader_is_told_by_it():
    # c campaigns in term 3 and a grants its vote, then a's disk dies before c's first append
    # reaches it: c's match for a is 0, so c's heartbeat commit proves nothing, but a's vote
    # answer showed c that a held term 3.
    cluster = Cluster("abc")
    cluster.elect("b")
    cluster.propose("b", b"x")
    for node in "ac":
        cluster.tick(node, FAST["election_ticks_min"])  # their leases on b run out
    c = cluster.nodes["c"]
    pre_votes = cluster.tick("c", c.randomized_election_ticks - c.election_elapsed_ticks)
    votes = cluster.deliver(cluster.deliver(pre_votes, drop=lambda m: m.target == "b"), drop=lambda m: m.source == "b")
    answers = cluster.deliver([m for m in votes if m.target == "a"])
    assert [(m.kind, m.source, m.reject) for m in answers] == [(MessageKind.VOTE_RESPONSE, "a", False)]
    cluster.deliver(answers, drop=lambda m: m.target == "a")  # c wins; its appends to a are lost
    assert c.role == Role.LEADER and c.term == 3 and c.promised_terms["a"] == 3
    assert c.tracker.progress["a"].match == 0

    wiped = wipe_and_restart(cluster, "a")
    heartbeat = next(m for m in cluster.tick("c", FAST["heartbeat_ticks"]) if m.target == "a")
    assert heartbeat.commit == 0 and heartbeat.promised_term == 3
    with pytest.raises(StateLost, match="c saw this node hold term 3"):
        wiped.step(heartbeat)


def test_a_node_restarted_on_its_own_disk_is_never_told():
    cluster = Cluster("abc")
    cluster.elect("a")
    cluster.propose("a", b"x")
    elect_while_a_is_down(cluster, "b")
    cluster.restart("a")  # its disk is intact: term 2 is on it
    cluster.stabilize(cluster.tick("b", FAST["heartbeat_ticks"]))
    assert cluster.nodes["a"].term == 3 and cluster.nodes["a"].lead == "b"


def test_a_member_removed_and_added_back_on_a_new_disk_is_not_held_to_its_old_promises():
    cluster = Cluster("abc")
    cluster.elect("b")
    cluster.propose("b", b"x")
    b = cluster.nodes["b"]
    assert b.promised_terms["a"] == 2
    b.propose_membership_change(ConfChange((ConfChangeStep(ConfChangeKind.REMOVE_NODE, "a"),)))
    cluster.stabilize(drop=cut_off_a)
    assert "a" not in b.promised_terms  # forgotten with a

    # The documented way back: an empty data directory, --join, add-voter.
    joined = wipe_and_restart(cluster, "a", join=True)
    b.propose_membership_change(ConfChange((ConfChangeStep(ConfChangeKind.ADD_LEARNER, "a"),)))
    cluster.stabilize()
    b.propose_membership_change(ConfChange((ConfChangeStep(ConfChangeKind.ADD_VOTER, "a"),)))
    cluster.stabilize()
    assert "a" in joined.tracker.conf_state.voters and joined.term == b.term


def test_a_follower_the_leader_never_asked_for_a_vote_learns_its_term_once_an_entry_of_it_commits():
    # c was not there when a won term 2 (it never saw a's vote request), then a's disk dies and
    # c succeeds it: c still tells the wiped a what it forgot.
    cluster = Cluster("abc")
    a, c = cluster.nodes["a"], cluster.nodes["c"]
    pre_votes = cluster.tick("a", a.randomized_election_ticks - a.election_elapsed_ticks)
    cluster.stabilize(pre_votes, drop=lambda m: m.target == "c" and m.kind in (MessageKind.PRE_VOTE, MessageKind.VOTE))
    # c saw no vote request of a's, only its appends: its no-op of term 2 committed, and c
    # heard of that.
    assert a.role == Role.LEADER and c.log.term(c.log.committed) == 2 and c.promised_terms["a"] == 2

    elect_while_a_is_down(cluster, "c")
    wiped = wipe_and_restart(cluster, "a")
    heartbeat = next(m for m in cluster.tick("c", FAST["heartbeat_ticks"]) if m.target == "a")
    assert heartbeat.promised_term == 2
    with pytest.raises(StateLost):
        wiped.step(heartbeat)
