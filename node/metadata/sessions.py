"""Client sessions: the exactly-once memory of the state machine.

Each client keeps its last applied seq and the result it got. A retried write (same seq) is
answered from here instead of being applied twice. Sessions idle for longer than the TTL are
forgotten, measured by the log's own clock (the largest now_ns any command carried), so every
node expires the same sessions at the same entry.

Every applied write reads its client's session and writes it again, so the stored value keeps
the numbers apply needs in a fixed-size head and the result after it, decoded only for a
retry (decoding the result dict was most of the cost of reading a session):

  struct ">QQQ" (last seq, last active clock ns, indexed clock ns) + msgpack(stored result)

The expiry index lists each session under its `indexed` time, its last activity when it was
last indexed: a session active again within REINDEX_FRACTION of the TTL keeps its index entry
(moving it cost a delete and a put per write). So an entry may be older than the session's
last activity, never newer: expire() finds every session idle for longer than the TTL among
the entries older than the cutoff, and indexes the others it finds there at their last
activity. Which sessions expire at which entry is decided by the last activity alone, as
before, so it is the same on every node whatever the batches.

A value written before this format (msgpack [last seq, result, last active clock ns], indexed
at its last activity) starts with a 3-element array header, which no head can start with (a
seq is below 2**62: its first byte is below 0x40), and is still read.
"""

from __future__ import annotations

import struct
from typing import NamedTuple

import lmdb
import msgpack

from node.metadata.tables import KEY_CLOCK_NS, NamespaceTables, pack_uint64, unpack_uint64
from node.packing import packb

_CLOCK_BYTES = 8
_HEAD = struct.Struct(">QQQ")  # last seq, last active clock ns, indexed clock ns
REINDEX_FRACTION = 16  # a session is indexed again once active TTL / 16 after its index entry
_LEGACY_FIRST_BYTE = 0x93  # msgpack fixarray of 3: the format before the head
SEQ_MAX = 1 << 62  # the codecs bound every number below 2**62
assert SEQ_MAX.to_bytes(8, "big")[0] < _LEGACY_FIRST_BYTE  # a head never looks like the old format
# expire() with no session left: a floor above any clock, so that nothing is walked again until
# record() lowers it.
NO_SESSION_NS = 1 << 64


class Session(NamedTuple):
    """What a client's last applied write left (a NamedTuple: one is read per applied write).
    The result stays encoded until a retry asks for it (result())."""

    last_seq: int
    encoded_result: bytes
    last_active_ns: int
    indexed_ns: int  # the time its expiry index entry is listed under (<= last_active_ns)

    def result(self) -> dict:
        return msgpack.unpackb(self.encoded_result, raw=False)


assert Session._fields == ("last_seq", "encoded_result", "last_active_ns", "indexed_ns")
_new_tuple = tuple.__new__


