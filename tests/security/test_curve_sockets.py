"""The trust boundary on real sockets: what a ROUTER configured by ServerSecurity lets through,
and who it says each message is from."""

from __future__ import annotations

import os

import pytest
import zmq

from node.security import KIND_CLIENT, KIND_NODE, ClientSecurity, HandshakeWatch, KeyRing, Principal, Unauthorized
from node.security.keyring import remove_principal
from tests.security.conftest import QUIET_POLL_MS, make_keys, received, wait_until


def request_answered(router: zmq.Socket, dealer: zmq.Socket, payload: bytes) -> list[zmq.Frame]:
    """Send `payload` from dealer and wait until the router has it; return its frames."""
    dealer.send(payload)
    wait_until(lambda: router.poll(0, zmq.POLLIN), f"the router to receive {payload!r}")
    return router.recv_multipart(copy=False)


def test_a_dealer_without_keys_gets_nothing_processed_while_a_keyed_one_does(sockets, keys_dir):
    server = sockets.start_server(keys_dir)
    router, address = sockets.router("client")
    bare, bare_watch = sockets.dealer(address)  # no CurveZMQ at all: what any process can do
    bare.send(b"from nobody")
    wait_until(bare_watch.refusal, "the bare dealer's handshake to fail")
    keyed, _ = sockets.dealer(address, ClientSecurity.for_client(keys_dir, "rw"))
    frames = request_answered(router, keyed, b"from rw")
    assert frames[1].bytes == b"from rw"
    assert server.principal_of(frames[1]) == Principal(KIND_CLIENT, "rw", "read-write")
    # Only the keyed request ever reached the ROUTER.
    assert received(router, QUIET_POLL_MS) == []
    assert server.status()["handshakes_accepted"] == 1


def test_a_client_with_an_unknown_key_is_refused_with_a_clear_line(sockets, keys_dir, tmp_path):
    server = sockets.start_server(keys_dir)
    router, address = sockets.router("client")
    # A key of a different cluster: a valid key file, just not one this cluster knows.
    other = tmp_path / "other-keys"
    make_keys(other, nodes=("n1",), clients=(("admin", "admin"),))
    stranger = ClientSecurity.for_client(other, "admin")
    # It also expects n1 to hold *its* cluster's n1 key; give it ours so only its own key is wrong.
    dealer = sockets.client_context.socket(zmq.DEALER)
    dealer.setsockopt(zmq.LINGER, 0)
    sockets.closables.append(dealer)
    stranger.configure_dealer(dealer, "n1")
    dealer.setsockopt(zmq.CURVE_SERVERKEY, KeyRing.load(keys_dir).node_public_key("n1"))
    watch = HandshakeWatch(dealer, "n1", address, "curve", stranger.cluster_id)
    sockets.closables.insert(0, watch)
    dealer.connect("tcp://" + address)
    dealer.send(b"let me in")
    line = wait_until(watch.refusal, "the node to refuse the unknown key")
    assert line.startswith(f"node n1 at {address} refused this key: it is not authorized in cluster")
    assert router.poll(QUIET_POLL_MS, zmq.POLLIN) == 0
    assert server.status()["handshakes_refused"] >= 1


def test_a_node_of_another_cluster_on_our_port_is_detected_by_the_client(sockets, keys_dir, tmp_path):
    """The cluster-start case: another cluster's node holds the port. The client expects our
    n1's key; the process there cannot prove it, so nothing is sent to it and the line says so."""
    other = tmp_path / "other-keys"
    make_keys(other)
    sockets.start_server(other)  # the other cluster's n1 is the one listening
    router, address = sockets.router("client")
    ours, watch = sockets.dealer(address, ClientSecurity.for_client(keys_dir, "admin"))
    ours.send(b"status?")
    line = wait_until(watch.refusal, "the handshake to fail")
    assert f"the process at {address} is not node n1 of cluster" in line
    assert router.poll(QUIET_POLL_MS, zmq.POLLIN) == 0


