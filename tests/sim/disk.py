"""A simulated node's disk (the driver's Store) and its state machine (the driver's StateMachine).

The driver (node/replicator/driver.py, the production module) writes the disk only through
write_batch(durable); a batch takes effect, all of it, when its `with` block ends. What
survives what:
  - a process crash (Cluster.crash) keeps every committed batch (LMDB is ACI), or loses every
    batch opened with durable=False since the last durable one: production defers their
    commit to the next durable batch (NodeStore), so they may not have reached LMDB at all;
  - a power loss (Cluster.power_loss) also undoes batches opened with durable=False that were
    committed after the last durable one: either only the last of them (what LMDB's
    metasync=False allows, README "Two kinds of LMDB batch") or all of them (more than LMDB
    allows: a stricter test of the claim that such batches can be redone from the durable log).
  - a crash during a write (crash_during_next_write) happens when the batch is opened: the
    Ready's first messages have left, nothing of the batch is on disk.

The state machine is the list of applied entries itself, so that a snapshot can be checked entry
by entry against what every other node applied. Every commit is reported to `observer` (the
cluster's invariant checker) before and after it takes effect.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field

import msgpack

from node.errors import BadRequest
from node.raft.memory_storage import MemoryStorage
from node.raft.types import ConfChange, ConfState, Entry, EntryKind, HardState, Snapshot

# Commands a peer may not forward: a simulated client sends such garbage now and then, and it
# must never reach a log.
MALFORMED_COMMAND_PREFIX = b"!malformed"


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


class SimulatedCrash(Exception):
    """The node crashed while opening a write batch (crash_during_next_write)."""


@dataclass
class Batch:
    """What one driver batch asked for, in order; applied to the disk on commit."""

    durable: bool
    snapshot: Snapshot | None = None
    restored: list[AppliedEntry] | None = None
    entries: tuple[Entry, ...] = ()
    hard_state: HardState | None = None
    machine_calls: list[tuple[int, int, int, bytes]] = field(default_factory=list)  # (index, term, kind, data)
    applied_index: int | None = None
    conf_state: ConfState | None = None

    def append_entries(self, entries: tuple[Entry, ...]) -> None:
        assert not self.entries, "one append per batch"
        self.entries = tuple(entries)

    def set_hard_state(self, hard_state: HardState) -> None:
        self.hard_state = hard_state

    def install_snapshot(self, snapshot: Snapshot) -> None:
        self.snapshot = snapshot

    def set_applied_index(self, index: int) -> None:
        self.applied_index = index

    def set_conf_state(self, conf_state: ConfState) -> None:
        self.conf_state = conf_state


class SimStateMachine:
    """The driver's StateMachine: it records, in the open batch, what the driver applies."""

    def decode(self, command: bytes) -> bytes:
        if not command or command.startswith(MALFORMED_COMMAND_PREFIX):
            raise BadRequest("a malformed command")
        return command

    def apply(self, batch: Batch, entry: Entry, decoded: object) -> dict:
        # The driver hands over the entry's command decoded (once): here the bytes themselves.
        assert decoded == entry.data, (decoded, entry)
        batch.machine_calls.append((entry.index, entry.term, int(EntryKind.NORMAL), entry.data))
        return {"ok": True, "result": {"index": entry.index, "term": entry.term}}

    def apply_membership(self, batch: Batch, entry: Entry, change: ConfChange) -> None:
        batch.machine_calls.append((entry.index, entry.term, int(EntryKind.CONF_CHANGE), entry.data))

    def restore(self, batch: Batch, data: bytes) -> None:
        batch.restored = decode_state(data)


