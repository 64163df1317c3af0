"""Where each chunk's copies are: replicated state, changed only by log entries.

A file record names the replicas its chunks were written to. This table holds the current
answer for every referenced chunk, whichever files share it: write_file adds the nodes it
wrote to (chunk_refs.add), the leader's repair scheduler adds a copy it made and verified
(add_replica) and forgets one it dropped or found missing (drop_replica), and the entry goes
when no file references the chunk any more (chunk_refs.remove). Reads (`read`, `stat`) answer
with these replicas, so a client finds a copy made after the file was written.

Invariant, checked in apply: a referenced chunk always has at least one recorded replica
(drop_replica of the last one is refused), so no decision recorded here can be the one that
makes a file unreadable.

  ns.chunk_replicas  32-byte chunk id -> msgpack [size, [node id, ...] ascending]
"""

from __future__ import annotations

from typing import Iterator, NamedTuple

import lmdb
import msgpack

from node.errors import BadRequest, NotFound, Refused
from node.metadata.tables import NamespaceTables
from node.names import NODE_ID_RULE, is_valid_node_id
from node.packing import packb


class ChunkReplicas(NamedTuple):
    size: int
    nodes: tuple[str, ...]  # ascending

    def encode(self) -> bytes:
        assert self.size >= 1 and self.nodes, self
        assert list(self.nodes) == sorted(set(self.nodes)), self.nodes
        return packb([self.size, list(self.nodes)])

    @staticmethod
    def decode(value: bytes) -> "ChunkReplicas":
        size, nodes = msgpack.unpackb(value, raw=False)
        return ChunkReplicas(size, tuple(nodes))


def get(txn: lmdb.Transaction, tables: NamespaceTables, chunk_id: bytes) -> ChunkReplicas | None:
    value = txn.get(chunk_id, None, tables.chunk_replicas)  # positional (tables.py): per chunk of every read
    return None if value is None else ChunkReplicas.decode(value)


def _put(txn: lmdb.Transaction, tables: NamespaceTables, chunk_id: bytes, replicas: ChunkReplicas) -> None:
    txn.put(chunk_id, replicas.encode(), db=tables.chunk_replicas)


def record_written(txn: lmdb.Transaction, tables: NamespaceTables, chunk_id: bytes, size: int, nodes: list) -> None:
    """A file was written with this chunk on `nodes` (durable there before the record was
    proposed): those nodes join whatever is recorded already."""
    assert nodes, "a chunk is written to at least one replica (checked when decoded)"
    known = get(txn, tables, chunk_id)
    merged = set(nodes) | (set(known.nodes) if known is not None else set())
    _put(txn, tables, chunk_id, ChunkReplicas(size, tuple(sorted(merged))))


def forget(txn: lmdb.Transaction, tables: NamespaceTables, chunk_id: bytes) -> None:
    """No file references the chunk any more: its copies are garbage for each node's GC."""
    txn.delete(chunk_id, db=tables.chunk_replicas)


def apply_add(txn: lmdb.Transaction, tables: NamespaceTables, chunk_id: bytes, node: str) -> dict:
    """add_replica: NotFound if no file references the chunk (deleted meanwhile: the new copy
    is an orphan that GC collects). Adding a recorded replica again changes nothing."""
    known = get(txn, tables, chunk_id)
    if known is None:
        raise NotFound(f"chunk {chunk_id.hex()} is not referenced by any file")
    if node not in known.nodes:
        known = ChunkReplicas(known.size, tuple(sorted((*known.nodes, node))))
        _put(txn, tables, chunk_id, known)
    return {"chunk": chunk_id, "replicas": list(known.nodes)}


def apply_drop(txn: lmdb.Transaction, tables: NamespaceTables, chunk_id: bytes, node: str) -> dict:
    """drop_replica: NotFound if the chunk or that replica is not recorded; Refused for the
    chunk's last recorded replica."""
    known = get(txn, tables, chunk_id)
    if known is None or node not in known.nodes:
        raise NotFound(f"chunk {chunk_id.hex()} has no recorded replica on {node}")
    if len(known.nodes) == 1:
        raise Refused(f"{node} holds the last recorded replica of chunk {chunk_id.hex()}; it is never dropped")
    remaining = tuple(other for other in known.nodes if other != node)
    _put(txn, tables, chunk_id, ChunkReplicas(known.size, remaining))
    assert remaining and len(remaining) == len(known.nodes) - 1
    return {"chunk": chunk_id, "replicas": list(remaining)}


def current_chunks(txn: lmdb.Transaction, tables: NamespaceTables, chunks: list) -> list:
    """A file's chunk list with each chunk's replicas as recorded now (the record's own list
    for a chunk this table does not know: written before the table existed)."""
    current = []
    for chunk_id, size, written_to in chunks:
        known = get(txn, tables, chunk_id)
        current.append([chunk_id, size, list(known.nodes) if known is not None else written_to])
    return current


def iterate(txn: lmdb.Transaction, tables: NamespaceTables) -> Iterator[tuple[bytes, ChunkReplicas]]:
    """Every recorded chunk, in id order."""
    for key, value in txn.cursor(db=tables.chunk_replicas):
        yield bytes(key), ChunkReplicas.decode(value)


def check_node_id(node: str) -> str:
    """Replica node ids arrive in log entries: checked by the rule the config uses."""
    if not is_valid_node_id(node):
        raise BadRequest(f"{node!r} is not a node id ({NODE_ID_RULE})")
    return node
