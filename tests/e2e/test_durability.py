"""No acknowledged write is lost: SIGKILL of the leader, of a follower, of every node, under load.

Each test runs a writer thread with its own Client that records exactly the writes the
cluster acknowledged; after the faults every one of them must read back with its content.
"""

from __future__ import annotations

import os
import random
import signal
import time

import msgpack
import pytest
import zmq

from node import protocol
from node.errors import SandStoreError
from sandctl import cluster as supervisor
from sandctl.client import Client
from tests.security.keyed_sockets import keyed_dealer, node_of_address

from e2e_workload import WAIT_SECONDS, Writer, assert_all_readable

pytestmark = pytest.mark.e2e



def leader_of(client: Client) -> str:
    return client.wait_for_leader(WAIT_SECONDS)


def test_sigkill_leader_under_writes_loses_nothing(cluster):
    writer = Writer(cluster.config)
    writer.start()
    writer.wait_for_acknowledged(30)
    old_leader = leader_of(cluster.client)
    supervisor.kill_node(cluster.data_dir, old_leader)
    before_kill = len(writer.acknowledged)
    writer.wait_for_acknowledged(before_kill + 30)  # writes go on under the new leader
    new_leader = leader_of(cluster.client)
    assert new_leader != old_leader
    acknowledged = writer.finish()
    assert_all_readable(cluster.client, acknowledged)


def test_sigkilled_follower_restarts_and_catches_up(cluster):
    leader = leader_of(cluster.client)
    follower = next(node_id for node_id in cluster.config.node_ids() if node_id != leader)
    supervisor.kill_node(cluster.data_dir, follower)
    writer = Writer(cluster.config)
    writer.start()
    writer.wait_for_acknowledged(50)
    acknowledged = writer.finish()
    supervisor.spawn_node(cluster.config, cluster.data_dir, follower)
    cluster.ledger.collect()
    # The restarted follower must hold every acknowledged write in its own state.
    pinned = Client(cluster.config, node=follower, timeout_seconds=WAIT_SECONDS)
    try:
        deadline = time.monotonic() + WAIT_SECONDS
        while True:
            try:
                status = pinned.status(follower)
                leader_status = cluster.client.status(leader)
                if status["applied"] >= leader_status["commit"]:
                    break
            except SandStoreError:
                pass
            assert time.monotonic() < deadline, "follower did not catch up"
            time.sleep(0.02)
        for number in acknowledged:
            _, data = pinned.read(f"/load/{number}", stale=True)
            assert data == f"value-{number}".encode()
    finally:
        pinned.close()


def test_sigkill_every_node_under_writes_then_restart_loses_nothing(cluster):
    writer = Writer(cluster.config)
    writer.start()
    writer.wait_for_acknowledged(40)
    pids = {node_id: supervisor.read_pid(cluster.data_dir, node_id) for node_id in cluster.config.node_ids()}
    for pid in pids.values():
        os.kill(pid, signal.SIGKILL)  # all at once, mid-write
    deadline = time.monotonic() + WAIT_SECONDS
    for node_id, pid in pids.items():
        while supervisor.is_node_process(pid, node_id):
            assert time.monotonic() < deadline, f"{node_id} survived SIGKILL"
            time.sleep(0.01)
    acknowledged = list(writer.acknowledged)  # anything acknowledged before every node died
    writer.stop_event.set()
    for node_id in cluster.config.node_ids():
        supervisor.spawn_node(cluster.config, cluster.data_dir, node_id)
    cluster.ledger.collect()
    leader_of(cluster.client)
    finished = writer.finish()
    assert set(acknowledged) <= set(finished)
    assert_all_readable(cluster.client, finished)


def raw_request(config, address: str, op: str, args: dict, request_id: int = 1) -> dict:
    """One request on a fresh DEALER, exactly as given (no session added, no retry)."""
    context = zmq.Context()
    socket = _raw_dealer(context, config, address)
    try:
        socket.send(protocol.request(request_id, op, args))
        assert socket.poll(WAIT_SECONDS * 1000), f"no reply to {op}"
        return msgpack.unpackb(socket.recv())
    finally:
        socket.close()
        context.term()


def test_retried_write_with_same_session_applies_once(cluster):
    cluster.client.mkdir("/once")
    leader = cluster.config.node(leader_of(cluster.client)).client
    args = {"path": "/once/a", "parents": False, "client": "retry-test", "seq": 1}
    first = raw_request(cluster.config, leader, "mkdir", args)
    second = raw_request(cluster.config, leader, "mkdir", args)  # a retry: same client and seq
    assert first["ok"] and second["ok"], (first, second)
    assert first["result"] == second["result"]  # answered from the session, not applied again
    assert [entry["path"] for entry in cluster.client.ls("/once")] == ["/once/a"]
    # A new seq of the same client is a new write: now the directory exists.
    third = raw_request(cluster.config, leader, "mkdir", {**args, "seq": 2})
    assert third["ok"] is False and third["error"]["code"] == "EXISTS"
    # An older seq than the last applied one is refused as stale, never applied.
    fourth = raw_request(cluster.config, leader, "mkdir", {**args, "path": "/once/b", "seq": 1})
    assert fourth["ok"] is True and fourth["result"] == first["result"] or fourth["error"]["code"] == "STALE"
    assert [entry["path"] for entry in cluster.client.ls("/once")] == ["/once/a"]


