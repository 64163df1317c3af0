"""ReadIndex and leadership transfer transcripts."""

import pytest

from node.raft.errors import NotLeader, ProposalDropped, TransferRefused
from node.raft.types import MessageKind, ReadState, Role
from raft_harness import Cluster, kinds, only


def test_leader_read_index_is_answered_after_a_heartbeat_round():
    cluster = Cluster("abc")
    cluster.elect("a")
    a = cluster.nodes["a"]
    a.read_index(b"r1")
    heartbeats = cluster.process("a")
    assert kinds(heartbeats) == [("HEARTBEAT", "a", "b"), ("HEARTBEAT", "a", "c")]
    assert {m.context for m in heartbeats} == {b"r1"}
    answers = cluster.deliver(heartbeats)
    assert cluster.read_states["a"] == []
    cluster.deliver(answers[:1])  # one ack plus the leader: a quorum
    assert cluster.read_states["a"] == [ReadState(index=2, context=b"r1")]


def test_reads_arriving_while_the_rounds_are_out_share_the_next_round():
    cluster = Cluster("abc")
    cluster.elect("a")
    a = cluster.nodes["a"]
    a.read_index(b"r1")
    first_round = cluster.process("a")
    assert {m.context for m in first_round} == {b"r1"}
    a.read_index(b"r2")
    assert {m.context for m in only(cluster.process("a"), MessageKind.HEARTBEAT)} == {b"r2"}  # lost
    a.read_index(b"r3")
    a.read_index(b"r4")
    assert only(cluster.process("a"), MessageKind.HEARTBEAT) == []  # two rounds are out
    answers = cluster.deliver(first_round)
    next_round = cluster.deliver(answers[:1])  # r1 confirmed: one round for r3 and r4
    assert cluster.read_states["a"] == [ReadState(index=2, context=b"r1")]
    # to the follower that confirmed r1 (tests/raft/test_node_read_rounds.py)
    assert kinds(next_round) == [("HEARTBEAT", "a", answers[0].source)]
    assert {m.context for m in next_round} == {b"r4"}
    cluster.deliver(cluster.deliver(next_round)[:1])  # confirms r2 (lost round), r3 and r4
    assert cluster.read_states["a"][1:] == [ReadState(index=2, context=c) for c in (b"r2", b"r3", b"r4")]


def test_a_lost_round_is_retried_by_the_periodic_heartbeat():
    cluster = Cluster("abc")
    cluster.elect("a")
    a = cluster.nodes["a"]
    a.read_index(b"r1")
    cluster.process("a")  # the round is lost
    a.read_index(b"r2")
    retry = only(cluster.tick("a", a.config.heartbeat_ticks), MessageKind.HEARTBEAT)
    assert {m.context for m in retry} == {b"r2"}
    cluster.deliver(cluster.deliver(retry)[:1])
    assert cluster.read_states["a"] == [ReadState(index=2, context=b"r1"), ReadState(index=2, context=b"r2")]


def test_read_index_waits_for_the_no_op_of_the_term():
    cluster = Cluster("abc", pre_vote=False)
    b = cluster.nodes["b"]
    answers = cluster.deliver(cluster.tick("b", b.randomized_election_ticks))
    replies = cluster.deliver(answers)  # b wins; its no-op is not committed yet
    assert b.role == Role.LEADER and b.log.committed == 1
    b.read_index(b"early")
    assert [m for m in cluster.process("b") if m.context] == []
    cluster.stabilize(replies)
    assert cluster.read_states["b"] == [ReadState(index=2, context=b"early")]


def test_follower_read_index_is_forwarded_and_relayed():
    cluster = Cluster("abc")
    cluster.elect("a")
    cluster.nodes["c"].read_index(b"r2")
    forwarded = cluster.process("c")
    assert kinds(forwarded) == [("READ_INDEX", "c", "a")]
    cluster.stabilize(forwarded)
    assert cluster.read_states["c"] == [ReadState(index=2, context=b"r2")]
    assert cluster.read_states["a"] == []


