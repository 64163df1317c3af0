"""The member address book: which raft/client/chunk endpoints each member id has.

Learned from the config file, from conf-change contexts (a new member's addresses travel in
its add-learner entry) and from snapshots (a node that joins from a snapshot never sees the
entries that introduced the others). Stored in its own LMDB table, written in the same batch
as the entry or snapshot that taught it.
"""

from __future__ import annotations

import logging

import msgpack

from node.config import ClusterConfig, NodeAddress, check_address
from node.errors import SandStoreError
from node.names import is_valid_node_id

log = logging.getLogger(__name__)

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
                address = _valid_address(key.decode("utf-8", "replace"), msgpack.unpackb(value))
                if address is not None:  # (one stored by an older version without the check)
                    self._addresses[address.id] = address

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
        decoded = msgpack.unpackb(encoded)
        for node_id, value in (decoded.items() if isinstance(decoded, dict) else ()):
            address = _valid_address(node_id, value)
            if address is None:
                continue
            self._addresses[node_id] = address
            txn.put(node_id.encode(), msgpack.packb([address.raft, address.client, address.chunk]), db=self._db)

    def encoded(self) -> bytes:
        return encode_addresses(list(self._addresses.values()))


def _valid_address(node_id: object, value: object) -> NodeAddress | None:
    """The address of a member as a committed entry or snapshot states it, or None (logged)
    when its id is not one a node can start with or an endpoint is malformed: such a member is
    never connected to, rather than stopping every node at every restart."""
    try:
        if not is_valid_node_id(node_id):
            raise SandStoreError(f"node id {node_id!r} is not valid")
        if not (isinstance(value, (list, tuple)) and len(value) == 3):
            raise SandStoreError("not a [raft, client, chunk] triple")
        for which, endpoint in zip(("raft", "client", "chunk"), value):
            check_address(which, endpoint)
        return NodeAddress(node_id, *value)
    except (SandStoreError, TypeError, ValueError) as error:
        log.error("ignored a member address in the log or a snapshot: %s", error)
        return None
