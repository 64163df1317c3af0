"""Membership and leadership changes of a live cluster under writes (issue 3)."""

from __future__ import annotations


import pytest

from node.config import NodeAddress, load_config
from sandctl import cluster as supervisor
from node.errors import NotFound, SandStoreError
from sandctl.client import Client

from e2e_workload import Writer, assert_all_readable, wait_until

pytestmark = pytest.mark.e2e

WAIT_SECONDS = 60.0


def leader_status(client: Client) -> dict | None:
    """The leader's own status, or None if it stepped down between the two calls."""
    leader = client.wait_for_leader(WAIT_SECONDS)
    status = client.status(leader)
    return status if status["role"] == "leader" else None


def test_grow_three_to_five_under_writes_transfer_and_shrink_back(cluster, e2e_tools):
    writer = Writer(cluster.config)
    writer.start()
    writer.wait_for_acknowledged(20)
    config = cluster.config
    for node_id in ("n4", "n5"):
        ports = e2e_tools.free_ports(3)
        address = NodeAddress(node_id, *(f"127.0.0.1:{port}" for port in ports))
        supervisor.add_voter(config, cluster.data_dir, address, spawn=True, deadline_seconds=WAIT_SECONDS)
        cluster.ledger.collect()
        config = load_config(cluster.data_dir / "cluster.toml")
        writer.wait_for_acknowledged(len(writer.acknowledged) + 20)  # writes go on meanwhile
    with Client(config, timeout_seconds=WAIT_SECONDS) as client:
        status = wait_until(lambda: leader_status(client), "a leader")
        assert status["voters"] == ["n1", "n2", "n3", "n4", "n5"] and not status["learners"]

        client.transfer_leader("n5")
        wait_until(lambda: (s := leader_status(client)) and s["id"] == "n5", "n5 to lead")

        # Remove the leader itself: it leads until the change commits, then steps down.
        client.remove_node("n5")
        status = wait_until(lambda: (s := leader_status(client)) and s["id"] != "n5" and "n5" not in s["voters"]
                          and not s["voters_outgoing"] and s, "a leader without n5")
        n4_pid = supervisor.read_pid(cluster.data_dir, "n4")
        removed = cluster.sandctl("remove-voter", "n4")  # the CLI, with the remembered config
        assert removed.returncode == 0, removed.stderr
        status = wait_until(lambda: (s := leader_status(client)) and s["voters"] == ["n1", "n2", "n3"]
                          and not s["voters_outgoing"] and s, "voters back to n1..n3")
        assert status["id"] in ("n1", "n2", "n3")
        assert not supervisor.is_node_process(n4_pid, "n4")  # stopped, as it was supervised here
        assert "n4" not in load_config(cluster.data_dir / "cluster.toml").node_ids()
    writer.wait_for_acknowledged(len(writer.acknowledged) + 20)
    acknowledged = writer.finish()
    assert_all_readable(cluster.client, acknowledged)


def test_stale_reads_are_served_without_a_quorum_linearizable_ones_are_not(cluster):
    cluster.client.mkdir("/seen")
    cluster.client.write_file("/seen/f", b"still here")
    survivor = cluster.config.node_ids()[0]
    with Client(cluster.config, node=survivor, timeout_seconds=WAIT_SECONDS) as pinned:
        wait_until(lambda: _stat_or_none(pinned, "/seen/f"), "the survivor to apply /seen/f")
    for node_id in cluster.config.node_ids()[1:]:
        supervisor.kill_node(cluster.data_dir, node_id)
    stale = cluster.sandctl("stat", "--stale", "/seen", "--json", "--node", survivor)
    assert stale.returncode == 0, stale.stderr
    assert b'"type": "dir"' in stale.stdout
    linearizable = cluster.sandctl("stat", "/seen", "--node", survivor, "--timeout", "2")
    assert linearizable.returncode == 3, (linearizable.returncode, linearizable.stderr)
    assert linearizable.stderr.startswith(b"Error: ") and linearizable.stderr.count(b"\n") == 1
    content = cluster.sandctl("cat", "--stale", "/seen/f", "--node", survivor)
    assert (content.returncode, content.stdout) == (0, b"still here"), content.stderr


@pytest.mark.parametrize("cluster", ["raft-3-ticks-100ms"], indirect=True)
def test_a_stale_read_on_a_follower_is_served_what_it_knows_committed_without_waiting(cluster):
    """A follower holds committed entries back to apply them in a batch (APPLY_HOLD_TICKS: 2.5 s
    at 100 ms ticks); a stale read there releases the hold instead of missing the write."""
    leader = cluster.client.wait_for_leader(WAIT_SECONDS)
    follower = next(node_id for node_id in cluster.config.node_ids() if node_id != leader)
    cluster.client.write_file("/fresh", b"just written")
    written_at = cluster.client.status(leader)["applied"]
    with Client(cluster.config, node=follower, timeout_seconds=WAIT_SECONDS) as pinned:
        wait_until(lambda: pinned.status(follower)["commit"] >= written_at, "the follower to learn the commit")
        assert pinned.stat("/fresh", stale=True)["size"] == len(b"just written")  # at once: no retry


def test_a_node_cut_off_from_the_leader_refuses_to_collect_chunks(cluster):
    survivor = cluster.config.node_ids()[0]
    with Client(cluster.config, node=survivor, timeout_seconds=WAIT_SECONDS) as pinned:
        wait_until(lambda: _gc_outcome(pinned, survivor) == "collected", "the healthy node to collect")
        for node_id in cluster.config.node_ids()[1:]:
            supervisor.kill_node(cluster.data_dir, node_id)
        # Without a leader it cannot know which chunks new files reference: it must not judge.
        wait_until(lambda: _gc_outcome(pinned, survivor) == "refused", "the cut-off node to refuse")
    refused = cluster.sandctl("gc", "--node", survivor)
    assert refused.returncode == 1, (refused.returncode, refused.stderr)
    assert b"garbage collection skipped" in refused.stderr


def _stat_or_none(client: Client, path: str) -> dict | None:
    """A stale stat, or None while the node has not applied the entry that created path yet
    (a follower may lag the write's acknowledgement)."""
    try:
        return client.stat(path, stale=True)
    except NotFound:
        return None


def _gc_outcome(client: Client, node_id: str) -> str:
    try:
        client.gc(node_id, dry_run=True)
    except SandStoreError as error:
        assert error.code == "REFUSED", error
        return "refused"
    return "collected"
