"""A follower forwards its clients' writes to the leader, unless the leader has gone silent."""

import pytest

from node.errors import NoLeader
from raft_harness import Cluster


def test_a_follower_forwards_to_a_live_leader_and_refuses_once_it_has_been_silent_half_an_election_timeout():
    cluster = Cluster("abc")
    cluster.elect("a")
    follower = cluster.nodes["b"]
    forwarded: list[tuple[str, bytes]] = []
    cluster.driver("b").outbox.send_forward = lambda leader, command: forwarded.append((leader, command))

    cluster.driver("b").propose(b"one", 0.0)
    assert forwarded == [("a", b"one")]

    # Heartbeats stop arriving (a partition): just short of half the election timeout, the
    # write still goes to the leader; from there on the client hears "no leader", nothing sent.
    cluster.tick("b", follower.config.election_ticks_min // 2 - 1)
    cluster.driver("b").propose(b"two", 0.0)
    assert forwarded[-1] == ("a", b"two")
    cluster.tick("b")
    with pytest.raises(NoLeader, match="has not been heard from"):
        cluster.driver("b").propose(b"three", 0.0)
    assert len(forwarded) == 2
    assert follower.lead == "a"  # the core still names the leader: only the forward is refused

    # A heartbeat from the leader: forwarding resumes.
    cluster.stabilize(cluster.tick("a", follower.config.heartbeat_ticks))
    cluster.driver("b").propose(b"four", 0.0)
    assert forwarded[-1] == ("a", b"four")


def _dead(node_id: str):
    """A drop rule for stabilize: every message to or from a node whose process died."""
    return lambda message: node_id in (message.source, message.target)


def test_a_follower_whose_connection_to_the_leader_closed_parks_writes_until_a_leader_is_reachable():
    cluster = Cluster("abc", campaign_on_leader_unreachable=True)
    cluster.elect("a")
    follower = cluster.nodes["b"]
    forwarded: list[tuple[str, bytes]] = []
    cluster.driver("b").outbox.send_forward = lambda leader, command: forwarded.append((leader, command))

    follower.leader_unreachable("a")  # its TCP connection to a closed
    cluster.driver("b").propose(b"one", 0.0)  # accepted: its client waits, as for any forward
    cluster.process("b")
    assert forwarded == []  # nothing sent into the dead link

    # The leader was alive after all (the connection came back): its heartbeat ends the wait.
    cluster.stabilize(cluster.tick("a", follower.config.heartbeat_ticks))
    assert forwarded == [("a", b"one")]
    cluster.driver("b").propose(b"two", 0.0)
    cluster.process("b")
    assert forwarded == [("a", b"one"), ("a", b"two")]  # each sent once


def test_writes_forwarded_to_a_leader_that_died_go_to_the_next_leader():
    cluster = Cluster("abc")
    cluster.elect("a")
    b, c = cluster.nodes["b"], cluster.nodes["c"]
    forwarded: list[tuple[str, bytes]] = []
    real_send_forward = cluster.driver("b").outbox.send_forward
    cluster.driver("b").outbox.send_forward = lambda leader, command: forwarded.append((leader, command))
    cluster.driver("b").propose(b"lost with a", 0.0)  # a dies before it reads it
    assert forwarded == [("a", b"lost with a")]

    # c campaigns once b no longer counts a as alive (stickiness): b votes for it.
    assert b.randomized_election_ticks > b.config.election_ticks_min  # b itself does not campaign
    cluster.tick("b", b.config.election_ticks_min)
    cluster.stabilize(cluster.tick("c", c.randomized_election_ticks), drop=_dead("a"))
    assert c.role.name == "LEADER" and b.lead == "c"
    # b's pending forward went to the new leader, with nobody asking again.
    assert forwarded == [("a", b"lost with a"), ("c", b"lost with a")]
    cluster.driver("b").outbox.send_forward = real_send_forward


def test_a_follower_that_becomes_leader_proposes_the_writes_it_had_forwarded_to_the_dead_leader():
    cluster = Cluster("abc", campaign_on_leader_unreachable=True)
    cluster.elect("a")
    b, c = cluster.nodes["b"], cluster.nodes["c"]
    forwarded: list[tuple[str, bytes]] = []
    cluster.driver("b").outbox.send_forward = lambda leader, command: forwarded.append((leader, command))
    cluster.driver("b").propose(b"lost with a", 0.0)  # forwarded just before a's process died

    # Both followers see their connection to a close; b is first in line and campaigns early.
    b.leader_unreachable("a")
    c.leader_unreachable("a")
    for _ in range(b.early_campaign_ticks):
        cluster.tick("c")
        cluster.stabilize(cluster.tick("b"), drop=_dead("a"))
        if b.role.name == "LEADER":
            break
    assert b.role.name == "LEADER"
    cluster.stabilize(drop=_dead("a"))
    assert forwarded == [("a", b"lost with a")]  # not sent to itself: proposed
    for node_id in "bc":
        assert b"lost with a" in [entry.data for entry in cluster.applied[node_id]], node_id


def test_the_leader_tells_a_forwarding_follower_the_commit_at_once():
    # The follower answers its client once it applies the write; without a tick no other APPEND
    # would tell it the commit (its client, waiting, sends nothing more).
    cluster = Cluster("abc")
    cluster.elect("a")
    forwarded: list[tuple[str, bytes]] = []
    cluster.driver("b").outbox.send_forward = lambda leader, command: forwarded.append((leader, command))
    cluster.driver("b").propose(b"via b", 0.0)
    [(leader, command)] = forwarded
    cluster.driver(leader).receive_forward("b", command, 0.0)
    pending = cluster.process_all()
    while pending:  # deliveries only, no tick
        pending = cluster.deliver(pending)
    assert cluster.nodes["a"].log.committed == cluster.nodes["b"].log.committed
    assert b"via b" in [entry.data for entry in cluster.applied["b"]]
    # c forwarded nothing: it learns the commit with the next APPEND or tick, as before.
    assert b"via b" not in [entry.data for entry in cluster.applied["c"]]


def test_the_commit_is_not_sent_again_once_an_append_broadcast_carried_it():
    cluster = Cluster("abc")
    cluster.elect("a")
    leader = cluster.nodes["a"]
    cluster.propose("a", b"told by the broadcast")  # settles: the ticks sent the commit to all
    assert not leader._outbox.commit_unsent
    leader.send_commit("b")
    assert cluster.process("a") == []