def _raw_dealer(context: zmq.Context, config, address: str) -> zmq.Socket:
    """A DEALER with the cluster's admin key (every port authenticates); on a raft port, with
    another member's node key, so that what it sends reaches validation."""
    node_id = node_of_address(config, address)
    port = next(port for port in ("raft", "client", "chunk") if getattr(config.node(node_id), port) == address)
    peer = next(other for other in config.node_ids() if other != node_id) if port == "raft" else None
    return keyed_dealer(context, config, node_id, port, as_node=peer)


def test_garbage_on_client_and_peer_ports_leaves_every_node_serving(cluster):
    rng = random.Random(20261122)
    print("seed 20261122")
    context = zmq.Context()
    try:
        for address in cluster.config.nodes:
            client_socket = _raw_dealer(context, cluster.config, address.client)
            peer_socket = _raw_dealer(context, cluster.config, address.raft)
            garbage = [
                bytes(rng.getrandbits(8) for _ in range(rng.randrange(1, 200))),
                msgpack.packb({"v": 1, "id": "x", "op": 5}),
                msgpack.packb([1, 2, 3]),
                msgpack.packb({"v": 1, "id": 7, "op": "stat", "args": {"path": 12}}),
                msgpack.packb({"v": 99, "id": 8, "op": "ping", "args": {}}),
                msgpack.packb({"v": 1, "id": 9, "op": "no_such_op", "args": {}}),
            ]
            for frame in garbage:
                client_socket.send(frame)
                peer_socket.send(frame)
            # Every request on the client port gets an error reply, not silence.
            replies = []
            deadline = time.monotonic() + WAIT_SECONDS
            while len(replies) < len(garbage) and time.monotonic() < deadline:
                if client_socket.poll(100):
                    replies.append(msgpack.unpackb(client_socket.recv()))
            assert len(replies) == len(garbage), replies
            assert all(reply["ok"] is False for reply in replies)
            assert {reply["error"]["code"] for reply in replies} == {"BAD_REQUEST"}
            # A 100 MB frame is over frame_bytes_max: ZeroMQ drops the sender, the node goes on.
            huge = b"\x00" * (100 * 1024 * 1024)
            for address_socket in (_raw_dealer(context, cluster.config, address.client), _raw_dealer(context, cluster.config, address.raft)):
                address_socket.send(huge)
                address_socket.close()
            client_socket.close()
            peer_socket.close()
    finally:
        context.term()
    # The cluster still elects, writes and reads on every node.
    cluster.client.mkdir("/after-garbage")
    for node_id in cluster.config.node_ids():
        pinned = Client(cluster.config, node=node_id, timeout_seconds=WAIT_SECONDS)
        try:
            assert pinned.status(node_id)["id"] == node_id
            assert pinned.stat("/after-garbage")["type"] == "dir"
        finally:
            pinned.close()


def test_a_follower_forwards_writes_and_serves_linearizable_reads(cluster):
    leader = leader_of(cluster.client)
    follower = next(node_id for node_id in cluster.config.node_ids() if node_id != leader)
    with Client(cluster.config, node=follower, timeout_seconds=WAIT_SECONDS) as pinned:
        created = pinned.mkdir("/via-follower")  # forwarded to the leader, answered by the follower
        assert created["path"] == "/via-follower"
        pinned.write_file("/via-follower/f", b"forwarded")
        _, data = pinned.read("/via-follower/f")  # ReadIndex through the leader
        assert data == b"forwarded"
    _, data = cluster.client.read("/via-follower/f")
    assert data == b"forwarded"


def test_a_forwarded_command_that_is_not_valid_never_enters_the_log(cluster):
    from node.transport.codec import encode_forward

    cluster.client.mkdir("/before")
    leader = leader_of(cluster.client)
    last_index = cluster.client.inspect_log(leader)["last_index"]
    context = zmq.Context()
    try:
        peer = context.socket(zmq.DEALER)
        peer.setsockopt(zmq.LINGER, 5000)  # close() delivers the queued frames first
        peer.setsockopt(zmq.IDENTITY, b"n9")  # looks like a peer; its payloads are not trusted
        peer.connect("tcp://" + cluster.config.node(leader).raft)
        for command in (b"\x93garbage", msgpack.packb([1, "mkdir", {"path": "relative"}, 0]), 12):
            peer.send(encode_forward({"propose": command}))
        peer.close()
    finally:
        context.term()
    # Had any of them been proposed, applying it would have failed on every node.
    cluster.client.mkdir("/after")
    log = cluster.client.inspect_log(leader, from_index=last_index + 1)
    assert [entry["command"].get("path") for entry in log["entries"]] == ["/after"]
    for node_id in cluster.config.node_ids():
        with Client(cluster.config, node=node_id, timeout_seconds=WAIT_SECONDS) as pinned:
            assert pinned.stat("/after")["type"] == "dir"
