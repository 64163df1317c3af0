"""A committed membership change or snapshot naming an id no node can start with (the audit's
`"a b"`) or a malformed endpoint is ignored by the address book, with a log line, instead of
stopping every node at every restart."""

from __future__ import annotations

import lmdb
import msgpack

from node.replicator.addresses import AddressBook
from sandctl.cluster import loopback_config

GOOD = ["127.0.0.1:7004", "127.0.0.1:8004", "127.0.0.1:9004"]


def test_invalid_ids_and_endpoints_in_the_log_are_ignored_and_never_stored(tmp_path):
    config = loopback_config(3)
    env = lmdb.open(str(tmp_path / "store"), max_dbs=4)
    try:
        book = AddressBook(config, "n1", env)
        hostile = {"a b": GOOD, "n4": GOOD, "n5": ["0.0.0.0:1", "127.0.0.1:2", "127.0.0.1:3"], "n6": [1, 2],
                   "": GOOD, "n7": "127.0.0.1:1"}
        with env.begin(write=True) as txn:
            book.remember(txn, msgpack.packb(hostile))
            book.remember(txn, msgpack.packb([1, 2, 3]))  # not even a map
        assert set(book.all()) == {"n1", "n2", "n3", "n4"}
        assert "a b" not in book.peer_endpoints()
        # What was stored comes back after a restart, and only that.
        table = env.open_db(b"driver_node_addresses")  # (outside a write transaction: LMDB)
        with env.begin(write=True) as txn:  # as an older version would have stored it
            txn.put(b"a b", msgpack.packb(GOOD), db=table)
        assert set(AddressBook(config, "n1", env).all()) == {"n1", "n2", "n3", "n4"}
    finally:
        env.close()
