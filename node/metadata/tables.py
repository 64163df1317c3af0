"""Where the namespace lives in LMDB: its tables, keys and the record of a file or directory.

Every file and directory is an inode with a number that is never reused. A directory's entries
are keys "parent inode + name", so ls is one prefix range scan and mv of a whole tree moves one
key. Persisted formats are pinned: changing them breaks existing data directories.

  ns.inodes          8-byte inode -> Record (msgpack)
  ns.children        8-byte parent inode + UTF-8 name -> 8-byte child inode
  ns.chunk_refs      32-byte chunk id -> 8-byte count of references from files
  ns.sessions        UTF-8 client id -> ">QQ" last seq, last active clock ns + msgpack stored result
                     (sessions.py; the earlier msgpack [seq, result, clock ns] is still read)
  ns.session_expiry  8-byte last active clock ns + UTF-8 client id -> b"" (expiry in time order)
  ns.meta            b"next_inode", b"clock_ns", b"applied_index" -> 8-byte integers
  ns.chunk_replicas  32-byte chunk id -> msgpack [size, [node id, ...] ascending] (replicas.py)
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import NamedTuple

import lmdb
import msgpack

from node.packing import packb

ROOT_INODE = 1
NO_INODE = 0  # the root's parent

KEY_NEXT_INODE = b"next_inode"
KEY_CLOCK_NS = b"clock_ns"
KEY_APPLIED_INDEX = b"applied_index"

_UINT64 = struct.Struct(">Q")

# Record kinds (pinned: persisted).
KIND_DIRECTORY = 0
KIND_INLINE_FILE = 1
KIND_CHUNKED_FILE = 2


@dataclass(frozen=True, slots=True)
class NamespaceTables:
    inodes: object  # lmdb._Database handles; lmdb exposes no public type for them
    children: object
    chunk_refs: object
    sessions: object
    session_expiry: object
    meta: object
    chunk_replicas: object

    @staticmethod
    def open(env: lmdb.Environment) -> "NamespaceTables":
        return NamespaceTables(**{name: env.open_db(table_name) for name, table_name in TABLE_NAMES.items()})

    def in_order(self) -> list[tuple[bytes, object]]:
        """(table name, handle) in a fixed order: snapshots and digests depend on it."""
        return [(table_name, getattr(self, name)) for name, table_name in TABLE_NAMES.items()]


TABLE_NAMES: dict[str, bytes] = {
    "inodes": b"ns.inodes",
    "children": b"ns.children",
    "chunk_refs": b"ns.chunk_refs",
    "sessions": b"ns.sessions",
    "session_expiry": b"ns.session_expiry",
    "meta": b"ns.meta",
    "chunk_replicas": b"ns.chunk_replicas",
}


# Apply reads and writes about a dozen keys per write. py-lmdb parses keyword arguments much
# more slowly than positional ones (put(key, value, db=table) took 1.4 times put(key, value,
# True, True, False, table)), so the per-write calls pass them positionally:
# get(key, None, table), put(key, value, dupdata, overwrite, append, table), delete(key, b"", table).

# The bound method itself, not a wrapper: several keys are packed per applied write.
pack_uint64 = _UINT64.pack


def unpack_uint64(value: bytes) -> int:
    return _UINT64.unpack(value)[0]


def child_key(parent: int, name: str) -> bytes:
    return _UINT64.pack(parent) + name.encode("utf-8")


def child_name(key: bytes) -> str:
    return key[_UINT64.size :].decode("utf-8")


def children_prefix(parent: int) -> bytes:
    return _UINT64.pack(parent)


_new_tuple = tuple.__new__


class Record(NamedTuple):
    """A directory or a file. A file's content is inline `data` or a list of `chunks`
    ([chunk id, size, [replica node ids]]), never both.

    A NamedTuple rather than a frozen dataclass: immutable all the same, and several records are
    built per applied write and per read (a frozen dataclass's __init__ costs several times
    more). The invariants are asserted in encode(), before a record can be stored."""

    is_directory: bool
    mode: int
    mtime_ns: int
    size: int = 0
    data: bytes | None = None
    chunks: list | None = None

    def encode(self) -> bytes:
        if self.is_directory:
            assert self.size == 0 and self.data is None and self.chunks is None, self
            return packb([KIND_DIRECTORY, self.mode, self.mtime_ns])
        assert (self.data is None) != (self.chunks is None), "a file is inline or chunked"
        if self.data is not None:
            return packb([KIND_INLINE_FILE, self.mode, self.mtime_ns, self.size, self.data])
        return packb([KIND_CHUNKED_FILE, self.mode, self.mtime_ns, self.size, self.chunks])

    @staticmethod
    def encodes_directory(value: bytes) -> bool:
        """Whether an encoded record is a directory, read from its first two bytes without
        decoding it (path resolution passes through every directory above a path)."""
        return value[:2] == _DIRECTORY_HEAD

    @staticmethod
    def decode(value: bytes) -> "Record":
        # Built with tuple.__new__ and every field given: the NamedTuple's own __new__ is a
        # Python function (it only packs its arguments into the tuple), and a record is decoded
        # per read and per applied write.
        fields = msgpack.unpackb(value, raw=False)
        kind = fields[0]
        if kind == KIND_DIRECTORY:
            return _new_tuple(Record, (True, fields[1], fields[2], 0, None, None))
        kind, mode, mtime_ns, size, payload = fields
        if kind == KIND_INLINE_FILE:
            return _new_tuple(Record, (False, mode, mtime_ns, size, payload, None))  # data
        assert kind == KIND_CHUNKED_FILE, kind
        return _new_tuple(Record, (False, mode, mtime_ns, size, None, payload))  # chunks

    def with_mtime(self, mtime_ns: int) -> "Record":
        # Built directly (tuple.__new__, as decode): _replace goes through _make and a dict,
        # several times slower, and every write touches its parent directory's mtime.
        return _new_tuple(Record, (self.is_directory, self.mode, mtime_ns, self.size, self.data, self.chunks))

    def chunk_list(self) -> list:
        return self.chunks or []

    def stat(self, path: str) -> dict:
        result = {
            "path": path,
            "type": "dir" if self.is_directory else "file",
            "size": self.size,
            "mode": self.mode,
            "mtime_ns": self.mtime_ns,
            "inline": self.data is not None,
        }
        if self.chunks is not None:
            result["chunks"] = self.chunks
        return result


# An encoded directory starts with the msgpack header of a 3-element array and the kind
# KIND_DIRECTORY (a positive fixint); an encoded file is a 5-element array of another kind.
_DIRECTORY_HEAD = bytes([0x93, KIND_DIRECTORY])
assert Record(True, 0o755, 1).encode()[:2] == _DIRECTORY_HEAD
assert Record(False, 0o644, 1, 1, data=b"x").encode()[:2] != _DIRECTORY_HEAD
assert Record(False, 0o644, 1, 1, chunks=[]).encode()[:2] != _DIRECTORY_HEAD
# decode builds the fields in this order (tuple.__new__): pinned here, beside the class.
assert Record._fields == ("is_directory", "mode", "mtime_ns", "size", "data", "chunks")
