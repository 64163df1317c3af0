"""WriteBatch: everything the driver persists for one Ready, inside ONE LMDB write transaction.

NodeStore.write_batch() creates it and commits (durably, unless told it may be redone) or aborts it. The batch tracks the
log bounds it produces; the store adopts them only once the transaction has committed, so the
in-memory read path never shows a state that is not on disk.
"""

from __future__ import annotations

import lmdb

from node.raft.types import Entry, HardState, ConfState, Snapshot, SnapshotMeta
from node.storage import layout
from node.storage.layout import LogBounds, RaftTables


class WriteBatch:
    def __init__(self, txn: lmdb.Transaction, tables: RaftTables, bounds: LogBounds) -> None:
        self.txn = txn  # raw write transaction: the state machine applies entries in it too
        self._tables = tables
        self.bounds = bounds
        self._opened_bounds = bounds
        # What the store's in-memory tail of the log must take over on commit: the entries
        # written (each replacing the stored ones from its index on), and whether the log was
        # replaced from a snapshot.
        self.appended: list[Entry] = []
        self.log_replaced = False

    @property
    def changed_log(self) -> bool:
        """Whether this batch changed the log (entries, compaction, snapshot): every change
        replaces the bounds."""
        return self.bounds is not self._opened_bounds

    # -- log ----------------------------------------------------------------------------------

    def append_entries(self, entries: list[Entry] | tuple[Entry, ...]) -> None:
        """Store entries, replacing every stored entry at entries[0].index or above.
        Entries a snapshot already covers are skipped (Raft may resend them)."""
        if not entries:
            return
        for before, after in zip(entries, entries[1:]):
            assert after.index == before.index + 1, "entries must be contiguous"
            assert after.term >= before.term, "terms never decrease along the log"
        assert entries[0].index <= self.bounds.last_index + 1, "appending would leave a gap"
        if entries[0].index <= self.bounds.base_index:
            entries = [entry for entry in entries if entry.index > self.bounds.base_index]
            if not entries:
                return
        assert entries[0].term >= self._term(entries[0].index - 1), "a term lower than its predecessor's"
        if entries[0].index <= self.bounds.last_index:
            # A conflicting suffix. Appended past the end (nearly every batch), there is none:
            # the table holds no key above the log's last index, and no cursor need look.
            self._delete_from(entries[0].index)
        cursor = self.txn.cursor(db=self._tables.log)
        # Keys ascend past the current end of the table, so LMDB can append without searching.
        items = [(layout.index_key(entry.index), layout.encode_entry(entry)) for entry in entries]
        consumed, added = cursor.putmulti(items, append=True)
        assert consumed == added == len(items), (consumed, added, len(items))
        self.bounds = LogBounds(self.bounds.base_index, self.bounds.base_term, entries[-1].index, entries[-1].term)
        if self.appended and self.appended[0].index < entries[0].index:
            del self.appended[entries[0].index - self.appended[0].index :]
        else:
            self.appended = []
        self.appended.extend(entries)

    def compact(self, index: int) -> None:
        """Drop the entries up to and including `index`, which a snapshot must cover. Its term
        stays known as the log base. Compacting an already compacted index does nothing."""
        if index <= self.bounds.base_index:
            return
        assert index <= self.bounds.last_index, (index, self.bounds.last_index)
        snapshot_index = self._snapshot_meta().index
        assert index <= snapshot_index, f"compact({index}) beyond the snapshot at {snapshot_index}"
        term = self._term(index)
        self._delete_through(index)
        self._set_log_base(index, term, self.bounds.last_index, self.bounds.last_term)

    # -- small records ------------------------------------------------------------------------

    def set_hard_state(self, hard_state: HardState) -> None:
        self.txn.put(layout.KEY_HARD_STATE, layout.encode_hard_state(hard_state), db=self._tables.meta)

    def set_conf_state(self, conf_state: ConfState) -> None:
        self.txn.put(layout.KEY_CONF_STATE, layout.encode_conf_state(conf_state), db=self._tables.meta)

    def set_applied_index(self, index: int) -> None:
        previous = self._applied_index()
        assert index >= previous, f"applied index going back from {previous} to {index}"
        # Not bounded by last_index: the "none" replicator applies commands without a log.
        self._put_applied_index(index)

    # -- snapshots ----------------------------------------------------------------------------

    def install_snapshot(self, snapshot: Snapshot) -> None:
        """A follower received `snapshot`: record it, cut the log to what follows it, and take
        its applied index and membership. The state machine's restore is the caller's separate
        call in this same transaction."""
        meta = snapshot.meta
        previous = self._snapshot_meta().index
        assert meta.index > previous, f"snapshot {meta.index} is not newer than {previous}"
        self.log_replaced = True
        self.appended = []
        assert meta.term >= 1, meta
        if self._log_holds(meta.index, meta.term):
            # Our log agrees with the snapshot: what follows it may still be committed, keep it.
            self._delete_through(meta.index)
            self._set_log_base(meta.index, meta.term, self.bounds.last_index, self.bounds.last_term)
        else:
            self._delete_from(self.bounds.first_index)
            self._set_log_base(meta.index, meta.term, meta.index, meta.term)
        self._write_snapshot(meta, snapshot.data)
        self._put_applied_index(meta.index)
        self.set_conf_state(meta.conf_state)
        hard_state = layout.decode_hard_state(self.txn.get(layout.KEY_HARD_STATE, db=self._tables.meta))
        if hard_state.commit < meta.index:
            # A snapshot is committed state by construction (as MemoryStorage.apply_snapshot).
            self.set_hard_state(HardState(hard_state.term, hard_state.vote, meta.index))

    def save_snapshot(self, meta: SnapshotMeta, data: bytes) -> None:
        """Record a snapshot this node took of its own state machine at meta.index (applied).
        Taking one again at the same index (a forced snapshot, nothing applied since) replaces it."""
        previous = self._snapshot_meta().index
        assert meta.index >= previous, f"snapshot {meta.index} is older than {previous}"
        assert meta.index <= self._applied_index(), "a snapshot of entries not applied yet"
        assert self._term(meta.index) == meta.term, (meta, self._term(meta.index))
        self._write_snapshot(meta, data)

    # -- helpers ------------------------------------------------------------------------------

    def _write_snapshot(self, meta: SnapshotMeta, data: bytes) -> None:
        stored = SnapshotMeta(index=meta.index, term=meta.term, conf_state=meta.conf_state, size_bytes=len(data))
        self.txn.put(layout.KEY_SNAPSHOT_META, layout.encode_snapshot_meta(stored), db=self._tables.meta)
        self.txn.drop(self._tables.snapshot, delete=False)
        view = memoryview(data)
        items = [
            (layout.index_key(number), view[offset : offset + layout.SNAPSHOT_CHUNK_BYTES])
            for number, offset in enumerate(range(0, len(data), layout.SNAPSHOT_CHUNK_BYTES))
        ]
        cursor = self.txn.cursor(db=self._tables.snapshot)
        consumed, added = cursor.putmulti(items, append=True)
        assert consumed == added == len(items), (consumed, added, len(items))

    def _snapshot_meta(self) -> SnapshotMeta:
        return layout.decode_snapshot_meta(self.txn.get(layout.KEY_SNAPSHOT_META, db=self._tables.meta))

    def _applied_index(self) -> int:
        return layout.read_applied_index(self.txn, self._tables)

    def _put_applied_index(self, index: int) -> None:
        self.txn.put(layout.KEY_APPLIED_INDEX, layout.index_key(index), db=self._tables.meta)

    def _set_log_base(self, base_index: int, base_term: int, last_index: int, last_term: int) -> None:
        self.txn.put(layout.KEY_LOG_BASE, layout.encode_log_base(base_index, base_term), db=self._tables.meta)
        self.bounds = LogBounds(base_index, base_term, last_index, last_term)

    def _log_holds(self, index: int, term: int) -> bool:
        if not self.bounds.base_index <= index <= self.bounds.last_index:
            return False
        return self._term(index) == term

    def _term(self, index: int) -> int:
        assert self.bounds.base_index <= index <= self.bounds.last_index, (index, self.bounds)
        if index == self.bounds.base_index:
            return self.bounds.base_term
        if index == self.bounds.last_index:
            return self.bounds.last_term  # the common append: no read of the log table
        value = self.txn.get(layout.index_key(index), db=self._tables.log)
        assert value is not None, f"log entry {index} missing inside {self.bounds}"
        return layout.decode_entry_term(value)

    def _delete_from(self, index: int) -> None:
        """Delete the entries at `index` and above (a conflicting suffix, or the whole log)."""
        cursor = self.txn.cursor(db=self._tables.log)
        cursor.set_range(layout.index_key(index))
        while cursor.key():  # an unpositioned cursor (past the end) has an empty key
            cursor.delete()

    def _delete_through(self, index: int) -> None:
        """Delete the entries up to and including `index` (compaction)."""
        cursor = self.txn.cursor(db=self._tables.log)
        cursor.first()
        while cursor.key() and layout.key_index(cursor.key()) <= index:
            cursor.delete()
