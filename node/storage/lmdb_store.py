"""NodeStore: the node's durable state in ONE LMDB environment, <directory>/raft.lmdb.

It holds the Raft log, hard state, membership, snapshot and applied index (layout.py) and the
metadata state machine's tables (node/metadata/), so that one write transaction, synced on
commit, persists a whole Ready and applies its committed entries: a crash can neither lose an
applied entry nor apply one twice.

It implements the core's Storage protocol (node/raft/storage.py) for reads. Writes go through
write_batch() only; the log bounds are cached in memory and replaced when a batch commits.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import lmdb

from node.errors import StoreFull
from node.raft.errors import Compacted, Unavailable
from node.raft.types import ConfState, Entry, HardState, Snapshot, SnapshotMeta, entries_size_bytes, prefix_within
from node.storage import layout
from node.storage.layout import RaftTables
from node.storage.write_batch import WriteBatch

@dataclass
class SyncCounters:
    """What the store's write batches cost the disk, since the node started (for `status` and
    `sandctl bench`, which reads them before and after each workload step)."""

    commits: int = 0  # write transactions committed (each one flushes its data pages)
    durable_commits: int = 0  # of those, batches that asked to survive power loss
    fsyncs: int = 0  # fdatasync calls those commits made

    def to_dict(self) -> dict:
        return dict(vars(self))  # flat ints: no need for asdict's recursive deep copy


# The Raft tables plus room for the state machine's (node/metadata/) and a few spare.
TABLES_MAX = 16
ENVIRONMENT_NAME = "raft.lmdb"
# used_fraction() is asked before every client write; env.info() costs a few percent of the
# write path. It reads env.info() again only after USED_FRACTION_REFRESH_COMMITS commits while
# the free part of the map could hold that many batches of BATCH_GROWTH_BYTES_BOUND each: only a
# commit grows the map, and one batch holds a few MiB (committed_bytes_per_ready_max plus one
# APPEND, with copy-on-write pages), so the reading cannot be stale by more than the headroom.
# A small or nearly full map is read on every call, as before.
USED_FRACTION_REFRESH_COMMITS = 64
BATCH_GROWTH_BYTES_BOUND = 32 << 20
# The newest log entries are kept in memory as well (LogTail): the core reads each entry back
# soon after it was stored (to apply it once committed, to send it to a follower that was a
# little behind), and reading and decoding it from LMDB was a share of every write.
LOG_TAIL_ENTRIES_MAX = 4096
LOG_TAIL_BYTES_MAX = 16 << 20
# A batch that only applies committed entries (durable=False) is not committed at once: it
# stays open and the next batches are nested into it, so it commits (one fsync) with the next
# durable batch, before any read of this thread, or after this many batches.
DEFERRED_BATCHES_MAX = 64
# Deferred batches that add log entries (a leader's own, unflushed) are committed once they
# hold this share of the map in entry bytes: used_fraction() sees committed pages only, so a
# deferred chain of large entries could otherwise fill the map past the point where writes
# are refused (STORE_FULL), and the commit that fails then stops the node.
DEFERRED_LOG_MAP_SHARE = 1 / 32


class NodeStore:
    def __init__(self, directory: str | Path, map_size_bytes: int) -> None:
        assert map_size_bytes > 0, map_size_bytes
        self.path = Path(directory) / ENVIRONMENT_NAME
        self.path.mkdir(parents=True, exist_ok=True)
        self.map_size_bytes = map_size_bytes
        # metasync=False: a commit flushes its data pages but not the meta page. LMDB keeps the
        # database intact (ACI) and at worst undoes the LAST commit after a system crash, never
        # after a process crash. A batch that must be durable (write_batch(durable=True): Raft
        # entries, term, vote, snapshots) then flushes the meta page too with env.sync(), so it
        # survives power loss; a batch that only applies committed entries skips that second
        # flush, because a lost apply is redone from the durable log on restart (the applied
        # index rolls back with the state it describes). subdir: data.mdb and lock.mdb inside.
        #
        # Why a durable batch costs two flushes and not one: LMDB's crash safety rests on the data
        # pages being on disk before the meta page that points to them. With sync=False a commit
        # writes both unsynced and the kernel may write the meta page back first, so a power loss
        # can leave a meta page pointing at pages never written: a corrupt store, not merely a
        # lost batch (LMDB's MDB_NOSYNC documentation). So every commit keeps its data flush
        # (the barrier), and a durable one adds the meta flush. metasync=True does the same two
        # flushes inside the commit (measured here: 3.0-3.6 ms against 2.9-3.3 ms per durable
        # commit) but would add the meta flush to every apply-only batch too (1.7-2.0 ms today),
        # and py-lmdb cannot choose it per transaction. The two flushes are the minimum LMDB allows;
        # fewer syncs come from fewer batches (an apply that rides in the next durable batch).
        self.env = lmdb.open(
            str(self.path), map_size=map_size_bytes, max_dbs=TABLES_MAX, subdir=True,
            sync=True, metasync=False, readahead=False,
        )
        self._tables = RaftTables.open(self.env)
        self._page_size_bytes = self.env.stat()["psize"]
        with self.env.begin() as txn:
            self._bounds = layout.read_log_bounds(txn, self._tables)
        self._tail = LogTail(self._bounds.last_index + 1)
        self._batch_open = False
        self._deferred: lmdb.Transaction | None = None  # the open top-level txn of deferred batches
        self._deferred_batches = 0
        self._deferred_since = 0.0  # time.monotonic() when it was opened
        # Deferred batches that changed the log (a leader's own entries, NodeStore.write_batch),
        # in order: the read path (bounds, tail) takes them over once they commit.
        self._deferred_log_batches: list[WriteBatch] = []
        self._deferred_log_bytes = 0  # entry bytes those batches appended
        self._writer_thread: int | None = None  # LMDB binds a write transaction to its thread
        self.sync_counters = SyncCounters()
        self._used_fraction = 0.0  # as last read (used_fraction)
        self._used_fraction_fresh_until_commit = 0  # read env.info() again at this many commits
        self._batch_end_hooks: list[Callable[[lmdb.Transaction], None]] = []

    def close(self) -> None:
        assert not self._batch_open, "close() inside a write batch"
        self.commit_deferred()
        self.env.close()

    # -- Storage protocol ---------------------------------------------------------------------

    def initial_state(self) -> tuple[HardState, ConfState]:
        return self.hard_state(), self.conf_state()

    def entries(self, low: int, high: int, bytes_max: int | None = None) -> list[Entry]:
        assert low <= high, (low, high)
        bounds = self._bounds
        if low < bounds.first_index:
            raise Compacted(f"index {low} is compacted (first index {bounds.first_index})")
        if high > bounds.last_index + 1:
            raise Unavailable(f"index {high - 1} is beyond the last index {bounds.last_index}")
        if low >= self._tail.first_index:
            return self._tail.entries(low, high, bytes_max)
        selected: list[Entry] = []
        total_bytes = 0
        with self.env.begin(db=self._tables.log) as txn:
            cursor = txn.cursor()
            cursor.set_key(layout.index_key(low))
            for index in range(low, high):
                assert layout.key_index(cursor.key()) == index, f"log entry {index} missing in {bounds}"
                entry = layout.decode_entry(index, cursor.value())
                total_bytes += entry.size_bytes()
                if selected and bytes_max is not None and total_bytes > bytes_max:
                    break  # the first entry goes out whatever its size, or Raft could stall
                selected.append(entry)
                cursor.next()
        return selected

    def term(self, index: int) -> int:
        bounds = self._bounds
        if index < bounds.base_index:
            raise Compacted(f"term of index {index} is compacted (log base {bounds.base_index})")
        if index > bounds.last_index:
            raise Unavailable(f"index {index} is beyond the last index {bounds.last_index}")
        if index == bounds.last_index:
            return bounds.last_term
        if index == bounds.base_index:
            return bounds.base_term
        if index >= self._tail.first_index:
            return self._tail.term(index)
        with self.env.begin(db=self._tables.log) as txn:
            value = txn.get(layout.index_key(index))
        assert value is not None, f"log entry {index} missing in {bounds}"
        return layout.decode_entry_term(value)

    def first_index(self) -> int:
        return self._bounds.first_index

    def last_index(self) -> int:
        return self._bounds.last_index

    def snapshot(self) -> Snapshot:
        with self.env.begin() as txn:
            meta = layout.decode_snapshot_meta(txn.get(layout.KEY_SNAPSHOT_META, db=self._tables.meta))
            data = b"".join(value for _, value in txn.cursor(db=self._tables.snapshot))
        assert len(data) == meta.size_bytes, (len(data), meta)
        return Snapshot(meta=meta, data=data)

    # -- other durable state ------------------------------------------------------------------

    def snapshot_meta(self) -> SnapshotMeta:
        """The latest snapshot's meta alone, without loading its data (for status)."""
        with self.env.begin() as txn:
            return layout.decode_snapshot_meta(txn.get(layout.KEY_SNAPSHOT_META, db=self._tables.meta))

    def hard_state(self) -> HardState:
        with self.env.begin() as txn:
            return layout.decode_hard_state(txn.get(layout.KEY_HARD_STATE, db=self._tables.meta))

    def conf_state(self) -> ConfState:
        with self.env.begin() as txn:
            return layout.decode_conf_state(txn.get(layout.KEY_CONF_STATE, db=self._tables.meta))

    def applied_index(self) -> int:
        with self.env.begin() as txn:
            return layout.read_applied_index(txn, self._tables)

    def applied_state(self, txn: lmdb.Transaction) -> tuple[int, int, ConfState]:
        """(applied index, its term, membership) as of `txn`: the consistent cut a snapshot is
        taken at, read in the same transaction as the state machine's tables."""
        applied = layout.read_applied_index(txn, self._tables)
        bounds = layout.read_log_bounds(txn, self._tables)
        if applied == bounds.base_index:
            term = bounds.base_term
        else:
            assert bounds.base_index < applied <= bounds.last_index, (applied, bounds)
            term = layout.decode_entry_term(txn.get(layout.index_key(applied), db=self._tables.log))
        conf_state = layout.decode_conf_state(txn.get(layout.KEY_CONF_STATE, db=self._tables.meta))
        return applied, term, conf_state

    def used_fraction(self) -> float:
        """How much of the LMDB map is in use (0..1): writes are refused well before it is full,
        because a Ready that cannot be persisted would stop the node."""
        commits = self.sync_counters.commits
        # Whether a reading may be kept depends on the reading alone: decided when it is read.
        if commits >= self._used_fraction_fresh_until_commit:
            info = self.env.info()  # the page size is read once, at open
            self._used_fraction = (info["last_pgno"] + 1) * self._page_size_bytes / info["map_size"]
            free_bytes = (1.0 - self._used_fraction) * self.map_size_bytes
            may_be_cached = free_bytes >= USED_FRACTION_REFRESH_COMMITS * BATCH_GROWTH_BYTES_BOUND
            # Read again after USED_FRACTION_REFRESH_COMMITS commits, or at the next call.
            self._used_fraction_fresh_until_commit = commits + (USED_FRACTION_REFRESH_COMMITS if may_be_cached else 0)
        assert 0.0 <= self._used_fraction <= 1.0, self._used_fraction
        return self._used_fraction

    def log_entry_count(self) -> int:
        return self._bounds.last_index - self._bounds.base_index

    def log_size_bytes(self) -> int:
        """Bytes of LMDB pages the log occupies (approximate: pages, not payload)."""
        with self.env.begin() as txn:
            stat = txn.stat(self._tables.log)
        return (stat["branch_pages"] + stat["leaf_pages"] + stat["overflow_pages"]) * stat["psize"]

    # -- transactions -------------------------------------------------------------------------

    def on_batch_end(self, hook: Callable[[lmdb.Transaction], None]) -> None:
        """Call hook(txn) at the end of every write batch whose block did not raise, in the
        batch's own transaction, before it commits (or is deferred): what a state machine
        writes once per batch rather than once per entry lands in the same transaction as the
        entries, so it commits, or rolls back, with them. A hook that raises aborts the batch
        as the block would have."""
        self._batch_end_hooks.append(hook)

    def write_batch(self, durable: bool = True) -> "_BatchScope":
        """One write transaction, atomic: all of it or (on any exception) none of it. A full map
        becomes StoreFull and leaves the store as it was.

        durable=True: committed and on disk when the block exits, power loss included, with
        every batch before it. durable=False (only for batches whose loss the log can redo:
        applying committed entries, moving the commit index; or a leader's own entries, which
        promise nothing until a durable batch follows them): deferred. It is visible to this
        batch's successors at once, to read_transaction() on the writing thread (which commits
        it first), and to other threads, and to the log read path (entries, term, bounds),
        once committed: with the next durable batch, after DEFERRED_BATCHES_MAX batches, or by
        commit_deferred(). A crash or power loss may undo deferred batches (and, LMDB's
        metasync=False, the last non-durable commit): all of them after the last durable one
        at most. An empty durable batch makes every earlier batch durable."""
        return _BatchScope(self, durable)

    def _open_batch(self) -> tuple[WriteBatch, lmdb.Transaction, lmdb.Transaction | None]:
        assert not self._batch_open, "write batches do not nest"
        thread = threading.get_ident()
        assert self._writer_thread in (None, thread), "write batches on two threads"
        self._writer_thread = thread
        self._batch_open = True
        deferred = self._deferred
        # Nested in the deferred transaction: an exception aborts this batch alone.
        txn = self.env.begin(write=True, parent=deferred) if deferred is not None else self.env.begin(write=True)
        # The log as the deferred batches left it (the read path still shows the committed one).
        bounds = self._deferred_log_batches[-1].bounds if self._deferred_log_batches else self._bounds
        return WriteBatch(txn, self._tables, bounds), txn, deferred

    def _close_batch(self, batch: WriteBatch, txn: lmdb.Transaction, deferred: lmdb.Transaction | None,
                     durable: bool, error: BaseException | None) -> None:
        """The end of a write_batch block (error: what the block raised, if it did)."""
        try:
            if error is None:
                for hook in self._batch_end_hooks:
                    hook(txn)
            if error is not None:
                txn.abort()  # all of the batch or none of it
            elif deferred is not None:
                txn.commit()  # into the deferred transaction: nothing is on disk yet
        except lmdb.MapFullError:
            txn.abort()
            error = lmdb.MapFullError()  # only that commit raises it here
        except BaseException:
            txn.abort()
            raise
        finally:
            self._batch_open = False
        if isinstance(error, lmdb.MapFullError):
            raise self._store_full() from None
        if error is not None:
            return  # the block's exception goes on
        top = deferred if deferred is not None else txn
        if batch.changed_log:
            self._deferred_log_batches.append(batch)
            self._deferred_log_bytes += entries_size_bytes(batch.appended)
        if (durable or self._deferred_batches + 1 >= DEFERRED_BATCHES_MAX
                or self._deferred_log_bytes > self.map_size_bytes * DEFERRED_LOG_MAP_SHARE):
            self._deferred = None
            self._commit(top, durable)
            return
        if deferred is None:
            self._deferred, self._deferred_since = txn, time.monotonic()
        self._deferred_batches += 1

    def _store_full(self) -> StoreFull:
        return StoreFull(
            f"the node's store {self.path} is full (map size {self.map_size_bytes} bytes); "
            "the write was refused and nothing changed: raise lmdb_map_size_bytes or compact the log")

    def _commit(self, txn: lmdb.Transaction, durable: bool) -> None:
        self._deferred_batches = 0
        try:
            txn.commit()
        except lmdb.MapFullError:
            # The deferred batches go with it: the node must stop (the server does, on StoreFull);
            # after a restart they are applied again from the log.
            raise self._store_full() from None
        for logged in self._deferred_log_batches:  # in order: each starts where the last ended
            self._bounds = logged.bounds
            self._tail.committed(logged, logged.bounds)
        self._deferred_log_batches = []
        self._deferred_log_bytes = 0
        self.sync_counters.commits += 1
        self.sync_counters.fsyncs += 1  # sync=True: the commit flushes its data pages
        if durable:
            self.env.sync(True)
            self.sync_counters.durable_commits += 1
            self.sync_counters.fsyncs += 1

    @property
    def has_deferred(self) -> bool:
        """Whether apply-only batches wait uncommitted (for the next durable batch or
        commit_deferred): the loop must then keep waking to commit them."""
        return self._deferred is not None

    def commit_deferred(self, older_than_seconds: float = 0.0) -> None:
        """Commit the deferred batches (if opened more than older_than_seconds ago). On the
        writing thread only, outside a write batch."""
        if self._deferred is None or time.monotonic() - self._deferred_since < older_than_seconds:
            return
        assert not self._batch_open, "commit_deferred() inside a write batch"
        assert threading.get_ident() == self._writer_thread, "the deferred batches belong to another thread"
        txn, self._deferred = self._deferred, None
        self._commit(txn, durable=False)

    def read_transaction(self) -> "_ReadScope":
        """A read-only snapshot of everything committed so far (for queries and status). On the
        writing thread, deferred batches are committed first, so that it reads what it wrote."""
        if self._deferred is not None and not self._batch_open and threading.get_ident() == self._writer_thread:
            self.commit_deferred()
        return _ReadScope(self.env.begin())


