"""The directories that reads found, kept for as long as the snapshot they read stays the same.

At one outstanding read, every read is a batch of its own in a read transaction of its own, so
a memo per transaction never helps: each read walked its whole path again (4 levels for
/bench/run/read/fNNN, most of a read's cost). LMDB gives every committed write transaction a
new id, and a read transaction reports the id of the snapshot it reads (Transaction.id()): two
read transactions with the same id see the same tables, so what one found (tree.resolve's
directories map: path -> (inode, parent inode)) holds in the other. A new snapshot, after any
write, starts an empty map.
"""

from __future__ import annotations

import lmdb

DIRECTORIES_MAX = 4096  # paths remembered per snapshot; past it, the map starts over


class SnapshotDirectories:
    """One map of directories per snapshot, for the queries of one thread (not thread-safe)."""

    __slots__ = ("_snapshot_id", "_directories")

    def __init__(self) -> None:
        self._snapshot_id = -1  # no snapshot has this id
        self._directories: dict[str, tuple[int, int]] = {}

    def for_transaction(self, txn: lmdb.Transaction) -> dict[str, tuple[int, int]]:
        """The directories known to exist in `txn`'s snapshot (read-only `txn`): pass it to the
        queries (Namespace.read, stat, ls), which add what they find."""
        snapshot_id = txn.id()
        if snapshot_id != self._snapshot_id or len(self._directories) > DIRECTORIES_MAX:
            self._snapshot_id = snapshot_id
            self._directories = {}
        return self._directories