def test_user_id_maps_to_the_node_or_client_of_the_key_whatever_identity_it_claims(sockets, keys_dir):
    server = sockets.start_server(keys_dir)
    router, address = sockets.router("raft")
    dealer = sockets.client_context.socket(zmq.DEALER)
    dealer.setsockopt(zmq.LINGER, 0)
    dealer.setsockopt(zmq.IDENTITY, b"n1")  # n2's key, claiming to be n1 by routing identity
    sockets.closables.append(dealer)
    ClientSecurity(keys_dir, KIND_NODE, "n2").configure_dealer(dealer, "n1")
    dealer.connect("tcp://" + address)
    frames = request_answered(router, dealer, b"append")
    assert frames[0].bytes == b"n1"  # what the sender chose
    assert server.peer_node_id(frames[1]) == "n2"  # what its key proves
    assert server.principal_of(frames[0]) == Principal(KIND_NODE, "n2", "node")

    client_router, client_address = sockets.router("client")
    admin, _ = sockets.dealer(client_address, ClientSecurity.for_client(keys_dir, "admin"))
    frames = request_answered(client_router, admin, b"gc")
    assert server.principal_of(frames[1]) == Principal(KIND_CLIENT, "admin", "admin")
    assert server.peer_node_id(frames[1]) is None  # a client is never a raft peer


def test_a_client_key_is_refused_on_the_raft_port(sockets, keys_dir):
    sockets.start_server(keys_dir)
    router, address = sockets.router("raft")
    dealer, watch = sockets.dealer(address, ClientSecurity.for_client(keys_dir, "admin"))
    dealer.send(b"propose")
    assert "refused this key" in wait_until(watch.refusal, "the raft port to refuse a client key")
    assert router.poll(QUIET_POLL_MS, zmq.POLLIN) == 0


def test_a_revoked_key_is_dropped_on_an_open_connection_after_reload(sockets, keys_dir):
    server = sockets.start_server(keys_dir)
    router, address = sockets.router("client")
    dealer, _ = sockets.dealer(address, ClientSecurity.for_client(keys_dir, "rw"))
    assert server.principal_of(request_answered(router, dealer, b"one")[1]) is not None
    remove_principal(keys_dir, KIND_CLIENT, "rw")
    assert server.reload_if_changed()
    assert not server.reload_if_changed()  # nothing changed since
    assert server.principal_of(request_answered(router, dealer, b"two")[1]) is None
    fresh, watch = sockets.dealer(address, ClientSecurity.for_client(keys_dir, "admin"))
    assert server.principal_of(request_answered(router, fresh, b"three")[1]) is not None


def test_plaintext_works_only_when_both_sides_say_so(sockets, keys_dir):
    # Default mode is curve: a plain-text client gets nothing through.
    server = sockets.start_server(keys_dir)
    assert server.mode == "curve" and "warning" not in server.status()
    router, address = sockets.router("client")
    plain, watch = sockets.dealer(address, ClientSecurity.for_client(keys_dir, "rw", mode="plaintext"))
    plain.send(b"hello")
    line = wait_until(watch.refusal, "the handshake to fail")
    assert f"node n1 at {address}" in line and "plaintext" in line
    assert router.poll(QUIET_POLL_MS, zmq.POLLIN) == 0


def test_plaintext_mode_carries_the_cluster_id_and_says_so_loudly(tmp_path, caplog):
    from tests.security.conftest import Sockets

    keys = tmp_path / "keys"
    make_keys(keys)
    other = tmp_path / "other"
    make_keys(other)
    handle = Sockets()
    try:
        with caplog.at_level("WARNING"):
            server = handle.start_server(keys, mode="plaintext")
        assert any("SECURITY IS OFF" in record.getMessage() for record in caplog.records)
        assert "SECURITY IS OFF" in server.status()["warning"]
        router, address = handle.router("raft")
        peer, _ = handle.dealer(address, ClientSecurity(keys, KIND_NODE, "n2", mode="plaintext"))
        assert server.peer_node_id(request_answered(router, peer, b"append")[1]) == "n2"
        stranger, watch = handle.dealer(address, ClientSecurity(other, KIND_NODE, "n2", mode="plaintext"))
        stranger.send(b"append")
        assert "refused this cluster id" in wait_until(watch.refusal, "another cluster's node to be refused")
        assert router.poll(QUIET_POLL_MS, zmq.POLLIN) == 0
    finally:
        handle.close()


