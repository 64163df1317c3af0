"""The leader's side of one snapshot transfer to one follower (snapshot_receiver.py is the
other side): the image, read from storage once per send, handed out a chunk at a time.

Flow control: one chunk is out at a time. The follower answers each chunk with the offset it
wants next, so the whole transfer reads the image once and copies each byte once: O(size).
A chunk unanswered for RESEND_AFTER_HEARTBEATS heartbeat rounds is sent again (the chunk or
its answer was lost).
"""

from __future__ import annotations

from node.raft.types import Snapshot, SnapshotMeta

RESEND_AFTER_HEARTBEATS = 2


class SnapshotSender:
    def __init__(self, snapshot: Snapshot, chunk_bytes_max: int) -> None:
        assert snapshot.meta.index > 0, "a snapshot to send covers at least the bootstrap entry"
        assert len(snapshot.data) == snapshot.meta.size_bytes, (len(snapshot.data), snapshot.meta)
        assert chunk_bytes_max >= 1
        self.snapshot = snapshot
        self.chunk_bytes_max = chunk_bytes_max
        self.offset = 0  # the first byte the follower does not have yet
        self.chunk_out = False  # a chunk was sent and its answer has not arrived
        self.heartbeats_unanswered = 0  # heartbeat rounds since that chunk went out

    @property
    def meta(self) -> SnapshotMeta:
        return self.snapshot.meta

    @property
    def index(self) -> int:
        return self.snapshot.meta.index

    @property
    def size_bytes(self) -> int:
        return self.snapshot.meta.size_bytes

    def next_chunk(self) -> tuple[int, bytes, bool]:
        """(offset, data, done) of the chunk the follower wants next; it counts as out."""
        assert 0 <= self.offset <= self.size_bytes, (self.offset, self.size_bytes)
        data = self.snapshot.data[self.offset : self.offset + self.chunk_bytes_max]
        self.chunk_out = True
        self.heartbeats_unanswered = 0
        return self.offset, data, self.offset + len(data) >= self.size_bytes

    def heartbeat_sent(self) -> None:
        if self.chunk_out:
            self.heartbeats_unanswered += 1

    def resend_due(self) -> bool:
        return self.chunk_out and self.heartbeats_unanswered >= RESEND_AFTER_HEARTBEATS

    def answered(self, wanted_offset: int, restart: bool) -> bool:
        """The follower wants `wanted_offset` next (`restart`: it lost what it had and starts
        over). True when a chunk should go out now; False for a duplicate or older answer."""
        assert 0 <= wanted_offset <= self.size_bytes, "the core refuses offsets beyond the image"
        if not restart and wanted_offset <= self.offset:
            return False
        self.offset = wanted_offset
        self.chunk_out = False
        return True
