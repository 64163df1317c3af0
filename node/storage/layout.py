"""How the Raft log, hard state, membership and snapshot sit in LMDB: tables, keys, values.

Persisted formats are pinned: changing an encoding here breaks every existing data directory.

  raft.log       8-byte big-endian index -> msgpack [term, kind, data]
  raft.meta      a few named keys (below) -> msgpack values
  raft.snapshot  8-byte big-endian chunk number -> up to SNAPSHOT_CHUNK_BYTES of snapshot data

The log holds entries (base_index, last_index]; the "log base" (index, term) is the entry just
before the first one: the snapshot's last entry or the last compacted one. Its term is all Raft
still needs from it (Storage.term(first_index() - 1)).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import lmdb
import msgpack

from node.packing import packb
from node.raft.types import NO_INDEX, NO_TERM, ConfState, Entry, EntryKind, HardState, SnapshotMeta

LOG_TABLE = b"raft.log"
META_TABLE = b"raft.meta"
SNAPSHOT_TABLE = b"raft.snapshot"

KEY_HARD_STATE = b"hard_state"
KEY_CONF_STATE = b"conf_state"
KEY_APPLIED_INDEX = b"applied_index"
KEY_LOG_BASE = b"log_base"
KEY_SNAPSHOT_META = b"snapshot_meta"

SNAPSHOT_CHUNK_BYTES = 1 << 20  # well under LMDB's comfortable value size, few keys for 50 MB

_INDEX = struct.Struct(">Q")
# A msgpack array header (1 byte) plus an unsigned int (at most 9 bytes) hold the term.
_TERM_PREFIX_BYTES = 10


@dataclass(frozen=True, slots=True)
class RaftTables:
    log: object  # lmdb._Database handles; lmdb exposes no public type for them
    meta: object
    snapshot: object

    @staticmethod
    def open(env: lmdb.Environment) -> "RaftTables":
        return RaftTables(
            log=env.open_db(LOG_TABLE),
            meta=env.open_db(META_TABLE),
            snapshot=env.open_db(SNAPSHOT_TABLE),
        )


@dataclass(frozen=True, slots=True)
class LogBounds:
    """The log holds entries (base_index, last_index]; cached in memory for the read path."""

    base_index: int
    base_term: int
    last_index: int
    last_term: int

    def __post_init__(self) -> None:
        assert 0 <= self.base_index <= self.last_index, self
        assert 0 <= self.base_term <= self.last_term, self

    @property
    def first_index(self) -> int:
        return self.base_index + 1


def index_key(index: int) -> bytes:
    return _INDEX.pack(index)


def key_index(key: bytes) -> int:
    return _INDEX.unpack(key)[0]


def encode_entry(entry: Entry) -> bytes:
    return packb([entry.term, int(entry.kind), entry.data])


# A dict lookup instead of EntryKind(kind): calling an enum class is slow, and the leader
# decodes every entry it sends to a follower. An unknown stored kind is a KeyError, as loud.
_ENTRY_KINDS = {int(kind): kind for kind in EntryKind}


def decode_entry(index: int, value: bytes) -> Entry:
    term, kind, data = msgpack.unpackb(value, raw=False)
    return Entry(term=term, index=index, kind=_ENTRY_KINDS[kind], data=data)


def decode_entry_term(value: bytes) -> int:
    """The term alone, without copying the entry's data (entries can be megabytes)."""
    unpacker = msgpack.Unpacker(raw=False)
    unpacker.feed(value[:_TERM_PREFIX_BYTES])
    field_count = unpacker.read_array_header()
    assert field_count == 3, field_count
    return unpacker.unpack()


def encode_hard_state(hard_state: HardState) -> bytes:
    return packb([hard_state.term, hard_state.vote, hard_state.commit])


def decode_hard_state(value: bytes | None) -> HardState:
    if value is None:
        return HardState()
    term, vote, commit = msgpack.unpackb(value, raw=False)
    return HardState(term=term, vote=vote, commit=commit)


def encode_conf_state(conf_state: ConfState) -> bytes:
    return msgpack.packb(conf_state.to_dict())


def decode_conf_state(value: bytes | None) -> ConfState:
    if value is None:
        return ConfState()
    return ConfState.from_dict(msgpack.unpackb(value, raw=False))


def encode_snapshot_meta(meta: SnapshotMeta) -> bytes:
    return msgpack.packb([meta.index, meta.term, meta.conf_state.to_dict(), meta.size_bytes])


def decode_snapshot_meta(value: bytes | None) -> SnapshotMeta:
    if value is None:
        return SnapshotMeta()
    index, term, conf_state, size_bytes = msgpack.unpackb(value, raw=False)
    return SnapshotMeta(index=index, term=term, conf_state=ConfState.from_dict(conf_state), size_bytes=size_bytes)


def read_applied_index(txn: lmdb.Transaction, tables: RaftTables) -> int:
    value = txn.get(KEY_APPLIED_INDEX, db=tables.meta)
    return NO_INDEX if value is None else key_index(value)


def encode_log_base(index: int, term: int) -> bytes:
    return msgpack.packb([index, term])


def read_log_bounds(txn: lmdb.Transaction, tables: RaftTables) -> LogBounds:
    """Derive the bounds from the tables (at open; afterwards they are kept in memory)."""
    value = txn.get(KEY_LOG_BASE, db=tables.meta)
    base_index, base_term = (NO_INDEX, NO_TERM) if value is None else msgpack.unpackb(value)
    cursor = txn.cursor(db=tables.log)
    if not cursor.last():
        return LogBounds(base_index, base_term, base_index, base_term)
    last_index = key_index(cursor.key())
    assert last_index > base_index, (last_index, base_index)
    return LogBounds(base_index, base_term, last_index, decode_entry_term(cursor.value()))