class Disk:
    def __init__(self) -> None:
        self.storage = MemoryStorage()
        self.applied: list[AppliedEntry] = []
        self.applied_index = 0
        self.state_machine = SimStateMachine()
        self.crash_on_next_batch = False
        self.observer = None  # before_commit(batch, disk) / on_apply(entry, disk) / after_commit(batch, disk)
        self.open_batch: Batch | None = None
        # Images of the disk before each non-durable batch committed since the last durable one.
        self._undo_images: list[tuple] = []
        self.batches_committed = 0
        self.batches_lost = 0

    def hard_state(self) -> HardState:
        return self.storage.initial_state()[0]

    @property
    def conf_state(self) -> ConfState:
        return self.storage.initial_state()[1]

    # -- the driver's Store -------------------------------------------------------------------

    @contextmanager
    def write_batch(self, durable: bool = True):
        assert self.open_batch is None, "one batch at a time"
        if self.crash_on_next_batch:
            self.crash_on_next_batch = False
            raise SimulatedCrash("crashed during its disk write")
        batch = Batch(durable=durable)
        self.open_batch = batch
        try:
            yield batch
        finally:
            self.open_batch = None
        self._commit(batch)

    def _commit(self, batch: Batch) -> None:
        if self.observer is not None:
            self.observer.before_commit(batch, self)
        if batch.durable:
            self._undo_images.clear()  # LMDB's env.sync flushes every earlier commit too
        else:
            self._undo_images.append(self._image())
        if batch.snapshot is not None:
            self.storage.apply_snapshot(batch.snapshot)
            self.applied = list(batch.restored or [])
            self.applied_index = batch.snapshot.meta.index
            assert not self.applied or self.applied[-1].index == self.applied_index
        self.storage.append(batch.entries)
        if batch.hard_state is not None:
            self.storage.set_hard_state(batch.hard_state)
        if batch.applied_index is not None:
            self._apply_through(batch)
        if batch.conf_state is not None:
            self.storage.set_conf_state(batch.conf_state)
        self.batches_committed += 1
        if self.observer is not None:
            self.observer.after_commit(batch, self)

    def _apply_through(self, batch: Batch) -> None:
        """Apply the entries up to the batch's applied index. The state machine must have been
        handed exactly the NORMAL and CONF_CHANGE entries among them, in order."""
        calls = iter(batch.machine_calls)
        for index in range(self.applied_index + 1, batch.applied_index + 1):
            entry = self.storage.entries(index, index + 1)[0]
            if entry.kind != EntryKind.NOOP:
                handed = next(calls, None)
                expected = (entry.index, entry.term, int(entry.kind), entry.data)
                assert handed == expected, f"the driver applied {handed}, the log holds {expected} there"
            if self.observer is not None:
                self.observer.on_apply(entry, self)
            self.applied.append(AppliedEntry(entry.index, entry.term, int(entry.kind), entry.data))
            self.applied_index = entry.index
        assert next(calls, None) is None, "the driver applied entries beyond its applied index"

    # -- losing what was not durable ----------------------------------------------------------

    def _image(self) -> tuple:
        storage = self.storage
        return (storage._hard_state, storage._conf_state, storage._snapshot, list(storage._entries),
                list(self.applied), self.applied_index)

    def power_loss(self, lose_all: bool) -> int:
        """Undo the last non-durable batch (lose_all: every one since the last durable batch).
        Returns how many batches were lost."""
        if not self._undo_images:
            return 0
        keep = 0 if lose_all else len(self._undo_images) - 1
        image = self._undo_images[keep]
        lost = len(self._undo_images) - keep
        del self._undo_images[:]
        storage = self.storage
        storage._hard_state, storage._conf_state, storage._snapshot, entries, applied, self.applied_index = image
        storage._entries = entries
        self.applied = applied
        self.batches_lost += lost
        return lost

    # -- log compaction (a durable batch of its own, as in production) ------------------------

    def take_snapshot(self, keep_entries: int) -> int | None:
        """Snapshot the state machine at the applied index and compact the log, keeping the
        last `keep_entries` entries before it. Returns the compacted index, None if nothing
        could be compacted."""
        index = self.applied_index
        if index <= self.storage.snapshot().meta.index or index > self.storage.last_index():
            return None
        self._undo_images.clear()
        self.storage.create_snapshot(index, self.conf_state, encode_state(self.applied))
        compact_index = max(index - keep_entries, self.storage.first_index())
        if compact_index < self.storage.first_index() or compact_index > index:
            return None
        self.storage.compact(compact_index)
        return compact_index
