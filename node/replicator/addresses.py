"""The member address book: which raft/client/chunk endpoints each member id has.

Learned from the config file, from conf-change contexts (a new member's addresses travel in
its add-learner entry) and from snapshots (a node that joins from a snapshot never sees the
entries that introduced the others). Stored in its own LMDB table, written in the same batch
as the entry or snapshot that taught it.
"""

from __future__ import annotations

import msgpack

from node.config import ClusterConfig, NodeAddress

ADDRESSES_DB = b"driver_node_addresses"


def encode_addresses(addresses) -> bytes:
    """Member addresses as they travel in conf-change contexts and snapshots (and are stored)."""
    return msgpack.packb({address.id: [address.raft, address.client, address.chunk] for address in addresses})


class AddressBook:
    def __init__(self, config: ClusterConfig, node_id: str, env) -> None:
        self._node_id = node_id
        self._db = env.open_db(ADDRESSES_DB)
        self._addresses = {address.id: address for address in config.nodes}
        with env.begin(db=self._db) as txn:
            for key, value in txn.cursor():
                raft, client, chunk = msgpack.unpackb(value)
                self._addresses[key.decode()] = NodeAddress(key.decode(), raft, client, chunk)

    def __getitem__(self, node_id: str) -> NodeAddress:
        return self._addresses[node_id]

    def __contains__(self, node_id: str) -> bool:
        return node_id in self._addresses

    def all(self) -> dict[str, NodeAddress]:
        return dict(self._addresses)

    def peer_endpoints(self) -> dict[str, str]:
        return {node_id: address.endpoint("raft") for node_id, address in self._addresses.items()
                if node_id != self._node_id}

    def remember(self, txn, encoded: bytes) -> None:
        """Learn the addresses of `encoded` (encode_addresses) inside the write transaction `txn`."""
        if not encoded:
            return
        for node_id, (raft, client, chunk) in msgpack.unpackb(encoded).items():
            self._addresses[node_id] = NodeAddress(node_id, raft, client, chunk)
            txn.put(node_id.encode(), msgpack.packb([raft, client, chunk]), db=self._db)

    def encoded(self) -> bytes:
        return encode_addresses(list(self._addresses.values()))
