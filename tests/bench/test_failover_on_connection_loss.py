"""A leader killed with SIGKILL is replaced because its followers saw its connections close,
not because their election timeout ran out.

The cluster starts with ordinary timeouts (a first leader in a second), then its followers are
restarted with an election timeout of 30-60 s. When the leader is killed, only the lost-link
path (PeerTransport.take_lost_links -> RaftNode.leader_unreachable: a pre-vote after a few
silent heartbeats) can elect a new leader within the 15 s deadline below. With that wiring
removed, or campaign_on_leader_unreachable off, no leader appears in time and the test fails.
"""

from __future__ import annotations

import dataclasses

import pytest

from node.config import load_config, render_config
from sandctl.bench_cluster import LocalCluster
from sandctl.client import Client
from tests.waiting import wait_until

pytestmark = [pytest.mark.e2e]

# tick 10 ms: heartbeat 20 ms, election timeout 30-60 s, far past the wait for a new leader.
PATIENT = {"heartbeat_ticks": 2, "election_ticks_min": 3000, "election_ticks_max": 6000,
           "campaign_on_leader_unreachable": True}
NEW_LEADER_SECONDS = 15.0
assert NEW_LEADER_SECONDS * 1000 < PATIENT["election_ticks_min"] * 10


def _leader_among(client: Client, node_ids: list[str]) -> str | None:
    answers = client.broadcast("status", {}, node_ids, timeout_seconds=1.0)
    leaders = {node for node, answer in answers.items() if isinstance(answer, dict) and answer.get("role") == "leader"}
    return leaders.pop() if len(leaders) == 1 else None


def _follows(client: Client, node: str, leader: str) -> bool:
    """node follows leader, and its own link to the leader is up: only a link that was up can
    be seen to close (a restarted node may hear the leader before its link finished the
    handshake; killing the leader then would leave it nothing but the election timeout)."""
    answer = client.broadcast("status", {}, [node], timeout_seconds=1.0).get(node)
    if not isinstance(answer, dict) or answer.get("leader") != leader:
        return False
    link = answer.get("transport", {}).get("links", {}).get(leader, {})
    return bool(link.get("up"))


def test_a_killed_leader_is_replaced_well_within_the_election_timeout(isolated_home, tmp_path):
    with LocalCluster(tmp_path / "cluster", 3) as cluster:
        first = cluster.start()
        patient_path = cluster.directory / "patient.toml"
        patient_path.write_text(render_config(dataclasses.replace(cluster.config, **PATIENT)))
        patient = load_config(patient_path)
        followers = [node for node in cluster.config.node_ids() if node != first]
        with Client(cluster.config, timeout_seconds=10.0) as client:
            client.mkdir("/before", parents=True)
            ordinary, cluster.config = cluster.config, patient
            try:
                for follower in followers:  # one at a time: the leader keeps its quorum
                    cluster.kill(follower)
                    cluster.restart(follower)
                    wait_until(lambda: _follows(client, follower, first), f"{follower} back, following {first}")
            finally:
                cluster.config = ordinary
            cluster.kill(first)
            second = wait_until(lambda: _leader_among(client, followers), "a new leader after the kill",
                                deadline_seconds=NEW_LEADER_SECONDS)
            assert second in followers
            client.mkdir("/after", parents=True)  # the new leader commits
            assert client.stat("/before")["type"] == "dir"


def test_the_setting_is_on_by_default_and_round_trips_through_a_config_file(tmp_path):
    from node.config import ClusterConfig, ConfigError

    config = load_config(_written(tmp_path / "a.toml", render_config(
        dataclasses.replace(ClusterConfig(nodes=()), campaign_on_leader_unreachable=False, nodes=_one_node()))))
    assert config.campaign_on_leader_unreachable is False
    default = load_config(_written(tmp_path / "b.toml", render_config(ClusterConfig(nodes=_one_node()))))
    assert default.campaign_on_leader_unreachable is True
    # The defaults leave an election timeout of many heartbeats (a stalled loop is no crash).
    assert default.election_ticks_min >= 10 * default.heartbeat_ticks
    bad = render_config(ClusterConfig(nodes=_one_node())).replace(
        "campaign_on_leader_unreachable = true", 'campaign_on_leader_unreachable = "yes"')
    with pytest.raises(ConfigError, match="true or false"):
        load_config(_written(tmp_path / "c.toml", bad))


def _one_node():
    from node.config import NodeAddress

    return (NodeAddress(id="n1", raft="127.0.0.1:7001", client="127.0.0.1:8001", chunk="127.0.0.1:9001"),)


def _written(path, text: str):
    path.write_text(text)
    return path
