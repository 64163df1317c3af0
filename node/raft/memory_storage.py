"""MemoryStorage: the in-memory Storage used by tests and the simulator.

The driver (or a test) records in it what a Ready asked to persist: append(), set_hard_state(),
apply_snapshot(), set_conf_state(), and later create_snapshot() + compact() for log compaction.
`_entries[0]` is a placeholder for the snapshot's last entry, so its term stays known after
compaction (the same trick as etcd's MemoryStorage).
"""

from __future__ import annotations

from node.raft.errors import Compacted, Unavailable
from node.raft.types import (NO_INDEX, NO_TERM, ConfState, Entry, EntryKind, HardState, Snapshot, SnapshotMeta,
                             prefix_within)


class SnapshotOutOfDate(Exception):
    """apply_snapshot / create_snapshot was given an index older than the current snapshot."""


class MemoryStorage:
    def __init__(self) -> None:
        self._hard_state = HardState()
        self._conf_state = ConfState()
        self._snapshot = Snapshot(meta=SnapshotMeta())
        self._entries: list[Entry] = [Entry(term=NO_TERM, index=NO_INDEX, kind=EntryKind.NOOP)]

    # -- Storage protocol -------------------------------------------------------------------

    def initial_state(self) -> tuple[HardState, ConfState]:
        return self._hard_state, self._conf_state

    def entries(self, low: int, high: int, bytes_max: int | None = None) -> list[Entry]:
        assert low <= high, (low, high)
        if low < self.first_index():
            raise Compacted(f"index {low} is compacted (first index {self.first_index()})")
        if high > self.last_index() + 1:
            raise Unavailable(f"index {high - 1} is beyond the last index {self.last_index()}")
        offset = self._entries[0].index
        if bytes_max is not None:
            high = offset + prefix_within(self._entries, low - offset, high - offset, bytes_max)
        return self._entries[low - offset : high - offset]

    def term(self, index: int) -> int:
        offset = self._entries[0].index
        if index < offset:
            raise Compacted(f"term of index {index} is compacted (snapshot index {offset})")
        if index > self.last_index():
            raise Unavailable(f"index {index} is beyond the last index {self.last_index()}")
        return self._entries[index - offset].term

    def first_index(self) -> int:
        return self._entries[0].index + 1

    def last_index(self) -> int:
        return self._entries[0].index + len(self._entries) - 1

    def snapshot(self) -> Snapshot:
        return self._snapshot

    # -- Recording what the driver persisted ------------------------------------------------

    def set_hard_state(self, hard_state: HardState) -> None:
        self._hard_state = hard_state

    def set_conf_state(self, conf_state: ConfState) -> None:
        self._conf_state = conf_state

    def append(self, entries: list[Entry] | tuple[Entry, ...]) -> None:
        """Store entries, replacing any stored entry at the same or a higher index.
        Entries already covered by the snapshot are skipped."""
        if not entries:
            return
        for before, after in zip(entries, entries[1:]):
            assert after.index == before.index + 1, "entries must be contiguous"
        first_new = entries[0].index
        assert first_new <= self.last_index() + 1, "appending would leave a gap"
        if entries[-1].index < self.first_index():
            return
        if first_new < self.first_index():
            entries = entries[self.first_index() - first_new :]
            first_new = entries[0].index
        offset = self._entries[0].index
        del self._entries[first_new - offset :]
        self._entries.extend(entries)

    def apply_snapshot(self, snapshot: Snapshot) -> None:
        """Replace the whole log by a snapshot received from the leader."""
        if snapshot.meta.index <= self._snapshot.meta.index:
            raise SnapshotOutOfDate(f"snapshot {snapshot.meta.index} is not newer than {self._snapshot.meta.index}")
        self._snapshot = snapshot
        self._conf_state = snapshot.meta.conf_state
        self._entries = [Entry(term=snapshot.meta.term, index=snapshot.meta.index, kind=EntryKind.NOOP)]
        if self._hard_state.commit < snapshot.meta.index:
            self._hard_state = HardState(self._hard_state.term, self._hard_state.vote, snapshot.meta.index)

    def create_snapshot(self, index: int, conf_state: ConfState, data: bytes) -> Snapshot:
        """Record a snapshot of the state machine as of `index` (which must be applied)."""
        if index <= self._snapshot.meta.index:
            raise SnapshotOutOfDate(f"snapshot {index} is not newer than {self._snapshot.meta.index}")
        assert index <= self.last_index(), (index, self.last_index())
        meta = SnapshotMeta(index=index, term=self.term(index), conf_state=conf_state, size_bytes=len(data))
        self._snapshot = Snapshot(meta=meta, data=data)
        return self._snapshot

    def compact(self, index: int) -> None:
        """Drop entries up to and including `index` (keeping its term as the placeholder)."""
        offset = self._entries[0].index
        if index <= offset:
            raise Compacted(f"index {index} is already compacted (snapshot index {offset})")
        assert index <= self.last_index(), (index, self.last_index())
        assert index <= self._snapshot.meta.index, "compact only what a snapshot covers"
        kept = self._entries[index - offset :]
        placeholder = Entry(term=kept[0].term, index=kept[0].index, kind=EntryKind.NOOP)
        self._entries = [placeholder] + kept[1:]
