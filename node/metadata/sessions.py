"""Client sessions: the exactly-once memory of the state machine.

Each client keeps its last applied seq and the result it got. A retried write (same seq) is
answered from here instead of being applied twice. Sessions idle for longer than the TTL are
forgotten, measured by the log's own clock (the largest now_ns any command carried), so every
node expires the same sessions at the same entry.

Every applied write reads its client's session and writes it again, so the stored value keeps
the two numbers apply needs in a fixed-size head and the result after it, decoded only for a
retry (decoding the result dict was most of the cost of reading a session):

  struct ">QQ" (last seq, last active clock ns) + msgpack(stored result)

A value written before this format (msgpack [last seq, result, last active clock ns]) starts
with a 3-element array header, which no head can start with (a seq is below 2**62: its first
byte is below 0x40), and is still read.
"""

from __future__ import annotations

import struct
from typing import NamedTuple

import lmdb
import msgpack

from node.metadata.tables import KEY_CLOCK_NS, NamespaceTables, pack_uint64, unpack_uint64
from node.packing import packb

_CLOCK_BYTES = 8
_HEAD = struct.Struct(">QQ")  # last seq, last active clock ns
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

    def result(self) -> dict:
        return msgpack.unpackb(self.encoded_result, raw=False)


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
        txn.put(KEY_CLOCK_NS, pack_uint64(clock_ns), True, True, False, self._tables.meta)  # positional: tables.py

    def expire(self, txn: lmdb.Transaction, clock_ns: int, oldest_floor_ns: int | None = None) -> int:
        """Forget sessions idle for longer than the TTL. Walks the expiry index in time
        order, so the cost is the number expired, not the number of sessions.

        oldest_floor_ns: a bound, known in this transaction, that no session in it was last
        active before (None: unknown); with cutoff at or below it nothing can expire and the
        index is not read (apply asks once per write). Returns such a bound for the caller to
        keep (record() may lower it: see oldest_floor_after_record)."""
        cutoff_ns = clock_ns - self._ttl_ns
        if oldest_floor_ns is not None and cutoff_ns <= oldest_floor_ns:
            return oldest_floor_ns
        cursor = txn.cursor(db=self._tables.session_expiry)
        cursor.first()
        key = cursor.key()
        while key and unpack_uint64(key[:_CLOCK_BYTES]) < cutoff_ns:
            client = key[_CLOCK_BYTES:]
            deleted = txn.delete(client, db=self._tables.sessions)
            assert deleted, f"expiry index names a missing session {client!r}"
            cursor.delete()
            key = cursor.key()
        return unpack_uint64(key[:_CLOCK_BYTES]) if key else NO_SESSION_NS

    @staticmethod
    def oldest_floor_after_record(oldest_floor_ns: int | None, clock_ns: int) -> int | None:
        """The floor expire() returned, once record() stored a session active at clock_ns."""
        return None if oldest_floor_ns is None else min(oldest_floor_ns, clock_ns)

    def get(self, txn: lmdb.Transaction, client: str) -> Session | None:
        value = txn.get(client.encode("utf-8"), None, self._tables.sessions)
        if value is None:
            return None
        if value[0] == _LEGACY_FIRST_BYTE:
            last_seq, result, last_active_ns = msgpack.unpackb(value, raw=False)
            return Session(last_seq, packb(result), last_active_ns)
        last_seq, last_active_ns = _HEAD.unpack_from(value)
        return Session(last_seq, value[_HEAD.size :], last_active_ns)

    def record(self, txn: lmdb.Transaction, client: str, previous: Session | None, seq: int, result: dict,
               clock_ns: int) -> None:
        """Remember `result` as the client's last; `previous` is what get() returned for it in
        this transaction (passed in: apply has just read it, and reading it twice was a cost)."""
        assert 0 < seq < SEQ_MAX, seq
        client_key = client.encode("utf-8")
        if previous is not None:
            assert seq > previous.last_seq, (client, seq, previous.last_seq)
            deleted = txn.delete(pack_uint64(previous.last_active_ns) + client_key, b"", self._tables.session_expiry)
            assert deleted, f"session {client!r} missing from the expiry index"
        txn.put(client_key, _HEAD.pack(seq, clock_ns) + packb(result), True, True, False, self._tables.sessions)
        txn.put(pack_uint64(clock_ns) + client_key, b"", True, True, False, self._tables.session_expiry)
