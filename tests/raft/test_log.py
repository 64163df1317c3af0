import pytest

from node.raft.errors import Compacted, Unavailable
from node.raft.log import CONFLICT_SEARCH_STEPS_MAX, RaftLog
from node.raft.memory_storage import MemoryStorage
from node.raft.types import ConfState, Entry, Snapshot, SnapshotMeta

CONF = ConfState(voters=frozenset("abc"))


def run(first: int, terms: list[int]) -> list[Entry]:
    return [Entry(term=term, index=first + offset) for offset, term in enumerate(terms)]


def stored_log(terms: list[int], snapshot_index: int = 0) -> RaftLog:
    """A log whose storage holds entries 1..len(terms), compacted up to snapshot_index."""
    storage = MemoryStorage()
    storage.append(run(1, terms))
    if snapshot_index:
        storage.create_snapshot(snapshot_index, CONF, b"")
        storage.compact(snapshot_index)
    return RaftLog(storage)


def persist(log: RaftLog) -> None:
    """What a driver does with the entries of a Ready, then advance."""
    entries = log.unstable.next_entries()
    log.unstable.accept_in_progress()
    log.storage.append(entries)
    if entries:
        log.unstable.stable_to(entries[-1].index, entries[-1].term)


def test_indexes_span_storage_and_unstable():
    log = stored_log([1, 1, 2])
    log.append(run(4, [3, 3]))
    assert (log.first_index(), log.last_index(), log.last_term()) == (1, 5, 3)
    assert [entry.index for entry in log.slice(2, 6)] == [2, 3, 4, 5]
    assert [entry.term for entry in log.entries_from(3)] == [2, 3, 3]


def test_term_lookups_across_a_snapshot():
    log = stored_log([1, 1, 2, 2, 3], snapshot_index=3)
    assert log.term(3) == 2  # the snapshot's own entry
    assert log.term(5) == 3
    with pytest.raises(Compacted):
        log.term(2)
    with pytest.raises(Unavailable):
        log.term(6)
    assert log.term_or_zero(2) == 0
    with pytest.raises(Compacted):
        log.slice(3, 5)


def test_term_lookups_across_an_unstable_snapshot():
    log = stored_log([1, 1])
    log.restore(Snapshot(meta=SnapshotMeta(index=10, term=4, conf_state=CONF)))
    assert (log.first_index(), log.last_index(), log.committed) == (11, 10, 10)
    assert log.term(10) == 4
    with pytest.raises(Compacted):
        log.term(2)  # the old stored entries no longer count


def test_slice_respects_bytes_max_across_storage_and_unstable():
    log = stored_log([1, 1])
    log.append(run(3, [1, 1]))
    assert len(log.slice(1, 5, bytes_max=24 * 3)) == 3
    assert len(log.slice(1, 5, bytes_max=1)) == 1


def test_maybe_append_truncates_a_conflict_in_storage():
    log = stored_log([1, 1, 1, 1])
    log.commit_to(2)
    assert log.maybe_append(2, 1, commit=3, entries=tuple(run(3, [2, 2, 2]))) == 5
    assert [entry.term for entry in log.entries_from(1)] == [1, 1, 2, 2, 2]
    assert log.committed == 3
    persist(log)
    assert [entry.term for entry in log.storage.entries(1, 6)] == [1, 1, 2, 2, 2]


def test_maybe_append_ignores_entries_it_already_has():
    log = stored_log([1, 1, 2])
    assert log.maybe_append(1, 1, commit=0, entries=tuple(run(2, [1]))) == 2
    assert log.last_index() == 3  # a stale APPEND never truncates matching entries
    assert log.maybe_append(3, 1, commit=0, entries=()) is None  # term mismatch


def test_find_conflict_by_term_skips_a_whole_run():
    log = stored_log([1, 1] + [2] * 50)
    assert log.find_conflict_by_term(52, 1) == (2, 1)
    assert log.find_conflict_by_term(52, 5) == (52, 2)
    assert log.find_conflict_by_term(30, 0) == (0, 0)


def test_find_conflict_by_term_looks_at_a_bounded_stretch_of_the_log():
    log = stored_log([1] + [2] * 3000)
    stop = 3001 - CONFLICT_SEARCH_STEPS_MAX
    assert log.find_conflict_by_term(3001, 1) == (stop, 2)  # where it got to; probing there is safe
    searches, found = 1, (stop, 2)
    while found[1] > 1:  # each further answer of the other side continues from there
        found = log.find_conflict_by_term(found[0], 1)
        searches += 1
    assert (found, searches) == ((1, 1), 3)


def test_slices_read_no_more_than_the_byte_limit_takes():
    log = stored_log([1] * 100)
    log.append(run(101, [2] * 100))  # unstable
    assert [entry.index for entry in log.slice(99, 201, bytes_max=4 * 24)] == [99, 100, 101, 102]
    assert [entry.index for entry in log.slice(150, 201, bytes_max=1)] == [150]  # at least one


def test_committed_entries_never_pass_what_was_handed_out_for_persisting():
    log = stored_log([1, 1])
    log.append(run(3, [1, 1]))
    log.commit_to(4)
    assert [entry.index for entry in log.next_committed()] == [1, 2]
    log.unstable.accept_in_progress()  # entries 3 and 4 go out in the same Ready
    assert [entry.index for entry in log.next_committed()] == [1, 2, 3, 4]
    log.accept_applying(4)
    assert not log.has_next_committed()


def test_unstable_hands_out_each_entry_once_even_when_replaced():
    log = stored_log([1])
    log.append(run(2, [1, 1, 1]))
    assert [entry.index for entry in log.unstable.next_entries()] == [2, 3, 4]
    log.unstable.accept_in_progress()
    assert log.unstable.next_entries() == []
    log.append(run(3, [2]))  # a new leader replaced 3 and 4 before the Ready was advanced
    assert [(entry.index, entry.term) for entry in log.unstable.next_entries()] == [(3, 2)]
    log.unstable.stable_to(4, 1)  # the advance of the old Ready: entry 4 is gone, ignored
    assert log.unstable.offset == 2


def test_is_up_to_date():
    log = stored_log([1, 2, 2])
    assert log.is_up_to_date(3, 2) and log.is_up_to_date(1, 3)
    assert not log.is_up_to_date(2, 2) and not log.is_up_to_date(9, 1)
