"""The audit's attacks (issue 11) replayed against a real 3-node cluster on 127.0.0.1.

With keys (the default), a process without the cluster's secret keys gets no message of any
port processed: its handshake fails, nothing is answered, no term moves, nothing changes. In
explicit plain-text mode the same forged messages arrive (sent with the plain-text
credentials) and validation drops them: every node stays up with every file intact.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from node import protocol
from tests.security.attack_cluster import (
    CHUNK_PORT_ATTACKS,
    CLIENT_PORT_ADMIN_ATTACKS,
    CLIENT_PORT_ATTACKS,
    EVIL,
    FORGED_TERM_JUMP,
    environment_without_sandstore,
    Attacker,
    forged_raft_frames,
    request_reply,
    running_cluster,
)
from tests.waiting import wait_until

NODES = ("n1", "n2", "n3")


@pytest.fixture
def running(request, tmp_path, isolated_home):
    with running_cluster(tmp_path, request.param, files_seed=11) as cluster:
        yield cluster


def _leader_status(cluster) -> dict:
    leader = cluster.client.wait_for_leader(20)
    return cluster.client.status(leader)


def _assert_membership_unchanged(cluster) -> None:
    status = _leader_status(cluster)
    assert (status["voters"], status["learners"], status["voters_outgoing"]) == (list(NODES), [], [])


@pytest.mark.parametrize("running", ["curve"], indirect=True)
@pytest.mark.parametrize("identity", ["none", "foreign-key"])
def test_without_the_cluster_keys_no_message_is_processed_on_any_port(running, identity):
    cluster = running
    term = cluster.highest_term()
    last_index = _leader_status(cluster)["last_index"]
    refused_before = {node: status["security"]["handshakes_refused"] for node, status in cluster.statuses().items()}
    attacker = Attacker(cluster, identity)
    try:
        answered = []
        for node in NODES:
            other = next(peer for peer in NODES if peer != node)
            # As a made-up peer, and as a real one (its routing id and source field).
            for source in (EVIL, other):
                raft = attacker.dealer(node, "raft", routing_id=source)
                for frame in forged_raft_frames(node, term, last_index, source=source):
                    raft.send(frame)
                assert attacker.handshake_outcome(raft) == "failed"
            client = attacker.dealer(node, "client")
            for op, args in CLIENT_PORT_ATTACKS + CLIENT_PORT_ADMIN_ATTACKS:
                client.send(protocol.request(1, op, args))
            chunk = attacker.dealer(node, "chunk")
            for op, args in CHUNK_PORT_ATTACKS:
                chunk.send(protocol.request(1, op, args))
            for dealer in (client, chunk):
                assert attacker.handshake_outcome(dealer) == "failed"
                if dealer.poll(0):
                    answered.append(dealer.recv_multipart())
        assert answered == [], "a node answered a process without the cluster's keys"
    finally:
        attacker.close()

    statuses = cluster.statuses()
    for node, status in statuses.items():
        if identity == "foreign-key":
            # A full CurveZMQ handshake, refused by authorization: 4 dealers on this node's ports.
            # (Without any key the mechanism mismatch ends it earlier, as the attacker saw.)
            assert status["security"]["handshakes_refused"] >= refused_before[node] + 4, node
        assert status["security"]["mode"] == "curve"
    assert cluster.highest_term() < term + FORGED_TERM_JUMP
    _assert_membership_unchanged(cluster)
    cluster.assert_intact()


@pytest.mark.parametrize("running", ["plaintext"], indirect=True)
def test_in_plaintext_mode_validation_drops_every_forged_message_and_no_node_falls(running):
    cluster = running
    for node, status in cluster.statuses().items():
        assert status["security"]["mode"] == "plaintext"
        assert "SECURITY IS OFF" in status["security"]["warning"]
        log_text = (cluster.data_dir / node / "node.log").read_text()
        assert "SECURITY IS OFF" in log_text, f"node {node}'s log does not say security is off"
    shown = subprocess.run([str(Path(sys.executable).parent / "sandctl"), "status", "--config",
                            cluster.config.path, "--data-dir", str(cluster.data_dir)],
                           env=environment_without_sandstore(), capture_output=True, text=True, timeout=60)
    assert "WARNING: SECURITY IS OFF" in shown.stdout, (shown.stdout, shown.stderr)
    term = cluster.highest_term()
    last_index = _leader_status(cluster)["last_index"]
    dropped_before = {node: _dropped(status) for node, status in cluster.statuses().items()}
    attacker = Attacker(cluster, "plaintext")
    try:
        frames_sent = {}
        for node in NODES:
            raft = attacker.dealer(node, "raft")
            frames = forged_raft_frames(node, term, last_index)
            for frame in frames:
                raft.send(frame)
            frames_sent[node] = len(frames)
            assert attacker.handshake_outcome(raft) == "succeeded"  # plain text lets it in...
            client = attacker.dealer(node, "client")
            for op, args in CLIENT_PORT_ATTACKS:
                reply = request_reply(client, op, args)
                assert reply is not None and reply["ok"] is False, (op, args, reply)
                assert reply["error"]["code"] == "BAD_REQUEST", (op, reply)  # ...and validation refuses
            chunk = attacker.dealer(node, "chunk")
            for op, args in CHUNK_PORT_ATTACKS:
                reply = request_reply(chunk, op, args)
                assert reply is not None, op  # answered; only unreferenced chunks may go
        # Every forged peer frame arrived and was dropped before the core (codec or membership).
        for node in NODES:
            wait_until(lambda: _dropped(cluster.client.status(node)) >= dropped_before[node] + frames_sent[node],
                       f"node {node} dropped every forged frame")
    finally:
        attacker.close()
    assert cluster.highest_term() < term + FORGED_TERM_JUMP
    _assert_membership_unchanged(cluster)
    cluster.assert_intact()


def _dropped(status: dict) -> int:
    transport = status["transport"]
    return transport["unknown_sender"] + transport["invalid_frames"] + transport["spoofed"]
