"""ReadIndex rounds: one at a time, sent to the followers that confirmed the last one.

A read round asks only the followers whose acks confirmed the previous round (with the leader,
a quorum); the periodic heartbeat still asks every follower, so a silent target delays reads
by one heartbeat interval at most. Reads that arrive while a round is out are confirmed by the
next round, never by the one already out.
"""

from node.raft.read_only import ReadOnly
from node.raft.types import ConfChange, ConfChangeKind, ConfChangeStep, ConfState, MessageKind, ReadState
from raft_harness import Cluster, kinds, only


def leader_after_first_read(follower: str):
    """A 3-node cluster led by a, which read r1: the round went to every follower and only
    `follower` answered. (cluster, a)."""
    cluster = Cluster("abc")
    cluster.elect("a")
    a = cluster.nodes["a"]
    a.read_index(b"r1")
    first_round = cluster.process("a")
    assert sorted(m.target for m in first_round) == sorted(set(cluster.nodes) - {"a"})
    answers = cluster.deliver([m for m in first_round if m.target == follower])
    cluster.deliver(answers)
    assert cluster.read_states["a"] == [ReadState(index=2, context=b"r1")]
    return cluster, a


def test_a_read_round_goes_to_the_followers_that_confirmed_the_last_one():
    cluster, a = leader_after_first_read("c")
    a.read_index(b"r2")
    second_round = cluster.process("a")
    assert kinds(second_round) == [("HEARTBEAT", "a", "c")]
    assert second_round[0].context == b"r2"
    cluster.deliver(cluster.deliver(second_round))
    assert cluster.read_states["a"][1:] == [ReadState(index=2, context=b"r2")]


def test_a_learner_that_answered_first_is_not_asked_alone():
    cluster = Cluster("abc")
    cluster.add_node("d", seed=40)
    cluster.elect("a")
    a = cluster.nodes["a"]
    a.propose_membership_change(ConfChange(steps=(ConfChangeStep(ConfChangeKind.ADD_LEARNER, "d"),)))
    cluster.stabilize()
    assert a.tracker.conf_state == ConfState(voters=frozenset("abc"), learners=frozenset("d"))
    a.read_index(b"r1")
    first_round = cluster.process("a")
    assert sorted(m.target for m in first_round) == ["b", "c", "d"]
    learner_ack = cluster.deliver([m for m in first_round if m.target == "d"])
    assert cluster.deliver(learner_ack) == [] and cluster.read_states["a"] == []  # a learner is no quorum
    cluster.deliver(cluster.deliver([m for m in first_round if m.target == "b"]))
    assert [state.context for state in cluster.read_states["a"]] == [b"r1"]
    a.read_index(b"r2")
    assert kinds(cluster.process("a")) == [("HEARTBEAT", "a", "b")]


def test_reads_arriving_while_two_rounds_are_out_wait_for_the_next_round():
    cluster, a = leader_after_first_read("b")
    a.read_index(b"r2")
    round_2 = cluster.process("a")
    a.read_index(b"r3")
    round_3 = only(cluster.process("a"), MessageKind.HEARTBEAT)  # a second round goes out at once
    assert kinds(round_3) == [("HEARTBEAT", "a", "b")] and round_3[0].context == b"r3"
    a.read_index(b"r4")
    a.read_index(b"r5")
    assert only(cluster.process("a"), MessageKind.HEARTBEAT) == []  # two rounds are out
    round_4 = cluster.deliver(cluster.deliver(round_2))  # r2's ack: r2 confirmed, and the next round
    assert cluster.read_states["a"][1:] == [ReadState(index=2, context=b"r2")]  # not r3 (a later round)
    assert kinds(round_4) == [("HEARTBEAT", "a", "b")] and round_4[0].context == b"r5"
    cluster.deliver(cluster.deliver(round_4))  # r5's ack confirms r3, r4 and r5, sent before it
    assert cluster.read_states["a"][2:] == [ReadState(index=2, context=context) for context in (b"r3", b"r4", b"r5")]
    cluster.deliver(cluster.deliver(round_3))  # r3's own ack, late: nothing left to confirm
    assert len(cluster.read_states["a"]) == 5


def test_when_the_asked_follower_is_silent_the_periodic_heartbeat_asks_everyone():
    cluster, a = leader_after_first_read("c")
    a.read_index(b"r2")
    assert kinds(cluster.process("a")) == [("HEARTBEAT", "a", "c")]  # lost: c went silent
    retry = only(cluster.tick("a", a.config.heartbeat_ticks), MessageKind.HEARTBEAT)
    assert sorted(m.target for m in retry) == ["b", "c"] and {m.context for m in retry} == {b"r2"}
    cluster.deliver(cluster.deliver([m for m in retry if m.target == "b"]))
    assert cluster.read_states["a"][1:] == [ReadState(index=2, context=b"r2")]
    a.read_index(b"r3")
    assert kinds(cluster.process("a")) == [("HEARTBEAT", "a", "b")]  # whoever answered is asked next


def test_round_targets_are_asked_alone_only_while_they_make_a_quorum():
    read_only = ReadOnly()
    assert read_only.round_targets("a", frozenset("abc"), frozenset()) is None  # nothing confirmed yet
    read_only.add_request(5, b"r1", "a", own_id="a")
    read_only.receive_ack("b", b"r1")
    read_only.advance(b"r1")
    assert read_only.round_targets("a", frozenset("abc"), frozenset()) == {"b"}
    assert read_only.round_targets("a", frozenset("abcde"), frozenset()) is None  # grown: a, b are 2 of 5
    assert read_only.round_targets("a", frozenset("ab"), frozenset("acd")) is None  # joint: not of a, c, d
    assert read_only.round_targets("a", frozenset("ac"), frozenset()) is None  # b is no voter now


def test_a_read_round_goes_to_every_follower_while_a_target_has_entries_to_acknowledge():
    cluster, a = leader_after_first_read("c")
    a.propose(b"a write")
    appends = cluster.process("a")  # c may be busy writing it: the round does not wait for c alone
    assert sorted(m.target for m in only(appends, MessageKind.APPEND)) == ["b", "c"]
    a.read_index(b"r2")
    assert kinds(cluster.process("a")) == [("HEARTBEAT", "a", "b"), ("HEARTBEAT", "a", "c")]
    cluster.stabilize(appends)  # both acknowledged the write and r2's round
    assert [state.context for state in cluster.read_states["a"]] == [b"r1", b"r2"]
    a.read_index(b"r3")
    assert len(only(cluster.process("a"), MessageKind.HEARTBEAT)) == 1  # caught up: one follower again
