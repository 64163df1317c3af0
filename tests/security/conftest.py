"""Real ZeroMQ sockets on 127.0.0.1 (system-chosen free ports) with a real keys directory
under each test's tmp_path. Every socket, context and ZAP thread a fixture makes is closed in
teardown, also when the test failed."""

from __future__ import annotations

from pathlib import Path

import pytest
import zmq

from node.security import (
    KIND_CLIENT,
    KIND_NODE,
    ROLE_ADMIN,
    ROLE_NODE,
    ROLE_READ_WRITE,
    ClientSecurity,
    HandshakeWatch,
    ServerSecurity,
)
from node.security.keyring import create_keys_directory, create_principal
from tests.waiting import wait_until  # noqa: F401 - the one wait_until, re-exported for these tests

QUIET_POLL_MS = 300  # "nothing arrives": how long a ROUTER is watched after the condition held


def make_keys(directory: Path, nodes=("n1", "n2"), clients=(("admin", ROLE_ADMIN), ("rw", ROLE_READ_WRITE))) -> str:
    cluster_id = create_keys_directory(directory)
    for node_id in nodes:
        create_principal(directory, KIND_NODE, node_id, ROLE_NODE)
    for name, role in clients:
        create_principal(directory, KIND_CLIENT, name, role)
    return cluster_id


@pytest.fixture
def keys_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "keys"
    make_keys(directory)
    return directory


class Sockets:
    """A context with a server side (ServerSecurity + ROUTERs) and any number of DEALERs."""

    def __init__(self) -> None:
        self.context = zmq.Context()
        self.client_context = zmq.Context()  # a separate process's context, as sandctl has
        self.closables: list = []
        self.server: ServerSecurity | None = None

    def start_server(self, keys_dir: Path, node_id: str = "n1", *, mode: str = "curve") -> ServerSecurity:
        self.server = ServerSecurity(self.context, keys_dir, node_id, mode=mode)
        return self.server

    def router(self, port: str) -> tuple[zmq.Socket, str]:
        router = self.context.socket(zmq.ROUTER)
        router.setsockopt(zmq.LINGER, 0)
        self.closables.append(router)
        self.server.configure_router(router, port)
        number = router.bind_to_random_port("tcp://127.0.0.1")
        return router, f"127.0.0.1:{number}"

    def dealer(self, address: str, security: ClientSecurity | None = None, server_node_id: str = "n1"):
        """A connected DEALER (with `security`, or a bare one without keys) and a HandshakeWatch
        on it, started before connect so no handshake event is missed."""
        dealer = self.client_context.socket(zmq.DEALER)
        dealer.setsockopt(zmq.LINGER, 0)
        self.closables.append(dealer)
        if security is not None:
            security.configure_dealer(dealer, server_node_id)
        mode = security.mode if security is not None else "curve"
        watch = HandshakeWatch(dealer, server_node_id, address, mode, self.server.cluster_id if self.server else "")
        self.closables.insert(0, watch)
        dealer.connect("tcp://" + address)
        return dealer, watch

    def close(self) -> None:
        for closable in self.closables:
            closable.close()
        if self.server is not None:
            self.server.close()
        self.context.term()
        self.client_context.term()


@pytest.fixture
def sockets():
    handle = Sockets()
    try:
        yield handle
    finally:
        handle.close()


def received(router: zmq.Socket, timeout_ms: int) -> list[list[zmq.Frame]]:
    """Every message the ROUTER has within timeout_ms of the first poll (frames, copy=False)."""
    messages = []
    while router.poll(timeout_ms, zmq.POLLIN):
        messages.append(router.recv_multipart(copy=False))
        timeout_ms = 0
    return messages
