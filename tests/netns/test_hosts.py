"""Clusters across hosts, configured the way the README's "Running on several machines" says:
each node binds the wildcard and advertises its host's address, started with
`sandstore node --config FILE --id ID` in its own namespace; clients run on another host."""

from __future__ import annotations

import json
import os
import shutil

import pytest

pytestmark = pytest.mark.e2e

SMALL = b"hello from another host\n"
CHUNKED_BYTES = 300_000  # above inline_bytes_max: stored in chunks on the chunk ports


def sandctl_ok(cluster, *args: str) -> str:
    result = cluster.sandctl(*args)
    assert result.returncode == 0, f"sandctl {' '.join(args)}: {result.stderr.strip()}"
    return result.stdout


def put_files(cluster, tmp_path) -> dict[str, bytes]:
    files = {"/docs/small.txt": SMALL, "/docs/chunked.bin": os.urandom(CHUNKED_BYTES)}
    sandctl_ok(cluster, "mkdir", "-p", "/docs")
    for remote, data in files.items():
        local = tmp_path / remote.rsplit("/", 1)[1]
        local.write_bytes(data)
        sandctl_ok(cluster, "put", str(local), remote)
    return files


def read_back(cluster, tmp_path, files: dict[str, bytes], *node_args: str) -> None:
    for remote, data in files.items():
        copy = tmp_path / ("copy-" + remote.rsplit("/", 1)[1])
        sandctl_ok(cluster, "get", *node_args, remote, str(copy))
        assert copy.read_bytes() == data, remote


@pytest.mark.parametrize("ipv6", [False, True], ids=["ipv4", "ipv6"])
def test_three_hosts_bind_the_wildcard_and_advertise_their_address(netns, tmp_path, ipv6):
    lab, cluster, agent = netns(3, ipv6=ipv6)
    config_text = cluster.config_path.read_text()
    assert ('raft_bind = "[::]:7001"' if ipv6 else 'raft_bind = "0.0.0.0:7001"') in config_text
    assert f'raft = "{cluster.address("n1", "raft")}"' in config_text
    assert cluster.address("n1", "raft").startswith("[" if ipv6 else "10.")
    files = put_files(cluster, tmp_path)
    read_back(cluster, tmp_path, files)
    assert sandctl_ok(cluster, "cat", "/docs/small.txt").encode() == SMALL
    status = json.loads(sandctl_ok(cluster, "status", "--json"))
    text = json.dumps(status)
    for node in cluster.node_ids:
        assert node in text
    statuses = agent.status()
    assert sorted(statuses) == cluster.node_ids
    assert [s["role"] for s in statuses.values()].count("leader") == 1
    assert all(s is not None and s["applied"] >= 1 for s in statuses.values())


def voters(agent) -> list[str]:
    leader = agent.wait_for_leader()
    return sorted(agent.status()[leader]["voters"] or [])


def member(agent, node_id: str) -> bool:
    status = agent.status()[agent.wait_for_leader()]
    return any(node_id in (status[key] or []) for key in ("voters", "voters_outgoing", "learners"))


def add_voter(cluster, node_id: str) -> None:
    sandctl_ok(cluster, "add-voter", node_id, "--raft", cluster.address(node_id, "raft"),
               "--client", cluster.address(node_id, "client"), "--chunk", cluster.address(node_id, "chunk"))


def test_a_host_that_lost_its_disk_comes_back_and_a_new_host_joins(netns, tmp_path):
    lab, cluster, agent = netns(3, extra_hosts=1)
    files = put_files(cluster, tmp_path)

    # The leader's disk is lost (a wiped follower is tests/e2e/test_wiped_disk.py). Its successor
    # never saw it acknowledge anything, but saw it campaign: started again, the lost node hears
    # that from the first message it gets and says so in one line naming the way back ...
    lost = agent.wait_for_leader()
    cluster.kill(lost)
    agent.wait_for_leader(exclude=(lost,))
    shutil.rmtree(cluster.data_dir / lost)
    wiped = cluster.start(lost)
    agent.wait(f"the wiped {lost} refuses to run", lambda a: wiped.poll() is not None)
    assert wiped.returncode != 0
    refusal = [line for line in (cluster.logs_dir / f"{lost}.err").read_text().splitlines()
               if line.startswith("Error:")]
    assert len(refusal) == 1 and f"remove-voter {lost}" in refusal[0] and "--join" in refusal[0], refusal
    # ... which is: remove it, then add it back as a new member from an empty directory.
    sandctl_ok(cluster, "remove-voter", lost)
    agent.wait(f"{lost} is no member at all (the joint configuration left)", lambda a: not member(a, lost))
    shutil.rmtree(cluster.data_dir / lost)
    cluster.start(lost, join=True)
    add_voter(cluster, lost)
    agent.wait("n1 n2 n3 are the voters again", lambda a: voters(a) == ["n1", "n2", "n3"])

    # A new host: its entry added to the config, `sandstore node --join`, then add-voter.
    cluster.place("n4", "h4")
    cluster.write_config(["n1", "n2", "n3", "n4"])
    cluster.start("n4", join=True)
    add_voter(cluster, "n4")
    agent.wait("n1 n2 n3 n4 are the voters", lambda a: voters(a) == ["n1", "n2", "n3", "n4"])

    read_back(cluster, tmp_path, files)
    # The returned and the new member serve every file from their own state.
    for node in (lost, "n4"):
        agent.wait(f"{node} caught up", lambda a: a.caught_up([node], a.status()[a.wait_for_leader()]["commit"]))
        for remote, data in files.items():
            copy = tmp_path / f"{node}-{remote.rsplit('/', 1)[1]}"
            sandctl_ok(cluster, "get", "--node", node, "--stale", remote, str(copy))
            assert copy.read_bytes() == data, (node, remote)
