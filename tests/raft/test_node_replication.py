"""Log replication transcripts: batching, flow control, conflict hints, commit rules."""

import pytest

from node.raft.errors import NotLeader, ProposalDropped
from node.raft.progress import ProgressState
from node.raft.types import Message, MessageKind, Role
from raft_harness import Cluster, kinds, only

APPEND = MessageKind.APPEND


def expire_lease(cluster: Cluster, node_id: str) -> None:
    """Let node_id's memory of the leader age past the minimum election timeout."""
    assert cluster.tick(node_id, cluster.settings["election_ticks_min"]) == []


def isolated(node_id: str):
    return lambda message: node_id in (message.source, message.target)


def test_many_proposals_go_out_in_one_append_per_follower():
    cluster = Cluster("abc")
    cluster.elect("a")
    a = cluster.nodes["a"]
    for number in range(10):
        assert a.propose(b"p%d" % number) == (2, 3 + number)
    appends = cluster.process("a")
    assert kinds(appends) == [("APPEND", "a", "b"), ("APPEND", "a", "c")]
    assert [len(m.entries) for m in appends] == [10, 10]
    cluster.stabilize(appends)
    assert [entry.data for entry in cluster.applied["c"]][-10:] == [b"p%d" % n for n in range(10)]


def test_appends_are_cut_at_message_bytes_max_but_carry_at_least_one_entry():
    cluster = Cluster("ab", message_bytes_max=100)
    cluster.elect("a")
    a = cluster.nodes["a"]
    for _ in range(4):
        a.propose(b"x" * 26)  # 50 bytes each with the overhead
    a.propose(b"y" * 500)  # alone larger than the cap
    appends = cluster.process("a")
    assert [len(m.entries) for m in appends] == [2, 2, 1]  # pipelined while replicating
    cluster.stabilize(appends)
    assert cluster.nodes["b"].log.committed == 7


def test_in_flight_window_bounds_pipelining():
    cluster = Cluster("ab", inflight_messages_max=2, message_bytes_max=1)
    cluster.elect("a")
    for number in range(5):
        cluster.nodes["a"].propose(b"%d" % number)
    appends = cluster.process("a")
    assert len(appends) == 2  # then the window is full
    progress = cluster.nodes["a"].tracker.progress["b"]
    assert (progress.state, progress.is_paused()) == (ProgressState.REPLICATE, True)
    cluster.stabilize(appends)
    assert cluster.nodes["b"].log.committed == 7


def test_heartbeat_carries_commit_capped_by_the_follower_match():
    cluster = Cluster("abc")
    cluster.elect("a")
    cluster.nodes["a"].propose(b"x")
    cluster.stabilize(drop=lambda m: m.target == "c")
    heartbeats = cluster.tick("a", cluster.settings["heartbeat_ticks"])
    commits = {m.target: m.commit for m in only(heartbeats, MessageKind.HEARTBEAT)}
    assert commits == {"b": 3, "c": 2}  # c only has up to the no-op


def test_a_fifty_entry_conflict_resolves_in_two_round_trips():
    cluster = Cluster("abc", pre_vote=False)
    cluster.elect("a")
    a = cluster.nodes["a"]
    for number in range(50):  # a, cut off, fills its log with entries that will never commit
        a.propose(b"old%d" % number)
    cluster.process("a")
    assert a.log.last_index() == 52

    b = cluster.nodes["b"]
    expire_lease(cluster, "c")
    cluster.stabilize(cluster.tick("b", b.randomized_election_ticks), drop=isolated("a"))
    assert (b.role, b.term) == (Role.LEADER, 3)
    for number in range(60):
        b.propose(b"new%d" % number)
    cluster.stabilize(drop=isolated("a"))

    # a rejoins: count the APPEND round trips b needs before a's log matches.
    round_trips = 0
    pending = cluster.deliver(cluster.tick("b", cluster.settings["heartbeat_ticks"]))  # a steps down
    while b.tracker.progress["a"].match < b.log.last_index():
        pending = cluster.deliver(pending)
        round_trips += any(m.kind == APPEND and m.target == "a" for m in pending)
        assert round_trips <= 3
    rejections = [m for m in pending if m.kind == MessageKind.APPEND_RESPONSE and m.reject]
    assert rejections == []
    assert round_trips <= 3
    cluster.stabilize(pending)
    assert a.log.slice(3, 64) == b.log.slice(3, 64)


