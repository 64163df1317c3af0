import pytest

from node.raft.errors import Compacted, Unavailable
from node.raft.memory_storage import MemoryStorage, SnapshotOutOfDate
from node.raft.types import ConfState, Entry, HardState, Snapshot, SnapshotMeta

CONF = ConfState(voters=frozenset("abc"))


def entries(first: int, last: int, term: int, size_bytes: int = 0) -> list[Entry]:
    return [Entry(term=term, index=index, data=b"x" * size_bytes) for index in range(first, last + 1)]


def storage_with(first: int, last: int, term: int = 1) -> MemoryStorage:
    storage = MemoryStorage()
    storage.append(entries(1, last, term))
    if first > 1:
        storage.create_snapshot(first - 1, CONF, b"image")
        storage.compact(first - 1)
    return storage


def test_empty_storage():
    storage = MemoryStorage()
    assert (storage.first_index(), storage.last_index()) == (1, 0)
    assert storage.term(0) == 0
    assert storage.initial_state() == (HardState(), ConfState())
    assert storage.snapshot().meta.index == 0
    assert storage.entries(1, 1) == []


def test_entries_ranges_and_errors():
    storage = storage_with(first=4, last=8)
    assert [entry.index for entry in storage.entries(4, 9)] == [4, 5, 6, 7, 8]
    with pytest.raises(Compacted):
        storage.entries(3, 5)
    with pytest.raises(Unavailable):
        storage.entries(5, 10)
    assert storage.term(3) == 1  # the snapshot's last entry keeps its term
    with pytest.raises(Compacted):
        storage.term(2)
    with pytest.raises(Unavailable):
        storage.term(9)


def test_entries_respect_bytes_max_but_return_at_least_one():
    storage = MemoryStorage()
    storage.append(entries(1, 5, term=1, size_bytes=76))  # 100 bytes each with overhead
    assert len(storage.entries(1, 6, bytes_max=250)) == 2
    assert len(storage.entries(1, 6, bytes_max=1)) == 1
    assert len(storage.entries(1, 6, bytes_max=None)) == 5


def test_append_truncates_a_conflicting_suffix():
    storage = storage_with(first=1, last=5, term=1)
    storage.append(entries(3, 4, term=2))
    assert [(entry.index, entry.term) for entry in storage.entries(1, 5)] == [(1, 1), (2, 1), (3, 2), (4, 2)]
    assert storage.last_index() == 4


def test_append_skips_entries_covered_by_the_snapshot():
    storage = storage_with(first=4, last=5)
    storage.append(entries(2, 7, term=1))
    assert (storage.first_index(), storage.last_index()) == (4, 7)


def test_append_refuses_a_gap():
    storage = storage_with(first=1, last=3)
    with pytest.raises(AssertionError):
        storage.append(entries(5, 6, term=1))


def test_create_snapshot_and_compact():
    storage = storage_with(first=1, last=10, term=3)
    snapshot = storage.create_snapshot(6, CONF, b"image")
    assert snapshot.meta == SnapshotMeta(index=6, term=3, conf_state=CONF, size_bytes=5)
    storage.compact(4)  # keeping a few entries behind the snapshot is allowed
    assert (storage.first_index(), storage.last_index()) == (5, 10)
    with pytest.raises(SnapshotOutOfDate):
        storage.create_snapshot(6, CONF, b"again")
    with pytest.raises(Compacted):
        storage.compact(3)


def test_apply_snapshot_replaces_the_log_and_membership():
    storage = storage_with(first=1, last=3)
    snapshot = Snapshot(meta=SnapshotMeta(index=20, term=4, conf_state=CONF), data=b"image")
    storage.apply_snapshot(snapshot)
    assert (storage.first_index(), storage.last_index()) == (21, 20)
    assert storage.term(20) == 4
    assert storage.snapshot() == snapshot
    assert storage.initial_state()[1] == CONF
    with pytest.raises(SnapshotOutOfDate):
        storage.apply_snapshot(snapshot)


def test_hard_state_and_conf_state_are_recorded():
    storage = MemoryStorage()
    storage.set_hard_state(HardState(term=3, vote="b", commit=2))
    storage.set_conf_state(CONF)
    assert storage.initial_state() == (HardState(term=3, vote="b", commit=2), CONF)
