"""Read contexts are unique across nodes and restarts, and every requester is answered.

Before contexts named their node and incarnation, each driver counted its reads from 1:
  - two followers' first reads both carried context 1; the leader took the second for the
    first, answered one follower and left the other to time out;
  - a follower that restarted counted from 1 again, so the answer to a read of its previous
    life, arriving late, matched a new read: served at an old index, a stale read.
Each scenario runs on the production driver; the same scenario with mutants.collide_read_contexts
(the old per-node counter) shows that it fails on the old contexts.
"""

from __future__ import annotations

import pytest

from node.raft.types import MessageKind

from tests.sim import mutants
from tests.sim.cluster import Cluster
from tests.sim.invariants import InvariantViolation


def followers(cluster: Cluster, leader: str) -> list[str]:
    return sorted(node_id for node_id in cluster.nodes if node_id != leader)


def two_followers_read_at_once() -> dict:
    """Both followers of a healthy cluster read at the same moment; what each got."""
    cluster = Cluster(3, seed=11)
    leader = cluster.wait_for_leader()
    assert cluster.commit_value(b"before-the-reads") is not None
    first, second = followers(cluster, leader)
    cluster.read_index(first, b"read-on-first")
    cluster.read_index(second, b"read-on-second")
    labels = (b"read-on-first", b"read-on-second")
    answered = lambda: all(label in cluster.read_results or label in cluster.read_failures for label in labels)
    assert cluster.run_until(answered, 4 * cluster.election_timeout_ms()), "a read got neither answer nor error"
    return {label: ("served" if label in cluster.read_results else cluster.read_failures[label]) for label in labels}


def test_two_followers_reading_at_once_are_both_served():
    assert two_followers_read_at_once() == {b"read-on-first": "served", b"read-on-second": "served"}


def test_with_per_node_counters_one_of_the_two_reads_goes_unanswered(monkeypatch):
    mutants.collide_read_contexts(monkeypatch)
    outcome = two_followers_read_at_once()
    failed = [label for label, what in outcome.items() if what != "served"]
    assert len(failed) == 1, outcome
    assert "could not be confirmed by a leader" in outcome[failed[0]]


def read_answered_after_a_restart() -> Cluster:
    """A follower's read is confirmed, but the answer is held back; the follower restarts,
    misses a write acknowledged meanwhile, and reads again; then the old answer arrives."""
    cluster = Cluster(3, seed=12)
    leader = cluster.wait_for_leader()
    assert cluster.commit_value(b"v-old") is not None
    follower, other = followers(cluster, leader)
    cluster.hold_when = lambda m: m.kind == MessageKind.READ_INDEX_RESPONSE and m.target == follower
    cluster.read_index(follower, b"read-of-the-first-life")
    assert cluster.run_until(lambda: cluster.held, cluster.election_timeout_ms()), "the leader did not answer"
    cluster.hold_when = None
    cluster.crash(follower, "with its read's answer in flight")
    cluster.restart(follower)
    assert cluster.run_until(lambda: cluster.nodes[follower].leader == leader, 2 * cluster.election_timeout_ms())
    cluster.block(leader, follower)  # the follower misses the next write
    cluster.block(other, follower)
    assert cluster.commit_value(b"v-new", nodes=[leader, other]) is not None
    cluster.read_index(follower, b"read-of-the-second-life")  # its answer to come is lost
    cluster.run_for(5)
    cluster.deliver_held()  # the first life's answer arrives now
    # Reads expire after two election timeouts (Cluster.read_timeout_seconds): wait past that.
    second = b"read-of-the-second-life"
    cluster.run_until(lambda: second in cluster.read_results or second in cluster.read_failures,
                      3 * cluster.election_timeout_ms())
    return cluster


def test_an_answer_meant_for_the_previous_incarnation_serves_no_read():
    cluster = read_answered_after_a_restart()
    assert b"read-of-the-second-life" not in cluster.read_results
    assert b"read-of-the-second-life" in cluster.read_failures  # answered with an error, not left waiting


def test_with_per_node_counters_the_old_answer_serves_a_stale_read(monkeypatch):
    mutants.collide_read_contexts(monkeypatch)
    with pytest.raises(InvariantViolation, match="stale read"):
        read_answered_after_a_restart()


def test_a_read_waiting_for_a_follower_to_apply_expires_with_a_clear_error():
    cluster = Cluster(3, seed=13)
    leader = cluster.wait_for_leader()
    follower, other = followers(cluster, leader)
    # The follower hears the leader's heartbeats but never gets the next entries.
    cluster.hold_when = lambda m: m.kind == MessageKind.APPEND and m.target == follower
    assert cluster.commit_value(b"v-missed", nodes=[leader, other]) is not None
    cluster.read_index(follower, b"read-behind")  # confirmed at an index it cannot reach
    cluster.run_for(3 * cluster.election_timeout_ms())
    assert b"read-behind" not in cluster.read_results
    error = cluster.read_failures[b"read-behind"]
    assert f"node {follower} has applied up to index" in error and "not catching up" in error, error
