"""A PeerTransport in its own process, for tests that freeze it (SIGSTOP) to make it silent.

Prints its bound address, then one line per received Raft message: "<source> <term>".
"""

from __future__ import annotations

import sys

import zmq

from node.transport.peer import PeerTransport


def main() -> None:
    node_id = sys.argv[1]
    context = zmq.Context()
    transport = PeerTransport(context, node_id, "127.0.0.1:*", {}, max_frame_bytes=1 << 20)
    print(transport.bound_address, flush=True)
    while True:
        if transport.socket.poll(100):
            for item in transport.receive():
                if item[0] == "raft":
                    print(item[1].source, item[1].term, flush=True)


if __name__ == "__main__":
    main()
