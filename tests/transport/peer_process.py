"""A PeerTransport in its own process: for tests that freeze it (SIGSTOP) or put it in a
network namespace.

    python -m tests.transport.peer_process receive NODE_ID BIND_ADDRESS
        prints its bound address, then one line per received Raft message: "<source> <term>"
    python -m tests.transport.peer_process send NODE_ID PEER_ID PEER_ADDRESS
        reads commands on stdin, answers each with one line:
        "send TERM COUNT" -> "sent N" (heartbeats of term TERM accepted for sending)
        "link"            -> "up" or "down"
"""

from __future__ import annotations

import sys

import zmq

from node.raft.types import Message, MessageKind
from node.transport.peer import PeerTransport

FRAME_BYTES_MAX = 1 << 20


def receive(node_id: str, bind_address: str) -> None:
    transport = PeerTransport(zmq.Context(), node_id, bind_address, {}, frame_bytes_max=FRAME_BYTES_MAX)
    print(transport.bound_address, flush=True)
    while True:
        if transport.socket.poll(100):
            for item in transport.receive():
                if item[0] == "raft":
                    print(item[1].source, item[1].term, flush=True)


def send(node_id: str, peer: str, peer_address: str) -> None:
    wildcard = "[::]:*" if peer_address.startswith("[") else "0.0.0.0:*"  # its own inbound port, unused here
    transport = PeerTransport(zmq.Context(), node_id, wildcard, {peer: peer_address}, frame_bytes_max=FRAME_BYTES_MAX)
    for line in sys.stdin:
        words = line.split()
        if words[0] == "send":
            term, count = int(words[1]), int(words[2])
            message = Message(kind=MessageKind.HEARTBEAT, source=node_id, target=peer, term=term)
            print("sent", sum(transport.send(message) for _ in range(count)), flush=True)
        elif words[0] == "link":
            print("up" if transport.link_up(peer) else "down", flush=True)


if __name__ == "__main__":
    if sys.argv[1] == "receive":
        receive(sys.argv[2], sys.argv[3] if len(sys.argv) > 3 else "127.0.0.1:*")
    else:
        send(sys.argv[2], sys.argv[3], sys.argv[4])
