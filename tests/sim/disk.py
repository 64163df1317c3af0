"""A simulated node's disk: the Raft storage plus the applied state machine.

Everything here survives a crash. The driver writes it only while carrying out a Ready, and
writes the persisted log, hard state, applied entries and applied index together: the model
of the real driver's single LMDB transaction.

The state machine is the list of applied entries itself, so that a snapshot can be checked
entry by entry against what every other node applied.
"""

from __future__ import annotations

from dataclasses import dataclass

import msgpack

from node.raft.memory_storage import MemoryStorage
from node.raft.types import ConfState, Entry, Snapshot


@dataclass(frozen=True, slots=True)
class AppliedEntry:
    index: int
    term: int
    kind: int
    data: bytes


def encode_state(applied: list[AppliedEntry]) -> bytes:
    return msgpack.packb([[a.index, a.term, a.kind, a.data] for a in applied], use_bin_type=True)


def decode_state(data: bytes) -> list[AppliedEntry]:
    if not data:
        return []
    return [AppliedEntry(index, term, kind, payload) for index, term, kind, payload in msgpack.unpackb(data, raw=False)]


class Disk:
    def __init__(self) -> None:
        self.storage = MemoryStorage()
        self.applied: list[AppliedEntry] = []
        self.applied_index = 0

    @property
    def hard_state(self):
        return self.storage.initial_state()[0]

    @property
    def conf_state(self) -> ConfState:
        return self.storage.initial_state()[1]

    def apply(self, entry: Entry) -> None:
        assert entry.index == self.applied_index + 1, (entry.index, self.applied_index)
        self.applied.append(AppliedEntry(entry.index, entry.term, int(entry.kind), entry.data))
        self.applied_index = entry.index

    def restore(self, snapshot: Snapshot) -> None:
        """Replace the log and the state machine by a snapshot received from the leader."""
        self.storage.apply_snapshot(snapshot)
        self.applied = decode_state(snapshot.data)
        self.applied_index = snapshot.meta.index
        assert not self.applied or self.applied[-1].index == self.applied_index

    def take_snapshot(self, keep_entries: int) -> int | None:
        """Snapshot the state machine at the applied index and compact the log, keeping the
        last `keep_entries` entries before it. Returns the compacted index, None if nothing
        could be compacted."""
        index = self.applied_index
        if index <= self.storage.snapshot().meta.index or index > self.storage.last_index():
            return None
        self.storage.create_snapshot(index, self.conf_state, encode_state(self.applied))
        compact_index = max(index - keep_entries, self.storage.first_index())
        if compact_index < self.storage.first_index() or compact_index > index:
            return None
        self.storage.compact(compact_index)
        return compact_index
