"""A node whose data directory was wiped, restarted as if nothing happened (not with --join),
must not rejoin with an empty log. A follower learns it from its leader's first heartbeat
(the leader commits beyond its log on the strength of its earlier acks); a wiped leader, whose
successor knows no acks of it, from the first message of a peer that saw it campaign in a later
term than its empty disk holds. Either stops with one line that names the fix, and a non-zero
status."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from node.config import node_data_dir
from sandctl import cluster as supervisor

pytestmark = pytest.mark.e2e

EXIT_DEADLINE_SECONDS = 60


@pytest.mark.parametrize("role", ["follower", "leader"])
def test_a_node_restarted_on_a_wiped_data_directory_stops_with_the_fix(cluster, role):
    leader = cluster.client.wait_for_leader(30)
    for number in range(20):  # entries the followers acknowledge
        cluster.client.mkdir(f"/d{number}")
    victim = leader if role == "leader" else next(node_id for node_id in cluster.config.node_ids() if node_id != leader)
    supervisor.kill_node(cluster.data_dir, victim)
    if role == "leader":
        cluster.client.wait_for_leader(30, exclude=[victim])  # its successor never saw it acknowledge anything
    directory = node_data_dir(cluster.data_dir, victim)
    shutil.rmtree(directory)
    command = [sys.executable, "-m", "node.cli", "node", "--config", str(Path(cluster.config_path).resolve()),
               "--id", victim, "--data-dir", str(Path(cluster.data_dir).resolve())]
    process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               env=cluster.env())
    cluster.ledger.pids[process.pid] = victim
    try:
        _, stderr = process.communicate(timeout=EXIT_DEADLINE_SECONDS)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    text = stderr.decode()
    assert process.returncode != 0, text
    assert "Traceback" not in text, text
    errors = [line for line in text.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 1, text
    line = errors[0]
    assert f"node {victim}'s data directory {directory}" in line, line
    if role == "follower":
        assert "is empty but the cluster" in line, line
    else:
        assert "holds term 1 but node" in line and "saw this node at term" in line, line
    assert "this node lost its disk" in line, line
    assert f"sandctl remove-voter {victim}" in line and "sandstore node --join" in line, line
    # The others go on serving.
    cluster.client.mkdir("/after")
