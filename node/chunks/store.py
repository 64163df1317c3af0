"""Content-addressed chunk storage in its own LMDB environment, <directory>/chunks.lmdb.

A chunk's id is a digest of its content (node/chunk_ids.py), so identical chunks are stored once and
every read can prove its bytes are the ones written. Every write transaction syncs on commit:
a put that returned is durable.

Garbage collection needs no coordination with writers: a chunk that nobody references is
remembered with the time it was first seen unreferenced, and deleted only once that is older
than a grace period. A freshly written chunk starts unreferenced at its write time, so the
chunks of an interrupted put disappear after the grace period, while a put that commits its
file record within the grace period keeps them.

view() hands out a chunk without copying it: a memoryview into the map, whose read transaction
ends when the view is released (the chunk service sends it as a ZeroMQ frame, which holds it
until the frame is encrypted and written). Copying 4 MiB out of the map per chunk read cost
about a sixth of the nodes' CPU per MB of a get.

usage() is O(1): the total of stored bytes is kept in its own table, changed in the same
transaction as every chunk written or removed. Summing the chunks instead would read every
page of every chunk (the LMDB binding touches a value's pages before handing it out), and the
leader asks each node for usage twice a second.

Safe to use from several threads: LMDB serialises writers and readers never block.
Concurrent puts share write transactions (group commit): each thread hashes its own chunk in
parallel, then whichever thread finds no commit running writes every chunk queued so far in
one transaction and one fsync, and each put returns only once the transaction holding its
chunk is committed. The batch is bounded by the number of threads calling put.
"""

from __future__ import annotations

import logging
import os
import struct
import threading
import time
import weakref
from collections import deque
from dataclasses import dataclass
from typing import Callable

import lmdb

from node.chunk_ids import CHUNK_ID_BYTES, chunk_id_of, chunk_matches  # the id is part of the wire contract
from node.errors import ChecksumMismatch, NotFound, StoreFull

log = logging.getLogger(__name__)

_CHUNKS_DB = b"chunks"  # chunk id -> content
_UNREFERENCED_DB = b"unreferenced"  # chunk id -> first seen unreferenced (float seconds, big-endian)
_USAGE_DB = b"usage"  # _STORED_BYTES_KEY -> the total size of every chunk in _CHUNKS_DB
_STORED_BYTES_KEY = b"stored_bytes"
_TIME = struct.Struct(">d")
_BYTES = struct.Struct(">Q")

COUNTER_NAMES = (
    "puts",  # chunks newly written
    "put_bytes",
    "dedup_puts",  # puts of a chunk already stored
    "gets",
    "get_bytes",
    "get_misses",
    "checksum_mismatches",  # corrupt chunks found on read (and removed)
    "deletes",
    "gc_runs",
    "gc_deleted",
    "gc_deleted_bytes",
    "scrubbed",  # chunks re-verified by the background scrub
    "scrubbed_bytes",
)
# Corrupt copies remembered for the leader (chunk_stats reports them; it dedups by number).
CORRUPT_EVENTS_MAX = 1024
INVENTORY_IDS_MAX = 65536
# Views open at once: each holds a read transaction, and an environment has 126 reader slots
# (LMDB's default), which scrub, gc and every other read need too. Past this, view() copies.
VIEWS_OPEN_MAX = 32
# close() waits this long for the views still referenced (a frame ZeroMQ has not written yet)
# before unmapping the store under them.
VIEWS_CLOSE_WAIT_SECONDS = 5.0


@dataclass
class _QueuedPut:
    """A verified chunk waiting for the group commit that makes it durable."""

    chunk_id: bytes
    data: bytes | memoryview
    done: bool = False
    stored: bool = False
    error: BaseException | None = None


