"""The storage protocol: how the core reads the durable log, hard state and snapshot.

The core never writes storage. The driver persists what a Ready hands it and then records
it in storage (append, set_hard_state, apply_snapshot, compact); `MemoryStorage`
(memory_storage.py) is the test double, the LMDB one lives in node/storage/.

Index conventions: the log holds entries first_index() .. last_index() inclusive. The entry
at first_index() - 1 is the snapshot's last entry: its term is still known through term().
An empty log after a snapshot at index i has first_index() == i + 1 and last_index() == i.
"""

from __future__ import annotations

from typing import Protocol

from node.raft.types import ConfState, Entry, HardState, Snapshot


class Storage(Protocol):
    def initial_state(self) -> tuple[HardState, ConfState]:
        """The hard state and membership to start from (membership as of the applied index)."""

    def entries(self, low: int, high: int, bytes_max: int | None = None) -> list[Entry]:
        """Entries [low, high). Stops early once bytes_max is exceeded, but always returns at
        least one entry when low < high. Raises Compacted if low < first_index(), Unavailable
        if high > last_index() + 1."""

    def term(self, index: int) -> int:
        """Term of the entry at index, for first_index() - 1 <= index <= last_index().
        Raises Compacted below that range and Unavailable above it."""

    def first_index(self) -> int:
        """Index of the first entry still in the log (snapshot index + 1)."""

    def last_index(self) -> int:
        """Index of the last entry (the snapshot index if the log is empty)."""

    def snapshot(self) -> Snapshot:
        """The latest snapshot (meta and data). A storage with none returns meta index 0."""
