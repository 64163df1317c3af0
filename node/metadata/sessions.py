"""Client sessions: the exactly-once memory of the state machine.

Each client keeps its last applied seq and the result it got. A retried write (same seq) is
answered from here instead of being applied twice. Sessions idle for longer than the TTL are
forgotten, measured by the log's own clock (the largest now_ns any command carried), so every
node expires the same sessions at the same entry.
"""

from __future__ import annotations

from typing import NamedTuple

import lmdb
import msgpack

from node.metadata.tables import KEY_CLOCK_NS, NamespaceTables, pack_uint64, unpack_uint64
from node.packing import packb

_CLOCK_BYTES = 8


class Session(NamedTuple):
    """What a client's last applied write left (a NamedTuple: one is read per applied write)."""

    last_seq: int
    result: dict
    last_active_ns: int


class Sessions:
    def __init__(self, tables: NamespaceTables, ttl_ns: int) -> None:
        assert ttl_ns > 0, ttl_ns
        self._tables = tables
        self._ttl_ns = ttl_ns

    def clock_ns(self, txn: lmdb.Transaction) -> int:
        value = txn.get(KEY_CLOCK_NS, db=self._tables.meta)
        return 0 if value is None else unpack_uint64(value)

    def set_clock(self, txn: lmdb.Transaction, clock_ns: int) -> None:
        """The log's clock moves forward (the caller keeps it from running backwards, whatever
        the proposers' clocks do)."""
        txn.put(KEY_CLOCK_NS, pack_uint64(clock_ns), db=self._tables.meta)

    def expire(self, txn: lmdb.Transaction, clock_ns: int) -> None:
        """Forget sessions idle for longer than the TTL. Walks the expiry index in time
        order, so the cost is the number expired, not the number of sessions."""
        cutoff_ns = clock_ns - self._ttl_ns
        cursor = txn.cursor(db=self._tables.session_expiry)
        cursor.first()
        while cursor.key() and unpack_uint64(cursor.key()[:_CLOCK_BYTES]) < cutoff_ns:
            client = cursor.key()[_CLOCK_BYTES:]
            deleted = txn.delete(client, db=self._tables.sessions)
            assert deleted, f"expiry index names a missing session {client!r}"
            cursor.delete()

    def get(self, txn: lmdb.Transaction, client: str) -> Session | None:
        value = txn.get(client.encode("utf-8"), db=self._tables.sessions)
        if value is None:
            return None
        last_seq, result, last_active_ns = msgpack.unpackb(value, raw=False)
        return Session(last_seq, result, last_active_ns)

    def record(self, txn: lmdb.Transaction, client: str, previous: Session | None, seq: int, result: dict,
               clock_ns: int) -> None:
        """Remember `result` as the client's last; `previous` is what get() returned for it in
        this transaction (passed in: apply has just read it, and reading it twice was a cost)."""
        client_key = client.encode("utf-8")
        if previous is not None:
            assert seq > previous.last_seq, (client, seq, previous.last_seq)
            deleted = txn.delete(pack_uint64(previous.last_active_ns) + client_key, db=self._tables.session_expiry)
            assert deleted, f"session {client!r} missing from the expiry index"
        value = packb([seq, result, clock_ns])
        txn.put(client_key, value, db=self._tables.sessions)
        txn.put(pack_uint64(clock_ns) + client_key, b"", db=self._tables.session_expiry)