class Sessions:
    def __init__(self, tables: NamespaceTables, ttl_ns: int) -> None:
        assert ttl_ns > 0, ttl_ns
        self._tables = tables
        self._ttl_ns = ttl_ns
        self._reindex_after_ns = max(1, ttl_ns // REINDEX_FRACTION)
        assert self._reindex_after_ns <= ttl_ns

    def clock_ns(self, txn: lmdb.Transaction) -> int:
        value = txn.get(KEY_CLOCK_NS, db=self._tables.meta)
        return 0 if value is None else unpack_uint64(value)

    def set_clock(self, txn: lmdb.Transaction, clock_ns: int) -> None:
        """The log's clock moves forward (the caller keeps it from running backwards, whatever
        the proposers' clocks do)."""
        txn.put(KEY_CLOCK_NS, pack_uint64(clock_ns), True, True, False, self._tables.meta)  # positional: tables.py

    def expire(self, txn: lmdb.Transaction, clock_ns: int, oldest_floor_ns: int | None = None) -> int:
        """Forget sessions idle for longer than the TTL. Walks the expiry index in time
        order, so the cost is the number expired, not the number of sessions.

        oldest_floor_ns: a bound, known in this transaction, that no session in it was last
        active before (None: unknown); with cutoff at or below it nothing can expire and the
        index is not read (apply asks once per write). Returns such a bound for the caller to
        keep (record() lowers it when it stores a session active before it, and returns it)."""
        cutoff_ns = clock_ns - self._ttl_ns
        if oldest_floor_ns is not None and cutoff_ns <= oldest_floor_ns:
            return oldest_floor_ns
        cursor = txn.cursor(db=self._tables.session_expiry)
        cursor.first()
        key = cursor.key()
        while key and unpack_uint64(key[:_CLOCK_BYTES]) < cutoff_ns:
            client = key[_CLOCK_BYTES:]
            session = self._decode(txn.get(client, db=self._tables.sessions))
            assert session is not None, f"expiry index names a missing session {client!r}"
            assert session.indexed_ns == unpack_uint64(key[:_CLOCK_BYTES]), (client, session)
            cursor.delete()
            if session.last_active_ns < cutoff_ns:
                txn.delete(client, db=self._tables.sessions)
            else:
                # Active since it was indexed: list it at its last activity, at or after the
                # cutoff, so each turn of this loop leaves one entry fewer before it.
                txn.put(pack_uint64(session.last_active_ns) + client, b"", True, True, False,
                        self._tables.session_expiry)
                self._put(txn, client, session.last_seq, session.encoded_result, session.last_active_ns,
                          session.last_active_ns)
                cursor.first()  # the put may have moved the cursor's page: look again from the start
            key = cursor.key()
        return unpack_uint64(key[:_CLOCK_BYTES]) if key else NO_SESSION_NS

    def get(self, txn: lmdb.Transaction, client: str) -> Session | None:
        return self._decode(txn.get(client.encode("utf-8"), None, self._tables.sessions))

    @staticmethod
    def _decode(value: bytes | None) -> Session | None:
        if value is None:
            return None
        if value[0] == _LEGACY_FIRST_BYTE:
            last_seq, result, last_active_ns = msgpack.unpackb(value, raw=False)
            return Session(last_seq, packb(result), last_active_ns, last_active_ns)
        last_seq, last_active_ns, indexed_ns = _HEAD.unpack_from(value)
        # tuple.__new__, in the field order asserted below: the NamedTuple's __new__ is a
        # Python call, and a session is read per applied write.
        return _new_tuple(Session, (last_seq, value[_HEAD.size :], last_active_ns, indexed_ns))

    def record(self, txn: lmdb.Transaction, client: str, previous: Session | None, seq: int, result: dict,
               clock_ns: int, oldest_floor_ns: int | None) -> int | None:
        """Remember `result` as the client's last; `previous` is what get() returned for it in
        this transaction (passed in: apply has just read it, and reading it twice was a cost).
        Returns oldest_floor_ns, the bound expire() returned, lowered to clock_ns if above it:
        the session stored is active at clock_ns."""
        assert 0 < seq < SEQ_MAX, seq
        client_key = client.encode("utf-8")
        if previous is None:
            indexed_ns = clock_ns
            txn.put(pack_uint64(clock_ns) + client_key, b"", True, True, False, self._tables.session_expiry)
        elif clock_ns - previous.indexed_ns < self._reindex_after_ns:
            assert seq > previous.last_seq, (client, seq, previous.last_seq)
            indexed_ns = previous.indexed_ns  # its index entry stays: see the module's docstring
        else:
            assert seq > previous.last_seq, (client, seq, previous.last_seq)
            deleted = txn.delete(pack_uint64(previous.indexed_ns) + client_key, b"", self._tables.session_expiry)
            assert deleted, f"session {client!r} missing from the expiry index"
            indexed_ns = clock_ns
            txn.put(pack_uint64(clock_ns) + client_key, b"", True, True, False, self._tables.session_expiry)
        self._put(txn, client_key, seq, packb(result), clock_ns, indexed_ns)
        return oldest_floor_ns if oldest_floor_ns is None or oldest_floor_ns <= clock_ns else clock_ns

    def _put(self, txn: lmdb.Transaction, client_key: bytes, seq: int, encoded_result: bytes, last_active_ns: int,
             indexed_ns: int) -> None:
        assert indexed_ns <= last_active_ns, (client_key, indexed_ns, last_active_ns)
        value = _HEAD.pack(seq, last_active_ns, indexed_ns) + encoded_result
        txn.put(client_key, value, True, True, False, self._tables.sessions)
