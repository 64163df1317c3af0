"""The part of the log not yet persisted: entries (and maybe a snapshot) the driver has not
stored yet. Entries and the snapshot handed out in a Ready are "in progress" until advance()
confirms they were stored, so they are never handed out twice.
"""

from __future__ import annotations

from node.raft.types import Entry, Snapshot


class Unstable:
    def __init__(self, offset: int) -> None:
        assert offset >= 1
        self.snapshot: Snapshot | None = None
        self.entries: list[Entry] = []
        self.offset = offset  # index of entries[0], or of the next entry when empty
        self.snapshot_in_progress = False
        self.offset_in_progress = offset  # entries below it were handed out already

    def maybe_first_index(self) -> int | None:
        return self.snapshot.meta.index + 1 if self.snapshot else None

    def maybe_last_index(self) -> int | None:
        if self.entries:
            return self.offset + len(self.entries) - 1
        return self.snapshot.meta.index if self.snapshot else None

    def maybe_term(self, index: int) -> int | None:
        if index < self.offset:
            if self.snapshot and self.snapshot.meta.index == index:
                return self.snapshot.meta.term
            return None
        last = self.maybe_last_index()
        if last is None or index > last:
            return None
        return self.entries[index - self.offset].term

    def next_entries(self) -> list[Entry]:
        """Entries not yet handed out for persisting."""
        start = self.offset_in_progress - self.offset
        assert 0 <= start <= len(self.entries)
        return self.entries[start:]

    def has_next_entries(self) -> bool:
        """Whether next_entries() is non-empty (without copying them)."""
        return self.offset_in_progress < self.offset + len(self.entries)

    def next_snapshot(self) -> Snapshot | None:
        if self.snapshot is None or self.snapshot_in_progress:
            return None
        return self.snapshot

    def accept_in_progress(self) -> None:
        """Everything current has been handed out in a Ready."""
        self.offset_in_progress = self.offset + len(self.entries)
        self.snapshot_in_progress = self.snapshot is not None

    def stable_to(self, index: int, term: int) -> None:
        """Entries up to index (of that term) are persisted. Ignored when they were replaced
        meanwhile (a new leader overwrote them)."""
        if self.maybe_term(index) != term or index < self.offset:
            return
        del self.entries[: index + 1 - self.offset]
        self.offset = index + 1
        self.offset_in_progress = max(self.offset_in_progress, self.offset)

    def stable_snapshot_to(self, index: int) -> None:
        if self.snapshot is not None and self.snapshot.meta.index == index:
            self.snapshot = None
            self.snapshot_in_progress = False

    def restore(self, snapshot: Snapshot) -> None:
        self.offset = snapshot.meta.index + 1
        self.offset_in_progress = self.offset
        self.entries = []
        self.snapshot = snapshot
        self.snapshot_in_progress = False

    def truncate_and_append(self, entries: list[Entry]) -> None:
        assert entries
        first = entries[0].index
        if first == self.offset + len(self.entries):
            self.entries.extend(entries)
        elif first <= self.offset:
            # Replaces everything unstable (and some persisted entries: the driver overwrites).
            self.offset = first
            self.offset_in_progress = first
            self.entries = list(entries)
        else:
            del self.entries[first - self.offset :]
            self.entries.extend(entries)
            self.offset_in_progress = min(self.offset_in_progress, first)
        assert self.offset <= self.offset_in_progress <= self.offset + len(self.entries)
