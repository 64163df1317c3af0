"""status, member list, promote and inspect log --all-nodes against real node processes:
the health line and exit status follow the cluster, a learner is shown as one and promoted,
the log view lines up one index across nodes; a stopped cluster gets the same hint from
every verb."""

from __future__ import annotations

import json

import pytest
from e2e_workload import wait_until

from node.config import NodeAddress
from node.errors import NotLeader
from sandctl import cluster as supervisor

pytestmark = pytest.mark.e2e

STATUS_WIDTH_MAX = 100
START_HINT = "is the cluster running? (start it with `sandctl cluster start`)"


def lines_of(result) -> list[str]:
    return result.stdout.decode().splitlines()


def test_status_health_follows_the_cluster_and_fits_100_columns(cluster):
    healthy = cluster.sandctl("status")
    assert healthy.returncode == 0, healthy.stderr.decode()
    lines = lines_of(healthy)
    assert lines[0].startswith("healthy: leader n") and lines[0].endswith(", 3/3 voters up")
    assert all(len(line) <= STATUS_WIDTH_MAX for line in lines), lines
    assert any(len(line) > STATUS_WIDTH_MAX for line in lines_of(cluster.sandctl("status", "--wide")))

    followers = [node_id for node_id in cluster.config.node_ids() if node_id != cluster.client.wait_for_leader(10)]
    assert cluster.sandctl("node", "kill", followers[0]).returncode == 0
    one_down = cluster.sandctl("status")
    assert one_down.returncode == 0
    assert lines_of(one_down)[0].endswith(", 2/3 voters up")
    assert cluster.sandctl("node", "kill", followers[1]).returncode == 0

    def lost_quorum():
        result = cluster.sandctl("status", "--timeout", "2")
        return result if result.returncode == 3 else None

    result = wait_until(lost_quorum, "status to report the lost quorum", 30)
    # The lone leader may still think it leads for a moment, then steps down: either way unhealthy.
    assert lines_of(result)[0].startswith("unhealthy: ") and "1/3 voters up" in lines_of(result)[0]


def test_a_learner_is_listed_as_one_and_promote_makes_it_a_voter(cluster, e2e_tools):
    raft, client, chunk = e2e_tools.free_ports(3)
    address = NodeAddress(id="n4", raft=f"127.0.0.1:{raft}", client=f"127.0.0.1:{client}", chunk=f"127.0.0.1:{chunk}")
    grown = supervisor.write_cluster_config(cluster.config.with_node(address), cluster.data_dir)
    pid = supervisor.spawn_node(grown, cluster.data_dir, "n4", join=True)
    cluster.ledger.pids[pid] = "n4"
    cluster.client.add_learner("n4", address.raft, address.client, address.chunk)

    def listed_as_learner():
        result = cluster.sandctl("member", "list", "--json")
        members = {m["node"]: m for m in json.loads(result.stdout)["members"]} if result.returncode == 0 else {}
        n4 = members.get("n4")
        return members if n4 and n4["membership"] == "learner" and n4["state"] == "up" else None

    members = wait_until(listed_as_learner, "n4 to answer as a learner", 30)
    assert members["n4"]["raft"] == address.raft and members["n4"]["client"] == address.client
    status = cluster.sandctl("status")
    assert lines_of(status)[0].endswith(", 3/3 voters up, 1 learner")
    rows = {line.split()[0]: line.split() for line in lines_of(status)[3:] if line.split()}
    assert rows["n4"][2] == "learner"

    # A follower knows nothing of n4's progress: it sends the promote on to the leader instead
    # of refusing it as "not caught up" (which it did, and a client that asked it first was
    # refused for as long as it kept asking it).
    leader = cluster.client.wait_for_leader(10)
    follower = next(node_id for node_id in cluster.config.node_ids() if node_id not in (leader, "n4"))
    with pytest.raises(NotLeader) as redirected:
        cluster.client.call("promote", {"node": "n4"}, node=follower)
    assert redirected.value.leader == leader

    def promoted():
        result = cluster.sandctl("promote", "n4")
        return result if result.returncode == 0 else None  # refused (exit 1) while it catches up

    result = wait_until(promoted, "the leader to promote n4", 30)
    assert lines_of(result)[:2] == ["node        n4", "membership  voter"]
    listed = lines_of(cluster.sandctl("member", "list"))
    assert listed[0].endswith(", 4/4 voters up")
    assert [line.split()[1] for line in listed[3:]] == ["voter"] * 4


def test_inspect_log_all_nodes_shows_the_newest_entries_applied_everywhere(cluster, tmp_path):
    local = tmp_path / "f.txt"
    local.write_bytes(b"x")
    for number in range(5):
        assert cluster.sandctl("put", str(local), f"/f{number}.txt").returncode == 0
    newest = json.loads(cluster.sandctl("inspect", "log", "--limit", "4", "--json").stdout)
    assert newest["entries"][-1]["index"] == newest["last_index"]  # the newest page, not the oldest
    paths = [entry["command"].get("path") for entry in newest["entries"] if entry["kind"] == "normal"]
    assert paths[-2:] == ["/f3.txt", "/f4.txt"]  # (a leader change may add a noop entry after them)
    table = lines_of(cluster.sandctl("inspect", "log", "--limit", "4"))
    assert table[1].split() == ["index", "term", "op", "path", "details"]
    assert any(line.split()[2:4] == ["write_file", "/f4.txt"] for line in table[3:])

    def applied_everywhere():
        result = cluster.sandctl("inspect", "log", "--all-nodes", "--limit", "8", "--json")
        rows = json.loads(result.stdout)["entries"] if result.returncode == 0 else []
        done = rows and all(set(row["nodes"].values()) == {"applied"} for row in rows)
        return rows if done else None

    rows = wait_until(applied_everywhere, "every node to apply the newest entries", 30)
    assert [row["path"] for row in rows if row["op"] == "write_file"][-2:] == ["/f3.txt", "/f4.txt"]
    assert all(sorted(row["nodes"]) == ["n1", "n2", "n3"] for row in rows)
    header = lines_of(cluster.sandctl("inspect", "log", "--all-nodes", "--limit", "8"))[1]
    assert header.split() == ["index", "term", "op", "path", "n1", "n2", "n3"]


def test_a_stopped_cluster_gets_the_same_hint_from_every_verb(cluster):
    assert cluster.sandctl("cluster", "stop").returncode == 0
    messages = set()
    for verb in (["ls", "/"], ["kill-leader"], ["snapshot"], ["inspect", "log"]):
        result = cluster.sandctl(*verb)
        assert result.returncode == 3, (verb, result.stderr.decode())
        lines = result.stderr.decode().splitlines()
        assert len(lines) == 1 and lines[0].endswith(START_HINT), verb
        messages.add(lines[0])
    assert len(messages) == 1
    status = cluster.sandctl("status")
    assert status.returncode == 3 and lines_of(status)[0].endswith(START_HINT)
