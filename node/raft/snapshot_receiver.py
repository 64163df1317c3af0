"""A follower's assembly of one snapshot arriving in INSTALL_SNAPSHOT chunks, in memory.

Chunks must arrive in order; the sender waits for each answer before the next chunk, so an
unexpected offset means a lost, duplicated or reordered message (an honest leader sends those
too): it is answered with the offset wanted and its data dropped. What is kept never exceeds
the announced size_bytes (message_checks refuses a chunk reaching beyond it).
"""

from __future__ import annotations

from node.raft.types import NodeId, Snapshot, SnapshotMeta


class SnapshotReceiver:
    def __init__(self, meta: SnapshotMeta, leader: NodeId, term: int) -> None:
        self.meta = meta
        self.leader = leader
        self.term = term
        self._chunks: list[bytes] = []
        self.received_bytes = 0

    def is_for(self, meta: SnapshotMeta, leader: NodeId, term: int) -> bool:
        """Whether a chunk continues this transfer (same snapshot, same leader, same term)."""
        return self.meta == meta and self.leader == leader and self.term == term

    def add_chunk(self, offset: int, data: bytes) -> None:
        assert offset == self.received_bytes, (offset, self.received_bytes)
        # step() refuses a chunk that reaches beyond the announced size: memory stays bounded.
        assert offset + len(data) <= self.meta.size_bytes, (offset, len(data), self.meta.size_bytes)
        self._chunks.append(data)
        self.received_bytes += len(data)

    def snapshot(self) -> Snapshot:
        return Snapshot(meta=self.meta, data=b"".join(self._chunks))
