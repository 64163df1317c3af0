"""RaftLog: the persisted log (Storage, read-only) plus the unstable tail, with the commit and
apply positions.

Positions: applied <= applying <= committed <= last_index(). `applying` is the last entry
handed out in a Ready's committed_entries; `applied` the last one the driver confirmed.
"""

from __future__ import annotations

from node.raft.errors import Compacted, Unavailable
from node.raft.log_unstable import Unstable
from node.raft.storage import Storage
from node.raft.types import NO_INDEX, NO_TERM, Entry, EntryKind, Snapshot, entries_size_bytes, prefix_within

_new_tuple = tuple.__new__  # an Entry from its fields in C (the NamedTuple's __new__ is a Python function)
assert Entry._fields == ("term", "index", "kind", "data")

# Entries one conflict search may look at (see find_conflict_by_term).
CONFLICT_SEARCH_STEPS_MAX = 1024


class RaftLog:
    def __init__(self, storage: Storage, applied: int = NO_INDEX) -> None:
        self.storage = storage
        self.unstable = Unstable(storage.last_index() + 1)
        snapshot_index = storage.first_index() - 1
        self.committed = snapshot_index
        self.applying = max(applied, snapshot_index)
        self.applied = self.applying
        # Set by the driver (an input, like a message): while True, committed entries wait and
        # are not handed out in a Ready (has_next_committed is False). A follower's driver
        # holds them back for a moment to apply several in one batch; the core's own logic
        # never depends on when entries are applied, only on `applied` once they are.
        self.committed_held = False

    # -- positions and terms ----------------------------------------------------------------

    def first_index(self) -> int:
        index = self.unstable.maybe_first_index()
        return index if index is not None else self.storage.first_index()

    def last_index(self) -> int:
        entries = self.unstable.entries
        if entries:  # (the unstable tail ends the log: a leader's usual answer, without a call)
            return self.unstable.offset + len(entries) - 1
        index = self.unstable.maybe_last_index()
        return index if index is not None else self.storage.last_index()

    def term(self, index: int) -> int:
        """Raises Compacted below first_index() - 1 and Unavailable beyond last_index()."""
        unstable = self.unstable
        position = index - unstable.offset
        if 0 <= position < len(unstable.entries):
            return unstable.entries[position].term  # in the unstable tail: within the bounds
        if index < self.first_index() - 1:
            raise Compacted(f"index {index} is compacted")
        if index > self.last_index():
            raise Unavailable(f"index {index} is beyond the last index {self.last_index()}")
        term = self.unstable.maybe_term(index)
        return term if term is not None else self.storage.term(index)

    def term_or_zero(self, index: int) -> int:
        """The term, or NO_TERM where it is not known (compacted or beyond the end)."""
        try:
            return self.term(index)
        except (Compacted, Unavailable):
            return NO_TERM

    def last_term(self) -> int:
        return self.term(self.last_index())

    def match_term(self, index: int, term: int) -> bool:
        try:
            return self.term(index) == term
        except (Compacted, Unavailable):
            return False

    def is_up_to_date(self, last_index: int, last_term: int) -> bool:
        """Whether a candidate whose log ends at (last_index, last_term) is at least as
        up to date as this log (section 5.4.1 of the Raft paper)."""
        own_last_term = self.last_term()
        return last_term > own_last_term or (last_term == own_last_term and last_index >= self.last_index())

    def persisted_last_index(self) -> int:
        """The last index known to be stored durably and still part of this log."""
        assert self.unstable.snapshot is None, "only a leader asks, and a leader has no snapshot pending"
        if self.unstable.entries:
            return self.unstable.offset - 1
        return self.last_index()

    # -- reading entries ----------------------------------------------------------------------

    def slice(self, low: int, high: int, bytes_max: int | None = None) -> list[Entry]:
        """Entries [low, high), cut at bytes_max but at least one. Raises Compacted."""
        assert low <= high, (low, high)
        if low < self.first_index():
            raise Compacted(f"index {low} is compacted")
        assert high <= self.last_index() + 1, (high, self.last_index())
        if low == high:
            return []
        result: list[Entry] = []
        offset = self.unstable.offset
        if low < offset:
            stored_high = min(high, offset)
            result = self.storage.entries(low, stored_high, bytes_max)
            if len(result) < stored_high - low:
                return result  # the byte limit was reached inside storage
        if high > offset:
            start, stop = max(low, offset) - offset, high - offset
            if bytes_max is None:
                return result + self.unstable.entries[start:stop]
            # Storage kept within bytes_max (its contract): the unstable part takes what is left,
            # and at least one entry if storage gave none.
            bytes_left = bytes_max - entries_size_bytes(result) if result else bytes_max
            tail = self.unstable.entries[start:prefix_within(self.unstable.entries, start, stop, bytes_left,
                                                             at_least_one=not result)]
            return result + tail if result else tail
        return result

    def entries_from(self, low: int, bytes_max: int | None = None) -> list[Entry]:
        if low > self.last_index():
            return []
        return self.slice(low, self.last_index() + 1, bytes_max)

    def snapshot(self) -> Snapshot:
        return self.unstable.snapshot if self.unstable.snapshot else self.storage.snapshot()

    # -- changing the log ---------------------------------------------------------------------

    def append(self, entries: list[Entry]) -> int:
        if entries:
            assert entries[0].index - 1 >= self.committed, "must never overwrite committed entries"
            assert entries[0].index <= self.last_index() + 1, "appending would leave a gap"
            self.unstable.truncate_and_append(entries)
        return self.last_index()

    def append_own(self, term: int, kind: EntryKind, data: bytes) -> int:
        """A leader's new entry after its last one (of `term`, its own); returns its index. What
        append([entry]) does, made for the entry of every proposed write: no list, no bounds
        lookups while the unstable tail holds entries (the new one goes right after them)."""
        entries = self.unstable.entries
        if not entries:
            index = self.last_index() + 1
            self.append([_new_tuple(Entry, (term, index, kind, data))])
            return index
        index = self.unstable.offset + len(entries)
        assert index > self.committed, "must never overwrite committed entries"
        assert term >= entries[-1].term, "terms never decrease along the log"
        entries.append(_new_tuple(Entry, (term, index, kind, data)))
        return index

    def find_conflict(self, entries: tuple[Entry, ...] | list[Entry]) -> int:
        """The index of the first entry that is new or differs in term; NO_INDEX if none."""
        last_index = self.last_index()
        for entry in entries:
            # An entry beyond our log is new (match_term would say so through an exception, with
            # its sentence formatted: for the first entry of nearly every APPEND).
            if entry.index > last_index or not self.match_term(entry.index, entry.term):
                return entry.index
        return NO_INDEX

    def find_conflict_by_term(self, index: int, term: int) -> tuple[int, int]:
        """The largest (i, term(i)) with i <= index and term(i) <= term: where a leader (or a
        follower) can jump to skip a whole run of conflicting entries at once. Looks at no more
        than CONFLICT_SEARCH_STEPS_MAX entries: then it returns where it got to (any probe
        position is safe, a farther one only costs another round trip), so one answer never
        makes a node read an unbounded stretch of its log."""
        assert index <= self.last_index(), (index, self.last_index())
        lowest = max(NO_INDEX, index - CONFLICT_SEARCH_STEPS_MAX)
        while index > lowest:
            try:
                own_term = self.term(index)
            except Compacted:
                return index, NO_TERM
            if own_term <= term:
                return index, own_term
            index -= 1
        return index, self.term_or_zero(index)

    def maybe_append(self, previous_index: int, previous_term: int, commit: int, entries: tuple[Entry, ...]) -> int | None:
        """A follower's APPEND handling: None if the log does not hold (previous_index,
        previous_term); else the index of the last entry the message vouches for."""
        if not self.match_term(previous_index, previous_term):
            return None
        last_new_index = previous_index + len(entries)
        conflict_index = self.find_conflict(entries)
        if conflict_index != NO_INDEX:
            assert conflict_index > self.committed, f"conflict at committed index {conflict_index}"
            self.append(list(entries[conflict_index - previous_index - 1 :]))
        self.commit_to(min(commit, last_new_index))
        return last_new_index

    def commit_to(self, index: int) -> None:
        if index > self.committed:
            assert index <= self.last_index(), f"commit {index} beyond the log end {self.last_index()}"
            self.committed = index

    def maybe_commit(self, index: int, term: int) -> bool:
        """Commit up to index if that entry is of `term` (the leader's current term)."""
        if index > self.committed and self.term_or_zero(index) == term:
            self.commit_to(index)
            return True
        return False

    def restore(self, snapshot: Snapshot) -> None:
        assert snapshot.meta.index > self.committed
        self.committed = snapshot.meta.index
        self.unstable.restore(snapshot)

    # -- handing out and confirming -------------------------------------------------------------

    def has_next_unstable(self) -> bool:
        return self.unstable.has_next_entries() or self.unstable.next_snapshot() is not None

    def _applicable_high(self) -> int:
        """Committed entries may be applied once handed out for persisting (this Ready or an
        earlier one): the driver persists before it applies."""
        high = self.unstable.offset_in_progress - 1
        return self.committed if self.committed < high else high  # (min(): a call more, asked every turn)

    def has_next_committed(self) -> bool:
        return not self.committed_held and self.committed_waiting() > 0

    def committed_waiting(self) -> int:
        """How many committed entries wait to be handed out, held back or not."""
        if self.unstable.snapshot is not None:
            return 0  # the snapshot must be restored first
        waiting = self._applicable_high() - self.applying
        return waiting if waiting > 0 else 0

    def next_committed(self, bytes_max: int | None = None) -> list[Entry]:
        if not self.has_next_committed():
            return []
        return self.slice(self.applying + 1, self._applicable_high() + 1, bytes_max)

    def accept_applying(self, index: int) -> None:
        assert self.applying < index <= self.committed, (self.applying, index, self.committed)
        self.applying = index

    def applied_to(self, index: int) -> None:
        assert self.applied <= index <= self.applying, (self.applied, index, self.applying)
        self.applied = index

    def snapshot_applied(self, index: int) -> None:
        self.unstable.stable_snapshot_to(index)
        assert index <= self.committed
        self.applying = max(self.applying, index)
        self.applied = max(self.applied, index)
