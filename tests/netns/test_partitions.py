"""Partitions on real networks (silence, not refused connections), healed under writes.

Every scenario writes continuously from the client namespace and checks, at the end, that every
acknowledged write reads back (none lost), that writes were acknowledged after the cut where a
majority stayed connected, and after the heal, within generous deadlines (waits on conditions).
"""

from __future__ import annotations

import time

import pytest

pytestmark = pytest.mark.e2e

DIRECTORY = "/p"


def start_writes(agent) -> None:
    agent.ask({"op": "start_writers", "directory": DIRECTORY})
    agent.wait("a first acknowledged write", lambda a: a.acks_sent_after(0.0) > 0)


def writes_acknowledged_after(agent, moment: float, count: int = 1) -> None:
    agent.wait(f"{count} writes sent after t={moment:.3f} acknowledged", lambda a: a.acks_sent_after(moment) >= count)


def leader_commit(agent) -> int:
    leader = agent.wait_for_leader()
    return agent.status()[leader]["commit"]


def all_caught_up(agent, cluster, node_ids=None) -> None:
    node_ids = node_ids or cluster.node_ids
    target = leader_commit(agent)
    agent.wait(f"{', '.join(node_ids)} applied index {target}", lambda a: a.caught_up(node_ids, target))


def no_acknowledged_write_lost(agent) -> dict:
    agent.ask({"op": "stop_writers"})
    verified = agent.ask({"op": "verify"})
    assert verified["acknowledged"] > 0
    assert verified["lost"] == [], f"acknowledged writes lost: {verified['lost'][:10]}"
    assert verified["unverified"] == 0
    return verified


def now() -> float:
    return time.monotonic()


def test_isolated_leader_is_replaced_and_rejoins_after_the_heal(netns):
    lab, cluster, agent = netns(3)
    start_writes(agent)
    old_leader = agent.wait_for_leader()
    lab.isolate(cluster.host(old_leader))
    cut_at = now()
    new_leader = agent.wait_for_leader(exclude=(old_leader,))
    writes_acknowledged_after(agent, cut_at, 50)  # the majority moved on while the old leader was cut off
    lab.heal()
    healed_at = now()
    writes_acknowledged_after(agent, healed_at, 20)
    all_caught_up(agent, cluster)
    status = agent.status()
    assert status[old_leader]["role"] == "follower"
    assert status[old_leader]["term"] >= status[new_leader]["term"] - 1
    no_acknowledged_write_lost(agent)


def test_follower_isolated_past_the_log_catches_up_from_a_snapshot(netns):
    lab, cluster, agent = netns(3, settings={"snapshot_threshold_entries": 64, "snapshot_trailing_entries": 8,
                                         "snapshot_log_to_state_ratio": 0.0})
    start_writes(agent)
    leader = agent.wait_for_leader()
    follower = next(node for node in cluster.node_ids if node != leader)
    installed_before = agent.status()[follower]["snapshots_installed"]
    lab.isolate(cluster.host(follower))
    cut_at = now()
    # Far more entries than the leader keeps after a snapshot: the follower needs the image.
    writes_acknowledged_after(agent, cut_at, 400)
    assert agent.status()[follower] is None  # really cut off: its status does not come back
    lab.heal()
    healed_at = now()
    all_caught_up(agent, cluster)
    writes_acknowledged_after(agent, healed_at, 20)  # the others kept taking writes meanwhile
    status = agent.status()
    assert status[follower]["snapshots_installed"] > installed_before
    no_acknowledged_write_lost(agent)


def test_bridge_node_joins_two_halves_and_writes_continue(netns):
    lab, cluster, agent = netns(5)
    start_writes(agent)
    leader = agent.wait_for_leader()
    others = [node for node in cluster.node_ids if node != leader]
    bridge, half_a, half_b = others[0], [leader, others[1]], others[2:]
    for first in half_a:
        for second in half_b:
            lab.cut_both(cluster.host(first), cluster.host(second))
    cut_at = now()
    # The leader reaches its half and the bridge: 3 of 5, so writes go on.
    writes_acknowledged_after(agent, cut_at, 50)
    lab.heal()
    healed_at = now()
    writes_acknowledged_after(agent, healed_at, 20)
    all_caught_up(agent, cluster)
    assert bridge in agent.status()
    no_acknowledged_write_lost(agent)


@pytest.mark.parametrize("towards_the_leader", [False, True], ids=["from-the-leader", "towards-the-leader"])
def test_one_direction_cut_heals(netns, towards_the_leader):
    lab, cluster, agent = netns(3)
    start_writes(agent)
    leader = agent.wait_for_leader()
    follower = next(node for node in cluster.node_ids if node != leader)
    source, target = (follower, leader) if towards_the_leader else (leader, follower)
    lab.cut(cluster.host(source), cluster.host(target))  # source -> target only
    cut_at = now()
    writes_acknowledged_after(agent, cut_at, 50)
    lab.heal()
    healed_at = now()
    writes_acknowledged_after(agent, healed_at, 20)
    all_caught_up(agent, cluster)
    no_acknowledged_write_lost(agent)


def test_node_restarted_while_messages_to_its_old_incarnation_are_queued(netns):
    lab, cluster, agent = netns(3)
    start_writes(agent)
    leader = agent.wait_for_leader()
    follower = next(node for node in cluster.node_ids if node != leader)
    lab.isolate(cluster.host(follower))
    cut_at = now()
    # The leader keeps sending into the old connection, where it sits unacknowledged ...
    writes_acknowledged_after(agent, cut_at, 20)
    # ... while the follower's process is replaced by a new one on the same address.
    cluster.kill(follower)
    cluster.start(follower)
    writes_acknowledged_after(agent, cut_at, 60)
    lab.heal()
    healed_at = now()
    writes_acknowledged_after(agent, healed_at, 20)
    all_caught_up(agent, cluster)
    no_acknowledged_write_lost(agent)
