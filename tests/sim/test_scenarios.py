"""Deterministic scenarios in the spirit of the MIT 6.824 Raft lab tests, run on the simulator.

Every scenario has a fixed seed; the invariant checker runs after every event throughout, so
each scenario also asserts safety. Times are virtual: a scenario of many seconds runs in
milliseconds. One election timeout here is at most 300 ms (30 ticks of 10 ms).
"""

from __future__ import annotations

import random

import pytest

from node.raft.errors import RaftError
from node.raft.types import ConfChange, ConfChangeKind, ConfChangeStep, MessageKind, Role

from tests.sim.cluster import Cluster
from tests.sim.invariants import InvariantViolation
from tests.sim.mutants import FIGURE_8_VIOLATION, drop_figure_8_rule
from tests.sim.network import LinkFaults

UNRELIABLE = LinkFaults(
    drop_probability=0.1,
    duplicate_probability=0.1,
    delay_ms_min=1,
    delay_ms_max=20,
    reorder_probability=0.2,
    reorder_delay_ms_max=60,
)


def change(*steps: tuple[ConfChangeKind, str]) -> ConfChange:
    return ConfChange(steps=tuple(ConfChangeStep(kind, node) for kind, node in steps))


def values_of(cluster: Cluster, node_id: str) -> list[bytes]:
    """Applied values, a client retry ("v#retryN", see Cluster.commit_value) counted as "v"."""
    return [value.split(b"#")[0] for value in cluster.applied_values(node_id)]


def others(cluster: Cluster, *excluded: str) -> list[str]:
    return [node_id for node_id in cluster.nodes if node_id not in excluded]


def assert_acked_everywhere(cluster: Cluster, nodes=None) -> None:
    """Every acknowledged write is applied, at its index, on every given node."""
    for node_id in nodes or cluster.nodes:
        applied = {a.index: a.data for a in cluster.nodes[node_id].disk.applied}
        for value, index in cluster.checker.acked.items():
            assert applied.get(index) == value, f"{node_id} lacks acknowledged {value!r} at {index}"


def settle(cluster: Cluster) -> int:
    """Heal, restart everyone, make the network reliable; one value must then commit on all."""
    cluster.heal()
    cluster.set_faults(LinkFaults())
    for node_id, node in cluster.nodes.items():
        if not node.alive:
            cluster.restart(node_id)
    index = cluster.commit_value(b"settle")
    assert index is not None, "no progress after healing"
    return index


# -- leader election ------------------------------------------------------------------------


def test_initial_election_one_leader_and_stable_term():
    cluster = Cluster(3, seed=1)
    leader = cluster.wait_for_leader()
    assert leader is not None
    term = cluster.nodes[leader].term
    cluster.run_for(40 * cluster.config["heartbeat_ticks"] * 10)  # 40 heartbeat intervals
    assert cluster.single_leader() == leader
    assert {node.term for node in cluster.nodes.values()} == {term}, "term moved without faults"
    assert len(cluster.leader_history) == 1


def test_reelection_after_leader_disconnect_and_rejoin():
    cluster = Cluster(3, seed=2)
    leader1 = cluster.wait_for_leader()
    cluster.isolate(leader1)
    leader2 = cluster.wait_for_leader(among=others(cluster, leader1))
    assert leader2 is not None and leader2 != leader1
    cluster.reconnect(leader1)  # the old leader must step down, not disturb
    assert cluster.wait_for_leader() == leader2
    # Without a quorum there is no leader at all (the leader steps down: CheckQuorum).
    follower = others(cluster, leader2)[0]
    cluster.isolate(leader2)
    cluster.isolate(follower)
    cluster.run_for(5 * cluster.election_timeout_ms())
    assert cluster.claimed_leaders() == []
    cluster.reconnect(follower)
    assert cluster.wait_for_leader(among=others(cluster, leader2)) is not None
    cluster.reconnect(leader2)
    assert cluster.wait_for_leader() is not None