class _ReadScope:
    """NodeStore.read_transaction's context manager: a small class, not a @contextmanager
    generator (as _BatchScope; one read transaction per client read, where the generator's
    machinery cost more than beginning and ending the transaction). The transaction ends with
    the block, as its own context manager ends it."""

    __slots__ = ("_txn",)

    def __init__(self, txn: lmdb.Transaction) -> None:
        self._txn = txn

    def __enter__(self) -> lmdb.Transaction:
        return self._txn

    def __exit__(self, error_type, error, traceback) -> bool:
        self._txn.__exit__(error_type, error, traceback)
        return False  # an exception of the block is never swallowed


class _BatchScope:
    """NodeStore.write_batch's context manager: a small class, not a generator (@contextmanager
    costs a generator, a next() on each side and a StopIteration per batch, two batches per
    write at low load)."""

    __slots__ = ("_store", "_durable", "_opened")

    def __init__(self, store: NodeStore, durable: bool) -> None:
        self._store = store
        self._durable = durable
        self._opened: tuple | None = None

    def __enter__(self) -> WriteBatch:
        assert self._opened is None, "a write_batch() scope is entered once"
        self._opened = self._store._open_batch()
        return self._opened[0]

    def __exit__(self, error_type, error, traceback) -> bool:
        batch, txn, deferred = self._opened
        self._store._close_batch(batch, txn, deferred, self._durable, error)
        return False  # an exception of the block is never swallowed


