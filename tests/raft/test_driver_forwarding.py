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