def test_many_elections_on_seven_nodes():
    cluster = Cluster(7, seed=3)
    rng = random.Random(3)
    assert cluster.wait_for_leader() is not None
    for _ in range(10):
        cut = rng.sample(sorted(cluster.nodes), 3)
        for node_id in cut:
            cluster.isolate(node_id)
        assert cluster.wait_for_leader(among=others(cluster, *cut)) is not None
        for node_id in cut:
            cluster.reconnect(node_id)
    assert cluster.wait_for_leader() is not None


# -- agreement ------------------------------------------------------------------------------


def test_basic_agreement():
    cluster = Cluster(3, seed=4)
    cluster.wait_for_leader()
    previous = None
    for number in range(1, 4):
        value = f"basic{number}".encode()
        assert value not in cluster.checker.value_index, "committed before proposed"
        index = cluster.commit_value(value)
        assert index is not None
        if previous is not None:
            assert index == previous + 1
        previous = index
    assert len({tuple(cluster.applied_values(n)) for n in cluster.nodes}) == 1


def test_agreement_despite_failed_follower():
    cluster = Cluster(3, seed=5)
    leader = cluster.wait_for_leader()
    assert cluster.commit_value(b"a1") is not None
    follower = others(cluster, leader)[0]
    cluster.isolate(follower)
    connected = others(cluster, follower)
    assert cluster.commit_value(b"a2", nodes=connected) is not None
    assert cluster.commit_value(b"a3", nodes=connected) is not None
    cluster.reconnect(follower)
    assert cluster.commit_value(b"a4") is not None
    assert values_of(cluster, follower) == [b"a1", b"a2", b"a3", b"a4"]


def test_no_agreement_without_quorum():
    cluster = Cluster(5, seed=6)
    leader = cluster.wait_for_leader()
    assert cluster.commit_value(b"q1") is not None
    cut = others(cluster, leader)[:3]
    for node_id in cut:
        cluster.isolate(node_id)
    term, index = cluster.propose(leader, b"q2")
    cluster.run_for(3 * cluster.election_timeout_ms())
    assert b"q2" not in cluster.checker.value_index, "committed without a quorum"
    assert all(node.disk.hard_state().commit < index for node in cluster.nodes.values())
    for node_id in cut:
        cluster.reconnect(node_id)
    assert cluster.commit_value(b"q3") is not None


def test_concurrent_proposals():
    cluster = Cluster(3, seed=7)
    leader = cluster.wait_for_leader()
    values = [f"c{number}".encode() for number in range(20)]
    indexes = [cluster.propose(leader, value)[1] for value in values]  # all in the same instant
    assert indexes == list(range(indexes[0], indexes[0] + 20))
    assert cluster.run_until(lambda: all(cluster.has_applied(n, indexes[-1]) for n in cluster.nodes), 2000)
    assert all(cluster.is_acked(value) for value in values)
    for node_id in cluster.nodes:
        assert values_of(cluster, node_id) == values


def test_rejoin_of_partitioned_leader_discards_its_uncommitted_entries():
    cluster = Cluster(3, seed=8)
    leader1 = cluster.wait_for_leader()
    assert cluster.commit_value(b"r1") is not None
    cluster.isolate(leader1)
    for value in (b"lost1", b"lost2", b"lost3"):
        cluster.propose(leader1, value)
    rest = others(cluster, leader1)
    leader2 = cluster.wait_for_leader(among=rest)
    assert cluster.commit_value(b"r2", nodes=rest) is not None
    cluster.isolate(leader2)
    cluster.reconnect(leader1)
    third = others(cluster, leader1, leader2)
    assert cluster.commit_value(b"r3", nodes=[leader1] + third) is not None
    cluster.reconnect(leader2)
    assert cluster.commit_value(b"r4") is not None
    for lost in (b"lost1", b"lost2", b"lost3"):
        assert lost not in cluster.checker.value_index, f"{lost!r} from a deposed leader was applied"
    for node_id in cluster.nodes:
        assert values_of(cluster, node_id) == [b"r1", b"r2", b"r3", b"r4"]


