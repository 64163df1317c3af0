"""The audit's command-line cases (issue 11) against a real 3-node cluster on 127.0.0.1: admin
verbs with a read-write key, add-voter mistakes that would cost quorum, and `cluster start`
while another cluster holds the ports."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from sandctl import cluster as supervisor
from sandctl import state
from tests.security.attack_cluster import environment_without_sandstore, running_cluster
from tests.waiting import wait_until

SANDCTL = str(Path(sys.executable).parent / "sandctl")
NODES = ["n1", "n2", "n3"]


@pytest.fixture
def running(tmp_path, isolated_home):
    with running_cluster(tmp_path, "curve", files_seed=12) as cluster:
        state.remember(tmp_path / "cluster.toml", cluster.data_dir)
        yield cluster


def sandctl(home: Path, *args: str, client: str | None = None) -> subprocess.CompletedProcess:
    env = {**environment_without_sandstore(), "HOME": str(home)}
    if client is not None:
        env["SANDSTORE_CLIENT"] = client
    return subprocess.run([SANDCTL, *args], env=env, capture_output=True, text=True, timeout=120, check=False)


def error_line(result: subprocess.CompletedProcess) -> str:
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    return lines[0]


def membership(cluster) -> tuple:
    status = cluster.client.status(cluster.client.wait_for_leader(20))
    return status["voters"], status["learners"], status["voters_outgoing"]


def test_admin_verbs_with_a_read_write_key_are_refused_with_exit_1(running, isolated_home):
    created = sandctl(isolated_home, "keys", "create-client", "alice", "--role", "read-write")
    assert created.returncode == 0, created.stderr
    # Nodes re-read the keys directory about once a second: until every node has, alice's
    # handshake is refused there (silence, not a refusal line).
    wait_until(lambda: "3/3 voters up" in sandctl(isolated_home, "status", client="alice").stdout,
               "every node accepts alice's new key")
    spare = running.config.node("n3")
    admin_verbs = [
        ["gc"],
        ["snapshot"],
        ["transfer-leader"],
        ["remove-voter", "n3"],
        ["promote", "n3"],
        ["add-voter", "spy", "--raft", "127.0.0.1:1", "--client", "127.0.0.1:2", "--chunk", "127.0.0.1:3"],
    ]
    for verb in admin_verbs:
        result = sandctl(isolated_home, *verb, client="alice")
        assert result.returncode == 1, (verb, result.stdout, result.stderr)
        line = error_line(result)
        assert "client alice (read-write) may not run" in line, line
    # The same key reads and writes files.
    listed = sandctl(isolated_home, "ls", "/", client="alice")
    assert listed.returncode == 0 and "small" in listed.stdout, listed.stderr
    read = subprocess.run([SANDCTL, "cat", "/small"], env={**environment_without_sandstore(), "HOME": str(isolated_home),
                                                           "SANDSTORE_CLIENT": "alice"}, capture_output=True,
                          timeout=60, check=False)
    assert read.returncode == 0 and read.stdout == running.files["/small"]
    assert membership(running) == (NODES, [], [])
    assert spare.id in NODES
    running.assert_intact()


def test_add_voter_refuses_an_existing_member_another_members_address_and_an_invalid_id(running, isolated_home):
    n2, n3 = running.config.node("n2"), running.config.node("n3")
    existing = sandctl(isolated_home, "add-voter", "n2", "--raft", n2.raft, "--client", n2.client, "--chunk", n2.chunk)
    assert existing.returncode == 1, existing.stderr
    assert "n2 is already a member" in error_line(existing)
    shadow = sandctl(isolated_home, "add-voter", "n4", "--raft", n3.raft, "--client", n3.client, "--chunk", n3.chunk)
    assert shadow.returncode == 1, shadow.stderr
    assert "already used by member n3" in error_line(shadow)
    invalid = sandctl(isolated_home, "add-voter", "a b", "--raft", "127.0.0.1:1", "--client", "127.0.0.1:2",
                      "--chunk", "127.0.0.1:3")
    assert invalid.returncode != 0
    assert "a b" in error_line(invalid)
    assert membership(running) == (NODES, [], [])
    running.assert_intact()


def test_cluster_start_on_ports_another_cluster_holds_fails_and_keeps_the_remembered_cluster(running, isolated_home,
                                                                                           tmp_path):
    remembered = state.load_state()
    other_config = tmp_path / "other.toml"
    other_config.write_text((tmp_path / "cluster.toml").read_text())  # the same ports
    other_data = tmp_path / "other-data"
    try:
        result = sandctl(isolated_home, "cluster", "start", "--config", str(other_config), "--data-dir", str(other_data),
                         "--timeout", "20")
        assert result.returncode != 0, result.stdout
        stderr = result.stderr.strip()
        assert stderr.startswith("Error: ") and "Traceback" not in stderr, stderr
        # Each node's own error is shown: all three could not bind their ports.
        for node_id in NODES:
            assert f"node {node_id}" in stderr, stderr
        assert "started" not in result.stdout
        assert state.load_state() == remembered, "the remembered cluster was overwritten"
        for node_id in NODES:
            assert not supervisor.node_process(other_data, node_id).alive
    finally:
        supervisor.stop_nodes(other_data, NODES, grace_seconds=5)
    status = json.loads(sandctl(isolated_home, "status", "--json").stdout or "null")
    assert status is not None
    running.assert_intact()
