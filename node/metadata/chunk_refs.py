"""Reference counts of chunks: how many file chunk slots name each chunk id.

A file that holds the same chunk twice counts twice, so every write, overwrite and removal
adjusts the counts by exactly the chunk list it adds or drops. A chunk whose count reaches
zero leaves the table: the chunk store's garbage collector then sees it as unreferenced.
"""

from __future__ import annotations

import lmdb

from node.metadata import replicas
from node.metadata.tables import NamespaceTables, pack_uint64, unpack_uint64


def add(txn: lmdb.Transaction, tables: NamespaceTables, chunks: list) -> None:
    for chunk_id, size, written_to in chunks:
        value = txn.get(chunk_id, db=tables.chunk_refs)
        count = 0 if value is None else unpack_uint64(value)
        txn.put(chunk_id, pack_uint64(count + 1), db=tables.chunk_refs)
        replicas.record_written(txn, tables, chunk_id, size, written_to)


def remove(txn: lmdb.Transaction, tables: NamespaceTables, chunks: list) -> None:
    for chunk_id, _size, _replicas in chunks:
        value = txn.get(chunk_id, db=tables.chunk_refs)
        assert value is not None, f"chunk {chunk_id.hex()} dropped more often than added"
        count = unpack_uint64(value) - 1
        if count == 0:
            txn.delete(chunk_id, db=tables.chunk_refs)
            replicas.forget(txn, tables, chunk_id)
        else:
            txn.put(chunk_id, pack_uint64(count), db=tables.chunk_refs)


def referenced(txn: lmdb.Transaction, tables: NamespaceTables) -> set[bytes]:
    return {bytes(key) for key in txn.cursor(db=tables.chunk_refs).iternext(keys=True, values=False)}