def test_secret_files_are_0600_and_the_directory_0700(keys_dir):
    assert os.stat(keys_dir).st_mode & 0o777 == 0o700
    secrets = sorted(keys_dir.rglob("*.secret"))
    assert [path.name for path in secrets] == ["admin.secret", "rw.secret", "n1.secret", "n2.secret"]
    for path in secrets:
        assert os.stat(path).st_mode & 0o777 == 0o600, path
    for path in keys_dir.iterdir():
        if path.is_dir():
            assert os.stat(path).st_mode & 0o777 == 0o700, path


def test_a_request_loop_refuses_admin_ops_to_a_read_write_key(sockets, keys_dir):
    """What the client and chunk ports do per request: the role comes from the key."""
    server = sockets.start_server(keys_dir)
    router, address = sockets.router("client")
    rw, _ = sockets.dealer(address, ClientSecurity.for_client(keys_dir, "rw"))
    admin, _ = sockets.dealer(address, ClientSecurity.for_client(keys_dir, "admin"))
    frames = request_answered(router, rw, b"gc")
    with pytest.raises(Unauthorized, match=r"client rw \(read-write\) may not run gc: it needs an admin key"):
        server.authorize_request(frames[1], "gc")
    assert server.authorize_request(frames[1], "write_file") == Principal(KIND_CLIENT, "rw", "read-write")
    frames = request_answered(router, admin, b"gc")
    assert server.authorize_request(frames[1], "gc").name == "admin"
    remove_principal(keys_dir, KIND_CLIENT, "admin")
    server.reload_if_changed()
    with pytest.raises(Unauthorized, match="revoked"):
        server.authorize_request(request_answered(router, admin, b"gc")[1], "gc")



def test_a_message_from_a_socket_nobody_configured_has_no_principal(sockets, keys_dir):
    server = sockets.start_server(keys_dir)
    unconfigured = sockets.context.socket(zmq.ROUTER)  # a ROUTER someone forgot to configure
    unconfigured.setsockopt(zmq.LINGER, 0)
    sockets.closables.append(unconfigured)
    number = unconfigured.bind_to_random_port("tcp://127.0.0.1")
    dealer, _ = sockets.dealer(f"127.0.0.1:{number}")
    frames = request_answered(unconfigured, dealer, b"hello")
    assert server.principal_of(frames[1]) is None and server.peer_node_id(frames[1]) is None
    with pytest.raises(Unauthorized):
        server.authorize_request(frames[1], "status")


def test_a_curve_router_whose_context_has_no_zap_handler_refuses_everyone(sockets, keys_dir):
    """Fail closed: libzmq alone would accept any client key when no ZAP handler answers;
    configure_router sets ZAP_ENFORCE_DOMAIN so it refuses instead."""
    sockets.start_server(keys_dir)
    orphan = sockets.client_context.socket(zmq.ROUTER)  # a context without our ZAP thread
    orphan.setsockopt(zmq.LINGER, 0)
    sockets.closables.append(orphan)
    sockets.server.configure_router(orphan, "client")
    number = orphan.bind_to_random_port("tcp://127.0.0.1")
    keyed, watch = sockets.dealer(f"127.0.0.1:{number}", ClientSecurity.for_client(keys_dir, "admin"))
    keyed.send(b"hello")
    wait_until(watch.refusal, "the handshake to fail without a ZAP handler")
    assert orphan.poll(QUIET_POLL_MS, zmq.POLLIN) == 0