def test_backup_resolves_fifty_conflicting_entries_with_few_appends():
    cluster = Cluster(5, seed=9)
    leader1 = cluster.wait_for_leader()
    assert cluster.commit_value(b"b0") is not None
    follower1 = others(cluster, leader1)[0]
    group_b = others(cluster, leader1, follower1)
    cluster.partition([leader1, follower1], group_b)
    for number in range(50):
        cluster.propose(leader1, f"stale-a{number}".encode())  # never committed
    leader2 = cluster.wait_for_leader(among=group_b)
    for number in range(50):
        cluster.propose(leader2, f"bb{number}".encode())
    assert cluster.run_until(lambda: cluster.is_acked(b"bb49"), 2000)
    other_b, last_b = [n for n in group_b if n != leader2]
    cluster.heal()
    cluster.partition([leader2, other_b], [leader1, follower1, last_b])
    for number in range(50):
        cluster.propose(leader2, f"stale-b{number}".encode())  # never committed
    side = [leader1, follower1, last_b]
    leader3 = cluster.wait_for_leader(among=side, min_term=cluster.nodes[leader2].term + 1)
    assert leader3 == last_b, "only the node with the committed entries can win"
    appends_before = cluster.sent_counts[MessageKind.APPEND]
    for number in range(50):
        cluster.propose(leader3, f"c{number}".encode())
    assert cluster.run_until(lambda: all(cluster.has_applied(n, cluster.checker.acked.get(b"c49", 10**9)) for n in side), 3000)
    side_appends = cluster.sent_counts[MessageKind.APPEND] - appends_before
    cluster.heal()
    appends_before = cluster.sent_counts[MessageKind.APPEND]
    assert cluster.commit_value(b"final") is not None
    heal_appends = cluster.sent_counts[MessageKind.APPEND] - appends_before
    # Entry-by-entry backtracking would need about 50 APPENDs per stale follower.
    print(f"APPENDs to resolve the conflicts: {side_appends} in the minority, {heal_appends} after healing")
    assert side_appends <= 15, side_appends
    assert heal_appends <= 15, heal_appends
    for node_id in cluster.nodes:
        values = cluster.applied_values(node_id)
        assert not any(value.startswith(b"stale") for value in values)
        assert len(values) == 1 + 50 + 50 + 1


