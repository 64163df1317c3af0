"""PortClient keeps one socket per chunk port across calls, and drops it when a call fails."""

from __future__ import annotations

import threading

import msgpack
import pytest
import zmq

from node import protocol
from node.errors import Unavailable
from node.repair import peers

FRAME_BYTES_MAX = 1 << 20


class StatsPort:
    """A ROUTER answering chunk_stats, remembering each routing identity (one per socket)."""

    def __init__(self, context: zmq.Context) -> None:
        self.router = context.socket(zmq.ROUTER)
        self.router.setsockopt(zmq.LINGER, 0)
        self.address = f"127.0.0.1:{self.router.bind_to_random_port('tcp://127.0.0.1')}"
        self.identities: list[bytes] = []
        self.silent = False

    def serve_one(self) -> None:
        identity, frame = self.router.recv_multipart()
        self.identities.append(identity)
        if not self.silent:
            request = msgpack.unpackb(frame)
            self.router.send_multipart([identity, protocol.encode({"id": request["id"], "ok": True, "result": 7})])


def call_served(port: StatsPort, do_call) -> object:
    server = threading.Thread(target=port.serve_one)
    server.start()
    try:
        return do_call()
    finally:
        server.join(timeout=10)


def test_calls_reuse_one_socket_and_a_failed_call_drops_it():
    context = zmq.Context()
    port = StatsPort(context)
    client = peers.PortClient(context)
    try:
        ask = lambda: client.call(port.address, "chunk_stats", {}, timeout_seconds=5, frame_bytes_max=FRAME_BYTES_MAX)
        assert [call_served(port, ask) for _ in range(3)] == [7, 7, 7]
        assert len(set(port.identities)) == 1
        port.silent = True
        quick = lambda: client.call(port.address, "chunk_stats", {}, timeout_seconds=0.2, frame_bytes_max=FRAME_BYTES_MAX)
        with pytest.raises(Unavailable, match="no reply within"):
            call_served(port, quick)
        port.silent = False
        assert call_served(port, ask) == 7
        assert len(set(port.identities)) == 2  # the socket of the failed call was not reused
        # The one-off call makes a socket each time.
        once = lambda: peers.call(context, port.address, "chunk_stats", {}, timeout_seconds=5,
                                  frame_bytes_max=FRAME_BYTES_MAX)
        assert call_served(port, once) == 7 and len(set(port.identities)) == 3
    finally:
        client.close()
        port.router.close(linger=0)
        context.term()
