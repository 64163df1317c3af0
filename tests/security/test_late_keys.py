"""Keys that appear while nodes run: a node being added connects within milliseconds of its
key file being written, before the running nodes' periodic reload, and libzmq never retries a
connection whose handshake was refused. Both sides must cope: the ZAP handler re-reads the keys
before refusing an unknown key, and a peer link retries a refused handshake itself."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import zmq

from node.raft.types import Message, MessageKind
from node.security import KIND_CLIENT, ClientSecurity, KeyRing, Principal, ServerSecurity
from node.security.keyring import create_principal
from node.transport.peer import PeerTransport
from tests.security.conftest import make_keys, wait_until
from tests.security.test_curve_sockets import request_answered

FRAME_BYTES_MAX = 1 << 20


def test_a_client_key_made_after_the_node_read_its_keys_is_accepted_at_its_first_handshake(sockets, keys_dir):
    server = sockets.start_server(keys_dir)
    router, address = sockets.router("client")
    create_principal(keys_dir, KIND_CLIENT, "late", "read-write")  # the node has not reloaded since
    dealer, _ = sockets.dealer(address, ClientSecurity.for_client(keys_dir, "late"))
    frames = request_answered(router, dealer, b"hello")
    assert server.principal_of(frames[1]) == Principal(KIND_CLIENT, "late", "read-write")


def test_a_key_added_within_the_same_clock_tick_as_the_last_load_is_still_seen(keys_dir):
    keyring = KeyRing.load(keys_dir)
    clients = keys_dir / "clients"
    before = clients.stat()
    create_principal(keys_dir, KIND_CLIENT, "sametick", "read-write")
    # The kernel's file clock is coarse: a rename a few ms after the load can leave the
    # directory's mtime unchanged. Make that happen for certain.
    os.utime(clients, ns=(before.st_atime_ns, before.st_mtime_ns))
    fresh = keyring.reloaded()
    assert fresh is not None
    assert Principal(KIND_CLIENT, "sametick", "read-write") in fresh.listing()
    assert fresh.reloaded() is None  # nothing changed since


def heartbeat(source: str, target: str) -> Message:
    return Message(kind=MessageKind.HEARTBEAT, source=source, target=target, term=1)


@pytest.fixture
def two_nodes(tmp_path: Path):
    """n1 and n2 as two processes would have them: a context, a ZAP handler and a PeerTransport
    each. n2's server side reads `n2-keys`, a copy of the cluster's keys without n1's public
    file (n2 has not been told about n1 yet); its own DEALER still knows n1's key."""
    keys = tmp_path / "keys"
    make_keys(keys)
    n2_keys = tmp_path / "n2-keys"
    shutil.copytree(keys, n2_keys)
    (n2_keys / "nodes" / "n1.toml").unlink()
    made = []
    try:
        contexts = {node_id: zmq.Context() for node_id in ("n1", "n2")}
        servers = {"n1": ServerSecurity(contexts["n1"], keys, "n1"), "n2": ServerSecurity(contexts["n2"], n2_keys, "n2")}
        transports = {}
        for node_id in ("n1", "n2"):
            security = (servers[node_id], ClientSecurity(keys, "node", node_id))
            transports[node_id] = PeerTransport(contexts[node_id], node_id, "127.0.0.1:*", {},
                                                frame_bytes_max=FRAME_BYTES_MAX, security=security)
            made.append(transports[node_id])
        addresses = {node_id: transport.bound_address for node_id, transport in transports.items()}
        for transport in transports.values():
            transport.set_peers(addresses)
        yield transports, servers, keys, n2_keys
    finally:
        for transport in made:
            transport.close()
        for server in locals().get("servers", {}).values():
            server.close()
        for context in locals().get("contexts", {}).values():
            context.term()


def test_a_peer_link_refused_for_an_unknown_key_is_retried_once_the_key_is_known(two_nodes):
    transports, servers, keys, n2_keys = two_nodes
    n1, n2 = transports["n1"], transports["n2"]
    message = heartbeat("n1", "n2")

    def n2_received() -> bool:
        n1.send(message)
        return n2.socket.poll(10) and ("raft", message) in n2.receive()

    wait_until(lambda: n1.send(message) is not None and n1.counters()["handshake_failures"] >= 1,
               "n2 to refuse n1's key")
    assert not n2_received()
    shutil.copy2(keys / "nodes" / "n1.toml", n2_keys / "nodes" / "n1.toml")
    assert servers["n2"].reload_if_changed()
    # libzmq itself would never connect again after the refusal: only the link's retry does.
    wait_until(n2_received, "n1's heartbeat to reach n2 after n2 learned n1's key")
    assert n1.counters()["handshake_retries"] >= 1
    assert n1.counters()["links"]["n2"]["up"]