class LogTail:
    """The newest stored log entries, [first_index, last index], in memory: exactly what LMDB
    holds there, because it changes only when a write batch commits, as the log bounds do.
    Bounded by LOG_TAIL_ENTRIES_MAX and LOG_TAIL_BYTES_MAX (the oldest are dropped first)."""

    def __init__(self, first_index: int) -> None:
        self.first_index = first_index  # of _entries[0]; the next index to append when empty
        self._entries: list[Entry] = []
        self._bytes = 0

    def committed(self, batch: WriteBatch, bounds) -> None:
        """Take over what a committed batch changed in the log."""
        if batch.log_replaced:
            self._reset(bounds.last_index + 1)
        if batch.appended:
            start = batch.appended[0].index
            if not self.first_index <= start <= self.first_index + len(self._entries):
                self._reset(start)
            replaced = self._entries[start - self.first_index :]
            self._bytes -= entries_size_bytes(replaced)
            del self._entries[start - self.first_index :]
            self._entries.extend(batch.appended)
            self._bytes += entries_size_bytes(batch.appended)
        if self.first_index <= bounds.base_index:  # compacted, or cut by a snapshot
            self._drop_front(bounds.base_index + 1 - self.first_index)
        if len(self._entries) > LOG_TAIL_ENTRIES_MAX:
            self._drop_front(len(self._entries) - LOG_TAIL_ENTRIES_MAX)
        while self._bytes > LOG_TAIL_BYTES_MAX:
            self._drop_front(1)
        assert 0 <= self._bytes, self._bytes
        assert self.first_index + len(self._entries) == bounds.last_index + 1, (self.first_index, len(self._entries), bounds)
        assert not self._entries or self._entries[-1].term == bounds.last_term, (self._entries[-1], bounds)

    def entries(self, low: int, high: int, bytes_max: int | None) -> list[Entry]:
        assert self.first_index <= low <= high <= self.first_index + len(self._entries), (low, high, self.first_index)
        start, stop = low - self.first_index, high - self.first_index
        if bytes_max is not None:
            stop = prefix_within(self._entries, start, stop, bytes_max)  # the first entry whatever its size
        return self._entries[start:stop]

    def term(self, index: int) -> int:
        return self._entries[index - self.first_index].term

    def _reset(self, first_index: int) -> None:
        self.first_index = first_index
        self._entries = []
        self._bytes = 0

    def _drop_front(self, count: int) -> None:
        count = min(count, len(self._entries))
        self._bytes -= entries_size_bytes(self._entries[:count])
        del self._entries[:count]
        self.first_index += count
