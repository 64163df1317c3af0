"""A client whose node closes the connection under a pending request (a leader killed with
SIGKILL: its kernel closes every connection at once) moves on to another node at once,
instead of waiting out the attempt timeout for a reply that cannot come."""

from __future__ import annotations

import threading

import zmq

from node import protocol
from node.security import ClientSecurity
from sandctl.connection import Connections, SocketOptions
from sandctl.failover import Failover
from tests.security.conftest import Sockets, make_keys, received

FRAME_BYTES_MAX = 1 << 20
WAIT_MS = 20_000  # a generous bound for each step on a loaded machine, never a measured time
# Far longer than the waits above: without the connection-loss path the call can only end at
# its deadline, unanswered, and the test fails.
ATTEMPT_TIMEOUT_SECONDS = 120.0
CALL_TIMEOUT_SECONDS = 60.0


def test_a_call_whose_node_drops_the_connection_is_answered_by_another(tmp_path):
    keys = tmp_path / "keys"
    make_keys(keys, nodes=("n1", "n2"))
    servers = {node_id: Sockets() for node_id in ("n1", "n2")}  # a context and ZAP handler each
    context = zmq.Context()
    connections = None
    try:
        routers, addresses = {}, {}
        for node_id, handle in servers.items():
            handle.start_server(keys, node_id)
            routers[node_id], addresses[node_id] = handle.router("client")
        options = SocketOptions(FRAME_BYTES_MAX, immediate=True, security=ClientSecurity.for_client(keys, "rw"))
        connections = Connections(addresses, options, context)
        failover = Failover(connections, attempt_timeout_seconds=ATTEMPT_TIMEOUT_SECONDS)
        failover.set_leader("n1", confirmed=True)
        outcome: dict[str, object] = {}

        def call() -> None:
            try:
                outcome["result"] = failover.call("status", {}, write=False, timeout_seconds=CALL_TIMEOUT_SECONDS,
                                                  pinned=None)
            except Exception as error:  # reported by the assertion below
                outcome["error"] = error

        caller = threading.Thread(target=call, name="caller", daemon=True)
        caller.start()
        assert received(routers["n1"], WAIT_MS), "the call reached the leader n1"
        routers["n1"].close(linger=0)  # n1 dies with the request unanswered: its connection closes

        requests = received(routers["n2"], WAIT_MS)
        assert requests, "the call moved on to n2 after n1's connection closed"
        identity, request = requests[0][0].bytes, protocol.decode(requests[0][1].bytes, FRAME_BYTES_MAX)
        routers["n2"].send_multipart([identity, protocol.reply_ok(request["id"], {"role": "follower"})])
        caller.join(WAIT_MS / 1000)
        assert not caller.is_alive()
        assert outcome == {"result": {"role": "follower"}}
        assert failover.leader != "n1"  # a node whose connection closed is not believed to lead
    finally:
        if connections is not None:
            connections.close()
        for handle in servers.values():
            handle.close()
        context.term()