def test_read_index_without_a_known_leader_raises():
    cluster = Cluster("abc")
    with pytest.raises(NotLeader) as raised:
        cluster.nodes["a"].read_index(b"r")
    assert raised.value.leader_hint == ""


def test_single_voter_answers_reads_at_once():
    cluster = Cluster("a")
    cluster.elect("a")
    cluster.nodes["a"].read_index(b"solo")
    assert cluster.process("a") == []
    assert cluster.read_states["a"] == [ReadState(index=2, context=b"solo")]


def test_transfer_to_an_up_to_date_follower():
    cluster = Cluster("abc")
    cluster.elect("a")
    a, b = cluster.nodes["a"], cluster.nodes["b"]
    a.transfer_leadership("b")
    with pytest.raises(ProposalDropped):
        a.propose(b"x")
    timeout_now = cluster.process("a")
    assert kinds(timeout_now) == [("TIMEOUT_NOW", "a", "b")]
    votes = cluster.deliver(timeout_now)
    assert kinds(votes) == [("VOTE", "b", "a"), ("VOTE", "b", "c")]  # no pre-vote
    assert {m.context for m in votes} == {b"transfer"}
    cluster.stabilize(votes)
    assert (b.role, b.term, a.role, a.lead) == (Role.LEADER, 3, Role.FOLLOWER, "b")


def test_transfer_to_a_lagging_follower_catches_it_up_first():
    cluster = Cluster("abc")
    cluster.elect("a")
    a = cluster.nodes["a"]
    a.propose(b"x")
    cluster.stabilize(drop=lambda m: "c" in (m.source, m.target))
    a.transfer_leadership("c")
    pending = cluster.process("a")
    assert kinds(pending) == [("APPEND", "a", "c")]
    for _ in range(4):  # a probe, its rejection, the catch-up APPEND, its answer
        pending = cluster.deliver(pending)
        if any(m.kind == MessageKind.TIMEOUT_NOW for m in pending):
            break
    assert ("TIMEOUT_NOW", "a", "c") in kinds(pending)
    assert a.tracker.progress["c"].match == a.log.last_index()
    cluster.stabilize(pending)
    assert cluster.nodes["c"].role == Role.LEADER


def test_transfer_is_abandoned_after_an_election_timeout():
    cluster = Cluster("abc")
    cluster.elect("a")
    a = cluster.nodes["a"]
    a.transfer_leadership("b")
    cluster.process("a")  # TIMEOUT_NOW lost
    for _ in range(cluster.settings["election_ticks_min"]):
        cluster.stabilize(cluster.tick("a"), drop=lambda m: m.kind == MessageKind.TIMEOUT_NOW)
    assert (a.role, a.lead_transferee) == (Role.LEADER, "")
    a.propose(b"accepted again")


def test_transfer_refusals():
    cluster = Cluster("abc")
    cluster.elect("a")
    for target in ("a", "zz"):
        with pytest.raises(TransferRefused):
            cluster.nodes["a"].transfer_leadership(target)
    with pytest.raises(NotLeader):
        cluster.nodes["b"].transfer_leadership("c")


def test_a_leader_elected_again_waits_for_the_no_op_of_its_new_term():
    cluster = Cluster("abc")
    cluster.elect("a")
    a, b = cluster.nodes["a"], cluster.nodes["b"]
    a.read_index(b"first-term")
    cluster.stabilize(cluster.process("a"))
    assert [state.context for state in cluster.read_states["a"]] == [b"first-term"]
    a.transfer_leadership("b")
    cluster.stabilize(cluster.process("a"))
    assert b.role == Role.LEADER
    b.transfer_leadership("a")
    votes = cluster.deliver(cluster.process("b"))  # TIMEOUT_NOW: a campaigns in a new term
    replies = cluster.deliver(cluster.deliver(votes))  # a wins: its no-op's APPENDs
    assert a.role == Role.LEADER and a.log.term_or_zero(a.log.committed) != a.term
    a.read_index(b"new-term")
    assert [m for m in cluster.process("a") if m.context] == []  # no round before the no-op commits
    cluster.stabilize(replies)
    assert [state.context for state in cluster.read_states["a"]] == [b"first-term", b"new-term"]