def test_follower_rejection_carries_the_backtracking_hint():
    cluster = Cluster("ab", pre_vote=False)
    cluster.elect("a")
    b = cluster.nodes["b"]
    probe = Message(kind=APPEND, source="a", target="b", term=2, index=40, log_term=2)
    [answer] = cluster.deliver([probe])
    assert (answer.reject, answer.index, answer.reject_hint_index, answer.reject_hint_term) == (True, 40, 2, 2)
    assert b.log.last_index() == 2


def test_new_leader_commits_old_entries_only_through_an_entry_of_its_term():
    """Raft paper figure 8: counting replicas of an older term's entry is not enough."""
    cluster = Cluster("abc", pre_vote=False)
    cluster.elect("a")
    cluster.nodes["a"].propose(b"x")  # index 3, term 2: reaches b and c, their acks are lost
    cluster.stabilize(drop=lambda m: m.target == "a")
    assert cluster.nodes["a"].log.committed == 2

    b = cluster.nodes["b"]
    expire_lease(cluster, "c")
    replies = cluster.deliver(cluster.tick("b", b.randomized_election_ticks), drop=isolated("a"))
    appends = cluster.deliver(replies, drop=isolated("a"))
    assert b.role == Role.LEADER and b.log.term(3) == 2 and b.log.last_index() == 4
    assert b.log.committed == 2
    # c acknowledges entry 3: b and c hold it, a majority, but it is of term 2.
    ack = Message(kind=MessageKind.APPEND_RESPONSE, source="c", target="b", term=3, index=3)
    cluster.deliver([ack])
    assert (b.tracker.progress["c"].match, b.log.committed) == (3, 2)
    cluster.stabilize(appends, drop=isolated("a"))
    assert b.log.committed == 4  # both commit together once the no-op of term 3 is on a quorum


def test_propose_on_a_follower_names_the_leader():
    cluster = Cluster("abc")
    cluster.elect("a")
    with pytest.raises(NotLeader) as raised:
        cluster.nodes["b"].propose(b"x")
    assert raised.value.leader_hint == "a"


def test_proposals_beyond_the_uncommitted_budget_are_dropped():
    cluster = Cluster("abc", uncommitted_bytes_max=100)
    cluster.elect("a")
    a = cluster.nodes["a"]
    a.propose(b"x" * 80)
    with pytest.raises(ProposalDropped):
        a.propose(b"x" * 80)
    cluster.stabilize()
    a.propose(b"x" * 80)  # the budget is released once committed


def test_restarted_follower_catches_up_from_its_persisted_log():
    cluster = Cluster("abc")
    cluster.elect("a")
    cluster.propose("a", b"one")
    cluster.restart("c")
    assert cluster.nodes["c"].log.committed == 3
    cluster.propose("a", b"two")
    cluster.stabilize(cluster.tick("a", cluster.settings["heartbeat_ticks"]))
    assert cluster.nodes["c"].log.committed == 4


def test_a_commit_goes_out_with_the_next_append_or_on_the_second_tick():
    cluster = Cluster("abc", heartbeat_ticks=5)
    cluster.elect("a")
    a, b = cluster.nodes["a"], cluster.nodes["b"]
    assert a.heartbeat_elapsed_ticks < 3  # the ticks below are not heartbeat ticks
    _, first = a.propose(b"first")
    answers = cluster.deliver(cluster.process("a"))
    assert kinds(answers) == [("APPEND_RESPONSE", "b", "a"), ("APPEND_RESPONSE", "c", "a")]
    assert cluster.deliver(answers) == []  # committed: no APPEND for the commit alone
    assert a.log.committed == first and b.log.committed < first
    _, second = a.propose(b"second")
    appends = cluster.process("a")
    assert [(m.kind, m.commit, [e.index for e in m.entries]) for m in appends] == [(APPEND, first, [second])] * 2
    cluster.deliver(cluster.deliver(appends))
    assert b.log.committed == first and a.log.committed == second
    assert a.ticks_until_commit_broadcast() == 2
    assert cluster.tick("a") == []  # a tick later the next write's APPEND may still carry it
    assert a.ticks_until_commit_broadcast() == 1
    on_tick = cluster.tick("a")  # unsent for a whole tick: sent now (not yet a heartbeat tick)
    assert [(m.kind, m.target, m.commit, m.entries) for m in on_tick] == [(APPEND, "b", second, ()), (APPEND, "c", second, ())]
    cluster.deliver(on_tick)
    assert b.log.committed == second
    assert a.ticks_until_commit_broadcast() is None
    assert only(cluster.tick("a"), APPEND) == []  # told once
