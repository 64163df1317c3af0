"""The namespace as one value: snapshot image, restore, and a digest to compare replicas.

The image copies every namespace table verbatim (inodes, directory entries, chunk counts,
sessions, the log clock), so a restored node is byte-for-byte the node that took it.

Encoding (pinned): msgpack [IMAGE_VERSION, [[table name, [key, value, key, value, ...]], ...]]
with tables in NamespaceTables.in_order() and keys ascending, as LMDB iterates them.
"""

from __future__ import annotations

import hashlib
import struct

import lmdb
import msgpack

from node.errors import BadRequest
from node.metadata.tables import NamespaceTables

IMAGE_VERSION = 1

_LENGTH = struct.Struct(">I")
_MAX_KEY_BYTES = 511  # LMDB's default compile-time limit


def snapshot_data(txn: lmdb.Transaction, tables: NamespaceTables) -> bytes:
    image = []
    for table_name, handle in tables.in_order():
        flat: list[bytes] = []
        for key, value in txn.cursor(db=handle):
            flat.append(key)
            flat.append(value)
        image.append([table_name, flat])
    return msgpack.packb([IMAGE_VERSION, image], use_bin_type=True)


def restore(txn: lmdb.Transaction, tables: NamespaceTables, data: bytes) -> None:
    """Replace ALL namespace state by the image. A malformed image raises BadRequest before
    anything is changed (it arrived from a peer)."""
    image = _decoded(data, tables)
    for (_, handle), (_, flat) in zip(tables.in_order(), image):
        txn.drop(handle, delete=False)
        items = list(zip(flat[0::2], flat[1::2]))
        consumed, added = txn.cursor(db=handle).putmulti(items, append=True)
        assert consumed == added == len(items), (consumed, added, len(items))


def digest(txn: lmdb.Transaction, tables: NamespaceTables) -> str:
    """Hex SHA-256 of every namespace table: equal state, equal digest, on any node."""
    hasher = hashlib.sha256()
    for table_name, handle in tables.in_order():
        hasher.update(_LENGTH.pack(len(table_name)) + table_name)
        for key, value in txn.cursor(db=handle):
            hasher.update(_LENGTH.pack(len(key)) + key)
            hasher.update(_LENGTH.pack(len(value)) + value)
    return hasher.hexdigest()


def _decoded(data: bytes, tables: NamespaceTables) -> list:
    try:
        value = msgpack.unpackb(data, raw=False)
    except Exception as error:  # msgpack raises several unrelated types for garbage
        raise BadRequest(f"undecodable namespace snapshot: {type(error).__name__}") from None
    if not isinstance(value, list) or len(value) != 2 or value[0] != IMAGE_VERSION:
        raise BadRequest(f"namespace snapshot is not a version {IMAGE_VERSION} image")
    image = value[1]
    expected_names = [table_name for table_name, _ in tables.in_order()]
    if not isinstance(image, list) or [_table_name(table) for table in image] != expected_names:
        raise BadRequest("namespace snapshot does not hold the expected tables")
    for table_name, flat in image:
        if not isinstance(flat, list) or len(flat) % 2 or not all(isinstance(item, bytes) for item in flat):
            raise BadRequest(f"namespace snapshot table {table_name!r} is malformed")
        keys = flat[0::2]
        if not all(0 < len(key) <= _MAX_KEY_BYTES for key in keys):
            raise BadRequest(f"namespace snapshot table {table_name!r} has a key LMDB cannot store")
        if any(key >= following for key, following in zip(keys, keys[1:])):
            raise BadRequest(f"namespace snapshot table {table_name!r} has keys out of order")
    return image


def _table_name(table: object) -> object:
    if isinstance(table, list) and len(table) == 2:
        return table[0]
    return None