class ChunkStore:
    def __init__(
        self,
        directory: str | os.PathLike,
        map_size_bytes: int,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """`clock` gives wall-clock seconds: write times must survive a restart, so not monotonic."""
        assert map_size_bytes > 0
        path = os.path.join(os.fspath(directory), "chunks.lmdb")
        os.makedirs(path, exist_ok=True)
        self._env = lmdb.open(path, map_size=map_size_bytes, max_dbs=3, sync=True, metasync=True,
                              readahead=False)
        self._chunks = self._env.open_db(_CHUNKS_DB)
        self._unreferenced = self._env.open_db(_UNREFERENCED_DB)
        self._usage = self._env.open_db(_USAGE_DB)
        self._count_stored_bytes_once()
        self._clock = clock
        self._counters = dict.fromkeys(COUNTER_NAMES, 0)
        self._counters_lock = threading.Lock()
        # Group commit: puts waiting for a transaction, and whether one is being committed.
        self._commit_condition = threading.Condition(threading.Lock())
        self._commit_queue: list[_QueuedPut] = []
        self._committing = False
        # (event number, chunk id) of corrupt copies found and removed here, newest last.
        self._corrupt_events: deque[tuple[int, bytes]] = deque(maxlen=CORRUPT_EVENTS_MAX)
        self._corrupt_events_total = 0
        self._views_condition = threading.Condition(threading.Lock())
        self._views_open = 0

    def _count(self, name: str, amount: int = 1) -> None:
        with self._counters_lock:
            self._counters[name] += amount

    def _count_stored_bytes_once(self) -> None:
        """A store written before the usage table has no total yet: sum its chunks once."""
        with self._env.begin(buffers=True) as txn:
            if txn.get(_STORED_BYTES_KEY, db=self._usage, default=None) is not None:
                return
        with self._env.begin(write=True, buffers=True) as txn:
            total = sum(len(value) for value in txn.cursor(db=self._chunks).iternext(keys=False, values=True))
            txn.put(_STORED_BYTES_KEY, _BYTES.pack(total), db=self._usage)

    def _add_stored_bytes(self, txn: lmdb.Transaction, amount: int) -> None:
        """Change the total in `txn`, the transaction that writes or removes the chunks."""
        total = _BYTES.unpack(txn.get(_STORED_BYTES_KEY, db=self._usage))[0] + amount
        # Below 0 only if a disk changed a stored value's length behind our back.
        txn.put(_STORED_BYTES_KEY, _BYTES.pack(max(0, total)), db=self._usage)

    def put(self, chunk_id: bytes, data: bytes | memoryview) -> bool:
        """Store a chunk, durably. True if written, False if it was already stored (then its
        grace period restarts if it was unreferenced: a new put is about to reference it).
        `data` may be any bytes-like object; it is not kept after put returns."""
        _check_chunk_id(chunk_id)
        if not chunk_matches(chunk_id, data):
            raise ChecksumMismatch(f"chunk {chunk_id.hex()}: content does not hash to its id")
        queued = _QueuedPut(chunk_id, data)
        with self._commit_condition:
            self._commit_queue.append(queued)
            while not queued.done:
                if self._committing:
                    self._commit_condition.wait()
                    continue
                # No commit running: this thread commits everything queued, its own put included.
                batch, self._commit_queue = self._commit_queue, []
                self._committing = True
                self._commit_condition.release()
                try:
                    self._commit(batch)
                finally:
                    self._commit_condition.acquire()
                    self._committing = False
                    self._commit_condition.notify_all()
        assert queued.done
        if queued.error is not None:
            raise queued.error
        if queued.stored:
            self._count("puts")
            self._count("put_bytes", len(data))
        else:
            self._count("dedup_puts")
        return queued.stored

    def _commit(self, batch: list[_QueuedPut]) -> None:
        """Write `batch` in one synced transaction and mark every put in it done."""
        assert batch
        now_bytes = _TIME.pack(self._clock())
        error: BaseException | None = None
        try:
            # buffers=True: existing chunks are only tested for presence, never copied out.
            with self._env.begin(write=True, buffers=True) as txn:
                added_bytes = 0
                for queued in batch:
                    if txn.get(queued.chunk_id, db=self._chunks, default=None) is not None:
                        if txn.get(queued.chunk_id, db=self._unreferenced, default=None) is not None:
                            txn.put(queued.chunk_id, now_bytes, db=self._unreferenced)
                        queued.stored = False
                    else:
                        txn.put(queued.chunk_id, queued.data, db=self._chunks)
                        txn.put(queued.chunk_id, now_bytes, db=self._unreferenced)
                        queued.stored = True
                        added_bytes += len(queued.data)
                if added_bytes:
                    self._add_stored_bytes(txn, added_bytes)
        except lmdb.MapFullError:
            size_bytes = sum(len(queued.data) for queued in batch)
            error = StoreFull(f"chunk store is full: no room for {size_bytes} more bytes")
        except BaseException as unexpected:  # every waiter must learn its put failed
            error = unexpected
        for queued in batch:
            queued.error = error
            queued.stored = queued.stored and error is None
            queued.done = True
            queued.data = b""  # the caller's buffer is not held past its put

    def get(self, chunk_id: bytes, *, verify: bool = True) -> bytes:
        """The chunk's content. NotFound if absent. With verify (the default) it is checked
        against its id: ChecksumMismatch if corrupt (the corrupt copy is counted, logged and
        removed so a replica can be written here again). verify=False is for a reader that
        checks the content itself and reports a mismatch with verify()."""
        _check_chunk_id(chunk_id)
        with self._env.begin() as txn:
            data = txn.get(chunk_id, db=self._chunks, default=None)
        return self._checked(chunk_id, data, verify)

    def view(self, chunk_id: bytes, *, verify: bool = True) -> memoryview | bytes:
        """As get(), without a copy: a read-only memoryview into the store, valid for as long
        as this object is referenced (its read transaction ends when it is released; a slice
        or another memoryview of it does not keep it). A copy (bytes) when VIEWS_OPEN_MAX
        views are open already."""
        _check_chunk_id(chunk_id)
        with self._views_condition:
            viewing = self._views_open < VIEWS_OPEN_MAX
            self._views_open += viewing
        if not viewing:
            return self.get(chunk_id, verify=verify)  # outside the lock: views still end meanwhile
        txn = self._env.begin(buffers=True)
        try:
            data = self._checked(chunk_id, txn.get(chunk_id, db=self._chunks, default=None), verify)
        except BaseException:
            self._end_view(txn)
            raise
        weakref.finalize(data, self._end_view, txn).atexit = False
        return data

    def _end_view(self, txn: lmdb.Transaction) -> None:
        txn.abort()
        with self._views_condition:
            self._views_open -= 1
            assert self._views_open >= 0
            self._views_condition.notify_all()

    def _checked(self, chunk_id: bytes, data: bytes | memoryview | None, verify: bool) -> bytes | memoryview:
        if data is None:
            self._count("get_misses")
            raise NotFound(f"chunk {chunk_id.hex()} is not stored here")
        if verify and not chunk_matches(chunk_id, data):
            self._remove_corrupt(chunk_id, data, "read")
            raise ChecksumMismatch(f"chunk {chunk_id.hex()} is corrupt on this node")
        self._count("gets")
        self._count("get_bytes", len(data))
        return data

    def _remove_corrupt(self, chunk_id: bytes, data: bytes | memoryview, found_by: str) -> None:
        """Count, log, remember (for the leader) and remove a copy that fails its hash."""
        self._count("checksum_mismatches")
        log.warning("chunk %s is corrupt (found by %s: content does not hash to its id); removing it",
                    chunk_id.hex(), found_by)
        self._delete_if_content(chunk_id, data)
        with self._counters_lock:
            self._corrupt_events_total += 1
            self._corrupt_events.append((self._corrupt_events_total, chunk_id))

    def corrupt_events(self) -> list[tuple[int, bytes]]:
        """(event number, chunk id) of the last CORRUPT_EVENTS_MAX corrupt copies removed here."""
        with self._counters_lock:
            return list(self._corrupt_events)

    def removals(self) -> int:
        """How many chunks left this store since it opened (deleted, collected, corrupt): when
        it changes, what this node holds must be looked at again."""
        with self._counters_lock:
            counters = self._counters
            return counters["deletes"] + counters["gc_deleted"] + counters["checksum_mismatches"]

    def ids_after(self, after: bytes | None, limit: int) -> tuple[list[bytes], bool]:
        """(up to `limit` stored chunk ids greater than `after`, ascending; whether more follow)."""
        assert 1 <= limit <= INVENTORY_IDS_MAX
        ids: list[bytes] = []
        with self._env.begin(buffers=True) as txn:
            cursor = txn.cursor(db=self._chunks)
            positioned = cursor.set_range(after) if after is not None else cursor.first()
            while positioned:
                key = bytes(cursor.key())
                if key != after:
                    if len(ids) == limit:
                        return ids, True
                    ids.append(key)
                positioned = cursor.next()
        return ids, False

    def scrub(self, chunk_id: bytes) -> int:
        """Re-verify one stored copy; a corrupt one is removed (and remembered). Returns the
        bytes read, 0 if the chunk is gone."""
        _check_chunk_id(chunk_id)
        with self._env.begin() as txn:
            data = txn.get(chunk_id, db=self._chunks, default=None)
        if data is None:
            return 0
        if not chunk_matches(chunk_id, data):
            self._remove_corrupt(chunk_id, data, "scrub")
        self._count("scrubbed")
        self._count("scrubbed_bytes", len(data))
        return len(data)

    def _delete_if_content(self, chunk_id: bytes, content: bytes | memoryview) -> None:
        # Another thread may have replaced the corrupt copy meanwhile: delete only what we read.
        with self._env.begin(write=True) as txn:
            if txn.get(chunk_id, db=self._chunks, default=None) == content:
                txn.delete(chunk_id, db=self._chunks)
                txn.delete(chunk_id, db=self._unreferenced)
                self._add_stored_bytes(txn, -len(content))

    def has(self, chunk_id: bytes) -> bool:
        _check_chunk_id(chunk_id)
        with self._env.begin(buffers=True) as txn:
            return txn.get(chunk_id, db=self._chunks, default=None) is not None

    def delete(self, chunk_id: bytes) -> bool:
        """Remove a chunk now, ignoring references. True if it was stored."""
        _check_chunk_id(chunk_id)
        with self._env.begin(write=True, buffers=True) as txn:
            content = txn.get(chunk_id, db=self._chunks, default=None)
            deleted = content is not None
            if deleted:
                self._add_stored_bytes(txn, -len(content))
                txn.delete(chunk_id, db=self._chunks)
                txn.delete(chunk_id, db=self._unreferenced)
        if deleted:
            self._count("deletes")
        return deleted

    def usage(self) -> tuple[int, int]:
        """(chunks stored, their total bytes), from one read transaction so the two agree. O(1)."""
        with self._env.begin(buffers=True) as txn:
            count = txn.stat(self._chunks)["entries"]
            total = _BYTES.unpack(txn.get(_STORED_BYTES_KEY, db=self._usage))[0]
        return count, total

    def counters(self) -> dict:
        with self._counters_lock:
            return dict(self._counters)

    def collect_garbage(
        self,
        referenced: set[bytes],
        now_seconds: float,
        grace_seconds: float,
        dry_run: bool,
    ) -> dict:
        """Delete chunks unreferenced for longer than grace_seconds. One write transaction, so
        a concurrent put either lands before (and restarts its chunk's grace) or after.

        Returns {"unreferenced": chunks not in `referenced`, "deleted", "deleted_bytes"}; with
        dry_run nothing changes and "deleted*" say what would have been deleted."""
        assert grace_seconds >= 0, grace_seconds
        now_bytes = _TIME.pack(now_seconds)
        unreferenced = deleted = deleted_bytes = 0
        try:
            with self._env.begin(write=not dry_run, buffers=True) as txn:
                cursor = txn.cursor(db=self._chunks)
                # Keys only: a value is read (every page of it) only to size a chunk deleted.
                for chunk_id in cursor.iternext(keys=True, values=False):
                    chunk_id = bytes(chunk_id)
                    first_seen_bytes = txn.get(chunk_id, db=self._unreferenced, default=None)
                    if chunk_id in referenced:
                        if first_seen_bytes is not None and not dry_run:
                            txn.delete(chunk_id, db=self._unreferenced)
                        continue
                    unreferenced += 1
                    if first_seen_bytes is None:
                        if not dry_run:
                            txn.put(chunk_id, now_bytes, db=self._unreferenced)
                        continue
                    (first_seen_seconds,) = _TIME.unpack(first_seen_bytes)
                    if now_seconds - first_seen_seconds > grace_seconds:
                        deleted += 1
                        deleted_bytes += len(txn.get(chunk_id, db=self._chunks))
                        if not dry_run:
                            # Deleting at the cursor moves it to the next item, which
                            # iternext would then skip: delete through the transaction.
                            txn.delete(chunk_id, db=self._unreferenced)
                            txn.delete(chunk_id, db=self._chunks)
                if deleted_bytes and not dry_run:
                    self._add_stored_bytes(txn, -deleted_bytes)
        except lmdb.MapFullError:
            raise StoreFull("chunk store is full: cannot record garbage collection state") from None
        assert deleted <= unreferenced
        if not dry_run:
            self._count("gc_runs")
            self._count("gc_deleted", deleted)
            self._count("gc_deleted_bytes", deleted_bytes)
        return {"unreferenced": unreferenced, "deleted": deleted, "deleted_bytes": deleted_bytes}

    def close(self) -> None:
        with self._views_condition:
            released = self._views_condition.wait_for(lambda: self._views_open == 0, VIEWS_CLOSE_WAIT_SECONDS)
        if not released:
            # Unmapping now would pull the memory from under a frame being sent: the map
            # stays until the process exits.
            log.warning("chunk store left open: %d views still referenced after %g s",
                        self._views_open, VIEWS_CLOSE_WAIT_SECONDS)
            return
        self._env.close()


def _check_chunk_id(chunk_id: bytes) -> None:
    assert type(chunk_id) is bytes and len(chunk_id) == CHUNK_ID_BYTES, "callers validate chunk ids"