def test_message_counts_for_an_election_and_an_idle_second():
    cluster = Cluster(3, seed=10)
    assert cluster.wait_for_leader() is not None
    election_messages = sum(cluster.sent_counts.values())
    assert election_messages <= 30, cluster.sent_counts
    assert cluster.commit_value(b"m1") is not None
    cluster.run_for(200)
    cluster.sent_counts.clear()
    cluster.run_for(1000)
    heartbeat_ms = cluster.config["heartbeat_ticks"] * 10
    budget = 2 * (3 - 1) * (1000 // heartbeat_ms + 2)  # one request and one answer per follower
    assert sum(cluster.sent_counts.values()) <= budget, cluster.sent_counts


# -- persistence ----------------------------------------------------------------------------


def test_persistence_crash_of_all_nodes():
    cluster = Cluster(3, seed=11)
    cluster.wait_for_leader()
    index1 = cluster.commit_value(b"p1")
    for node_id in cluster.nodes:
        cluster.crash(node_id)
    for node_id in cluster.nodes:
        cluster.restart(node_id)
    assert cluster.commit_value(b"p2") is not None
    for node_id in cluster.nodes:
        assert cluster.applied_at(node_id, index1).data == b"p1"
        assert values_of(cluster, node_id) == [b"p1", b"p2"]


def test_persistence_crash_of_the_leader():
    cluster = Cluster(3, seed=12)
    leader = cluster.wait_for_leader()
    assert cluster.commit_value(b"p1") is not None
    cluster.crash(leader)
    assert cluster.commit_value(b"p2", nodes=others(cluster, leader)) is not None
    cluster.restart(leader)
    assert cluster.commit_value(b"p3") is not None
    assert values_of(cluster, leader) == [b"p1", b"p2", b"p3"]


def test_persistence_rolling_crashes():
    cluster = Cluster(5, seed=13)
    rng = random.Random(13)
    cluster.wait_for_leader()
    for number in range(10):
        victim = rng.choice(sorted(cluster.nodes))
        cluster.crash(victim)
        assert cluster.commit_value(f"roll{number}".encode(), nodes=cluster.live_nodes()) is not None
        cluster.restart(victim)
    settle(cluster)
    assert_acked_everywhere(cluster)
    assert all(len(cluster.applied_values(n)) == 11 for n in cluster.nodes)


def test_crash_during_disk_write_loses_nothing_acknowledged():
    cluster = Cluster(3, seed=14)
    leader = cluster.wait_for_leader()
    assert cluster.commit_value(b"w1") is not None
    cluster.crash_during_next_write(leader)
    with pytest.raises(AssertionError):  # the leader is gone by the time propose returns
        cluster.propose(leader, b"w2")
        assert cluster.nodes[leader].alive
    assert not cluster.nodes[leader].alive
    cluster.restart(leader)
    settle(cluster)
    assert_acked_everywhere(cluster)


def test_figure_8_unreliable():
    cluster = Cluster(5, seed=15)
    cluster.set_faults(UNRELIABLE)
    rng = random.Random(15)
    for round_number in range(1000):
        leaders = cluster.claimed_leaders()
        if leaders:
            try:
                cluster.propose(rng.choice(leaders), f"f8-{round_number}".encode())
            except (RaftError, AssertionError):
                pass
        cluster.run_for(rng.randint(0, 500) if rng.random() < 0.1 else rng.randint(0, 13))
        leaders = cluster.claimed_leaders()
        if leaders and rng.random() < 0.5:
            cluster.crash(rng.choice(leaders))
        if len(cluster.live_nodes()) < 3:
            down = [n for n in cluster.nodes if not cluster.nodes[n].alive]
            cluster.restart(rng.choice(down))
    settle(cluster)
    assert_acked_everywhere(cluster)
    assert cluster.checker.acked, "nothing was ever acknowledged"


def _last(cluster: Cluster, node_id: str) -> tuple[int, int]:
    """(last index, its term) of `node_id`'s log on disk."""
    storage = cluster.nodes[node_id].disk.storage
    return storage.last_index(), storage.term(storage.last_index())


def figure_8(cluster: Cluster) -> dict:
    """The Raft paper's figure 8, step by step, on 5 nodes whose APPENDs carry one entry each
    (message_bytes_max=1): a new leader then ships an older term's entry alone, before its
    own no-op, so a follower can ack the old entry by itself. Roles are named after the paper
    (S1 leads terms 2 and 4, S5 term 3; the terms here are whatever the elections reach).

      (a) S1 leads, appends X at index i and gets it to S2 only; S1 crashes.
      (b) S5 is elected by S3, S4 (their logs end before i) and appends its no-op at i; it
          crashes before sending anything.
      (c) S1 restarts and is elected by S2, S3 (S4 is cut off). Its no-op (i+1) reaches S2,
          then X alone reaches S3: X is on a majority (S1, S2, S3), but not of S1's term.
          S1 is cut off and crashes before S3 gets the no-op.
      (d) S5 restarts and is elected by S3, S4 (S2, whose log ends in S1's newer term,
          stays cut off) and overwrites index i everywhere it can.

    A core that counts replicas for an entry of an earlier term commits X in (c): the
    checker then sees a term-(d) leader without it (leader completeness) and, at the latest
    when S5's entry at i is applied, two different entries applied at i (state machine
    safety). The real core commits nothing at i before (d), so the overwrite is legal."""
    assert cluster.config.get("message_bytes_max") == 1 and len(cluster.nodes) == 5
    s1 = cluster.wait_for_leader()
    assert cluster.commit_value(b"f8-base") is not None
    s2, *rest = others(cluster, s1)
    # (a)
    cluster.partition([s1, s2], rest)
    term_a, index = cluster.propose(s1, b"f8-X")
    assert cluster.run_until(lambda: _last(cluster, s2) == (index, term_a), 100)
    cluster.crash(s1)
    # (b) whichever of the three wins is "S5"; cut off and crashed before its no-op leaves.
    s5 = cluster.wait_for_leader(among=rest, min_term=term_a + 1)
    assert s5 is not None
    cluster.isolate(s5)
    cluster.crash(s5)
    term_b = cluster.nodes[s5].disk.hard_state().term
    assert _last(cluster, s5) == (index, term_b), "S5's no-op must sit at X's index"
    s3, s4 = [node_id for node_id in rest if node_id != s5]
    assert _last(cluster, s3)[0] < index and _last(cluster, s4)[0] < index
    # (c) S1 or S2 wins (only they hold X); call the winner S1 from here on.
    cluster.heal()
    cluster.isolate(s5)
    cluster.isolate(s4)
    cluster.restart(s1)
    s1 = cluster.wait_for_leader(among=[s1, s2, s3], min_term=term_b + 1)
    assert s1 is not None
    s2 = others(cluster, s1, s3, s4, s5)[0]
    term_c = cluster.nodes[s1].term
    assert cluster.run_until(lambda: cluster.status(s1).progress[s3]["match"] >= index, 1000)
    cluster.isolate(s1)  # the no-op APPEND to S3 already in flight is lost
    commit_c = cluster.nodes[s1].disk.hard_state().commit
    cluster.crash(s1)
    assert _last(cluster, s3) == (index, term_a), "S3 holds X, not S1's no-op"
    assert _last(cluster, s2) == (index + 1, term_c), "S2 holds S1's no-op too"
    # (d)
    cluster.isolate(s2)
    cluster.reconnect(s4)
    cluster.restart(s5)
    cluster.reconnect(s5)
    winner = cluster.wait_for_leader(among=[s3, s4, s5], min_term=term_c + 1)
    assert winner == s5, "only S5 can win without S1 and S2"
    assert cluster.run_until(lambda: cluster.nodes[s3].disk.storage.term(index) == term_b, 1000)
    return dict(s1=s1, s2=s2, s3=s3, s4=s4, s5=s5, index=index, term_a=term_a, commit_c=commit_c)


def test_figure_8_an_old_term_entry_on_a_majority_is_not_committed():
    cluster = Cluster(5, seed=25, config={"message_bytes_max": 1})
    roles = figure_8(cluster)
    assert roles["commit_c"] < roles["index"], "S1 committed X, an entry of an earlier term, by counting replicas"
    settle(cluster)
    assert_acked_everywhere(cluster)
    assert b"f8-X" not in cluster.checker.value_index, "X was overwritten yet applied"
    for node_id in cluster.nodes:
        applied = cluster.applied_at(node_id, roles["index"])
        assert applied.term != roles["term_a"] and applied.data == b""  # S5's no-op


def test_figure_8_catches_a_core_that_commits_old_term_entries_by_counting(monkeypatch):
    """The scenario has teeth: with the figure-8 rule dropped from the core (an in-memory
    mutant, see mutants.py) the checker reports the committed entry being overwritten."""
    drop_figure_8_rule(monkeypatch)
    cluster = Cluster(5, seed=25, config={"message_bytes_max": 1})
    with pytest.raises(InvariantViolation, match=FIGURE_8_VIOLATION):
        figure_8(cluster)


def test_unreliable_agreement():
    cluster = Cluster(5, seed=16)
    cluster.set_faults(UNRELIABLE)
    cluster.wait_for_leader()
    for round_number in range(50):
        for client in range(4):
            cluster.propose_to_leader(f"u{round_number}-{client}".encode())
        cluster.run_for(20)
    settle(cluster)
    assert_acked_everywhere(cluster)
    assert len(cluster.checker.acked) >= 100


def test_reliable_churn():
    cluster = Cluster(5, seed=17)
    rng = random.Random(17)
    cluster.wait_for_leader()
    for round_number in range(60):
        cluster.propose_to_leader(f"ch{round_number}".encode())
        cluster.run_for(rng.randint(0, 150))
        node_id = rng.choice(sorted(cluster.nodes))
        roll = rng.random()
        if roll < 0.2 and cluster.nodes[node_id].alive:
            cluster.crash(node_id)
        elif roll < 0.5 and not cluster.nodes[node_id].alive:
            cluster.restart(node_id)
        elif roll < 0.7:
            cluster.isolate(node_id)
        elif roll < 0.9:
            cluster.reconnect(node_id)
    settle(cluster)
    assert_acked_everywhere(cluster)
    assert len(cluster.checker.acked) > 10


# -- snapshots ------------------------------------------------------------------------------


def test_snapshot_install_to_a_lagging_follower():
    cluster = Cluster(3, seed=18, config={"snapshot_chunk_bytes": 100})
    leader = cluster.wait_for_leader()
    assert cluster.commit_value(b"s0") is not None
    lagging = others(cluster, leader)[0]
    cluster.isolate(lagging)
    rest = others(cluster, lagging)
    for number in range(30):
        cluster.propose(leader, f"s{number + 1}".encode())
    assert cluster.run_until(lambda: all(cluster.is_acked(f"s{n + 1}".encode()) for n in range(30)), 2000)
    for node_id in rest:
        assert cluster.take_snapshot(node_id) is not None
    installs_before = cluster.sent_counts[MessageKind.INSTALL_SNAPSHOT]
    cluster.reconnect(lagging)
    assert cluster.commit_value(b"s31") is not None
    assert cluster.sent_counts[MessageKind.INSTALL_SNAPSHOT] - installs_before >= 2, "expected a chunked install"
    assert cluster.nodes[lagging].disk.storage.snapshot().meta.index > 1
    expected = [f"s{n}".encode() for n in range(32)]
    for node_id in cluster.nodes:
        assert values_of(cluster, node_id) == expected


def test_snapshots_with_crashes():
    cluster = Cluster(3, seed=19, config={"snapshot_chunk_bytes": 200})
    rng = random.Random(19)
    cluster.wait_for_leader()
    for round_number in range(15):
        for number in range(5):
            cluster.propose_to_leader(f"sc{round_number}-{number}".encode())
        cluster.run_for(rng.randint(20, 200))
        for node_id in cluster.live_nodes():
            if rng.random() < 0.5:
                cluster.take_snapshot(node_id, keep_entries=rng.choice([0, 3]))
        victim = rng.choice(sorted(cluster.nodes))
        if cluster.nodes[victim].alive:
            cluster.crash(victim)
        cluster.run_for(rng.randint(0, 300))
        cluster.restart(victim) if not cluster.nodes[victim].alive else None
    settle(cluster)
    assert_acked_everywhere(cluster)
    assert len({tuple(cluster.applied_values(n)) for n in cluster.nodes}) == 1


# -- membership -----------------------------------------------------------------------------


def wait_conf(cluster: Cluster, node_id: str, predicate, timeout_ms: int = 3000) -> bool:
    return cluster.run_until(lambda: predicate(cluster.nodes[node_id].disk.conf_state), timeout_ms)


def test_learner_catches_up_and_is_promoted():
    cluster = Cluster(3, seed=20)
    leader = cluster.wait_for_leader()
    for number in range(10):
        cluster.propose(leader, f"l{number}".encode())
    assert cluster.commit_value(b"l10") is not None
    cluster.add_node("n4")
    cluster.change_membership(leader, change((ConfChangeKind.ADD_LEARNER, "n4")))
    assert cluster.run_until(lambda: cluster.applied_values("n4")[-1:] == [b"l10"], 3000)
    assert "n4" in cluster.nodes["n4"].disk.conf_state.learners
    # A learner never campaigns, even cut off from the leader.
    cluster.isolate("n4")
    assert not cluster.run_until(lambda: cluster.nodes["n4"].role != Role.FOLLOWER, 5 * cluster.election_timeout_ms())
    cluster.reconnect("n4")
    leader = cluster.wait_for_leader()
    cluster.change_membership(leader, change((ConfChangeKind.ADD_VOTER, "n4")))
    assert wait_conf(cluster, leader, lambda cs: "n4" in cs.voters and not cs.joint)
    # With 4 voters the quorum is 3: it needs n4 once one original node is down.
    victim = others(cluster, leader, "n4")[0]
    cluster.crash(victim)
    assert cluster.commit_value(b"l11", nodes=cluster.live_nodes()) is not None
    assert cluster.applied_values("n4")[-1] == b"l11"


def test_removal_of_the_leader():
    cluster = Cluster(3, seed=21)
    leader = cluster.wait_for_leader()
    assert cluster.commit_value(b"rm1") is not None
    cluster.change_membership(leader, change((ConfChangeKind.REMOVE_NODE, leader)))
    rest = others(cluster, leader)
    new_leader = cluster.wait_for_leader(among=rest)
    assert new_leader is not None and new_leader != leader
    assert wait_conf(cluster, new_leader, lambda cs: cs.voters == frozenset(rest))
    assert cluster.commit_value(b"rm2", nodes=rest) is not None
    # The removed node does not disturb the cluster it left.
    term = cluster.nodes[new_leader].term
    cluster.run_for(10 * cluster.election_timeout_ms())
    assert cluster.single_leader(rest) == new_leader and cluster.nodes[new_leader].term == term
    assert leader not in cluster.claimed_leaders()


def test_partition_during_a_joint_consensus_change():
    cluster = Cluster(["n1", "n2", "n3"], seed=22)
    leader = cluster.wait_for_leader()
    assert cluster.commit_value(b"j1") is not None
    cluster.add_node("n4")
    assert cluster.run_until(lambda: False, 50) is False
    removed = others(cluster, leader, "n4")[0]
    cluster.change_membership(leader, change((ConfChangeKind.ADD_VOTER, "n4"), (ConfChangeKind.REMOVE_NODE, removed)))
    cluster.run_for(5)  # the joint entry is on its way
    # Neither side holds a majority of both C_old and C_new.
    third = others(cluster, leader, "n4", removed)[0]
    side_a, side_b = [leader, removed], [third, "n4"]
    if "n4" in side_a:
        side_a, side_b = side_b, side_a
    cluster.partition(side_a, side_b)
    cluster.propose_to_leader(b"j-during")
    cluster.run_for(5 * cluster.election_timeout_ms())
    cluster.heal()
    assert cluster.commit_value(b"j2", nodes=[leader if leader != removed else third, third, "n4"]) is not None
    final_leader = cluster.wait_for_leader(among=others(cluster, removed))
    assert wait_conf(cluster, final_leader, lambda cs: not cs.joint and removed not in cs.voters and "n4" in cs.voters)


def test_leadership_transfer():
    cluster = Cluster(3, seed=23)
    leader = cluster.wait_for_leader()
    assert cluster.commit_value(b"t1") is not None
    target = others(cluster, leader)[0]
    term = cluster.nodes[leader].term
    cluster.transfer_leadership(leader, target)
    assert cluster.run_until(lambda: cluster.single_leader() == target, cluster.election_timeout_ms())
    assert cluster.nodes[target].term == term + 1
    assert cluster.commit_value(b"t2") is not None
    # To a follower that lags behind: it is caught up first.
    lagging = others(cluster, target)[0]
    cluster.isolate(lagging)
    assert cluster.commit_value(b"t3", nodes=others(cluster, lagging)) is not None
    cluster.reconnect(lagging)
    cluster.transfer_leadership(target, lagging)
    assert cluster.run_until(lambda: cluster.single_leader() == lagging, 2 * cluster.election_timeout_ms())
    assert cluster.commit_value(b"t4") is not None


# -- reads ----------------------------------------------------------------------------------


def test_read_index_is_served_with_a_quorum_and_refused_without():
    cluster = Cluster(3, seed=24)
    leader = cluster.wait_for_leader()
    index = cluster.commit_value(b"rd1")
    follower = others(cluster, leader)[0]
    cluster.read_index(follower, b"read-a")
    assert cluster.run_until(lambda: b"read-a" in cluster.read_results, 500)
    assert cluster.read_results[b"read-a"][1] >= index
    cluster.isolate(leader)
    cluster.read_index(leader, b"read-b")
    cluster.run_for(2 * cluster.election_timeout_ms())
    assert b"read-b" not in cluster.read_results, "a cut-off leader answered a read"
