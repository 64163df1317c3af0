"""DEALERs for tests that speak the wire protocol directly (garbage, raw requests): since every
port authenticates, such a socket presents a key of the cluster like any client or node does.

    socket = keyed_dealer(context, config, "n1", "chunk")                # this user's admin key
    socket = keyed_dealer(context, config, "n2", "raft", as_node="n1")   # node n1's key
"""

from __future__ import annotations

import zmq

from node.config import ClusterConfig
from node.security import ClientSecurity
from sandctl.client import client_keys_dir, client_security


def keyed_dealer(context: zmq.Context, config: ClusterConfig, node_id: str, port: str, *,
                 as_node: str | None = None, data_dir=None) -> zmq.Socket:
    """A connected DEALER to node `node_id`'s `port` ("raft", "client", "chunk"), presenting the
    admin client key (as sandctl finds it for `config`), or node `as_node`'s key."""
    if as_node is None:
        security = client_security(config, data_dir)
        assert security is not None, f"no keys at {client_keys_dir(config, data_dir)}"
    else:
        security = ClientSecurity(client_keys_dir(config, data_dir), "node", as_node, mode=config.security)
    socket = context.socket(zmq.DEALER)
    socket.setsockopt(zmq.LINGER, 0)
    security.configure_dealer(socket, node_id)
    socket.connect("tcp://" + getattr(config.node(node_id), port))
    return socket


def node_of_address(config: ClusterConfig, address: str) -> str:
    """The id of the node one of whose ports is `address`."""
    for node in config.nodes:
        if address in (node.raft, node.client, node.chunk):
            return node.id
    raise AssertionError(f"{address} is no node's port")
