"""NodeStore: the Raft log, hard state, membership and snapshot in one LMDB environment."""

from __future__ import annotations

import threading

import pytest

from node.errors import StoreFull
from node.raft.errors import Compacted, Unavailable
from node.raft.types import ConfState, Entry, EntryKind, HardState, Snapshot, SnapshotMeta
from node.storage import layout, lmdb_store
from node.storage.lmdb_store import NodeStore

MAP_SIZE_BYTES = 64 << 20
VOTERS = ConfState(voters=frozenset({"n1", "n2", "n3"}))


def entries(first: int, last: int, term: int) -> list[Entry]:
    return [Entry(term=term, index=index, data=f"{term}:{index}".encode()) for index in range(first, last + 1)]


def store_with(tmp_path, *batches: list[Entry]) -> NodeStore:
    store = NodeStore(tmp_path, MAP_SIZE_BYTES)
    for batch_entries in batches:
        with store.write_batch() as batch:
            batch.append_entries(batch_entries)
    return store


def test_empty_store_has_nothing(tmp_path):
    store = NodeStore(tmp_path, MAP_SIZE_BYTES)
    assert store.initial_state() == (HardState(), ConfState())
    assert (store.first_index(), store.last_index(), store.term(0)) == (1, 0, 0)
    assert store.applied_index() == 0
    assert store.snapshot() == Snapshot(meta=SnapshotMeta())
    assert store.entries(1, 1) == []
    assert store.log_entry_count() == 0
    assert (tmp_path / "raft.lmdb" / "data.mdb").exists()


def test_append_and_read_back(tmp_path):
    store = store_with(tmp_path, entries(1, 3, term=1), entries(4, 5, term=2))
    assert store.entries(1, 6) == entries(1, 3, 1) + entries(4, 5, 2)
    assert [store.term(index) for index in range(0, 6)] == [0, 1, 1, 1, 2, 2]
    assert store.log_entry_count() == 5
    assert store.log_size_bytes() > 0
    kinds = [Entry(term=3, index=6, kind=EntryKind.NOOP), Entry(term=3, index=7, kind=EntryKind.CONF_CHANGE, data=b"{}")]
    with store.write_batch() as batch:
        batch.append_entries(kinds)
    assert store.entries(6, 8) == kinds


def test_append_replaces_the_conflicting_suffix(tmp_path):
    store = store_with(tmp_path, entries(1, 5, term=1))
    with store.write_batch() as batch:
        batch.append_entries(entries(3, 3, term=2))
    assert store.last_index() == 3
    assert store.entries(1, 4) == entries(1, 2, 1) + entries(3, 3, 2)
    with pytest.raises(Unavailable):
        store.entries(1, 5)


def test_entries_respect_bytes_max_but_return_at_least_one(tmp_path):
    big = [Entry(term=1, index=index, data=b"x" * 100) for index in range(1, 5)]
    store = store_with(tmp_path, big)
    assert store.entries(1, 5, bytes_max=10) == big[:1]
    assert store.entries(1, 5, bytes_max=2 * big[0].size_bytes()) == big[:2]
    assert store.entries(1, 5, bytes_max=None) == big


def test_out_of_range_lookups_raise(tmp_path):
    store = store_with(tmp_path, entries(1, 3, term=1))
    with pytest.raises(Unavailable):
        store.term(4)
    with pytest.raises(Unavailable):
        store.entries(2, 5)


def test_compaction_keeps_the_term_of_the_compacted_index(tmp_path):
    store = store_with(tmp_path, entries(1, 3, term=1), entries(4, 6, term=2))
    with store.write_batch() as batch:
        batch.set_applied_index(5)
        batch.save_snapshot(SnapshotMeta(index=4, term=2, conf_state=VOTERS), b"image")
        batch.compact(4)
    assert (store.first_index(), store.last_index()) == (5, 6)
    assert store.term(4) == 2
    assert store.entries(5, 7) == entries(5, 6, 2)
    assert store.log_entry_count() == 2
    with pytest.raises(Compacted):
        store.term(3)
    with pytest.raises(Compacted):
        store.entries(4, 6)
    assert store.snapshot() == Snapshot(SnapshotMeta(index=4, term=2, conf_state=VOTERS, size_bytes=5), b"image")
    with store.write_batch() as batch:
        batch.compact(2)  # already compacted: nothing to do
    assert store.first_index() == 5


def test_snapshot_data_larger_than_a_chunk_round_trips(tmp_path):
    store = store_with(tmp_path, entries(1, 2, term=1))
    data = bytes(range(256)) * (5 * 4096 + 7)  # about 5 MiB, not a multiple of the chunk size
    with store.write_batch() as batch:
        batch.set_applied_index(2)
        batch.save_snapshot(SnapshotMeta(index=2, term=1, conf_state=VOTERS), data)
    assert store.snapshot().data == data
    with store.write_batch() as batch:
        batch.append_entries(entries(3, 3, term=1))
        batch.set_applied_index(3)
        batch.save_snapshot(SnapshotMeta(index=3, term=1, conf_state=VOTERS), b"small")
    assert store.snapshot().data == b"small"


def test_install_snapshot_beyond_the_log_drops_the_whole_log(tmp_path):
    store = store_with(tmp_path, entries(1, 3, term=1))
    meta = SnapshotMeta(index=10, term=3, conf_state=VOTERS)
    with store.write_batch() as batch:
        batch.install_snapshot(Snapshot(meta, b"state"))
    assert (store.first_index(), store.last_index(), store.term(10)) == (11, 10, 3)
    assert store.applied_index() == 10
    assert store.conf_state() == VOTERS
    assert store.hard_state().commit == 10
    assert store.snapshot().data == b"state"
    with store.write_batch() as batch:
        batch.append_entries(entries(11, 12, term=3))
    assert store.entries(11, 13) == entries(11, 12, 3)


def test_install_snapshot_with_a_conflicting_term_drops_the_whole_log(tmp_path):
    store = store_with(tmp_path, entries(1, 5, term=1))
    with store.write_batch() as batch:
        batch.install_snapshot(Snapshot(SnapshotMeta(index=3, term=2, conf_state=VOTERS), b"s"))
    assert (store.first_index(), store.last_index(), store.term(3)) == (4, 3, 2)


def test_install_snapshot_matching_the_log_keeps_the_suffix(tmp_path):
    store = store_with(tmp_path, entries(1, 5, term=1))
    with store.write_batch() as batch:
        batch.install_snapshot(Snapshot(SnapshotMeta(index=3, term=1, conf_state=VOTERS), b"s"))
    assert (store.first_index(), store.last_index(), store.term(3)) == (4, 5, 1)
    assert store.entries(4, 6) == entries(4, 5, 1)
    assert store.applied_index() == 3


def test_state_survives_reopen(tmp_path):
    store = store_with(tmp_path, entries(1, 4, term=2))
    with store.write_batch() as batch:
        batch.set_hard_state(HardState(term=2, vote="n2", commit=3))
        batch.set_conf_state(VOTERS)
        batch.set_applied_index(3)
        batch.save_snapshot(SnapshotMeta(index=2, term=2, conf_state=VOTERS), b"img")
        batch.compact(2)
    store.close()
    reopened = NodeStore(tmp_path, MAP_SIZE_BYTES)
    assert reopened.initial_state() == (HardState(term=2, vote="n2", commit=3), VOTERS)
    assert reopened.applied_index() == 3
    assert (reopened.first_index(), reopened.last_index(), reopened.term(2), reopened.term(4)) == (3, 4, 2, 2)
    assert reopened.entries(3, 5) == entries(3, 4, 2)
    assert reopened.snapshot().data == b"img"


def test_an_aborted_batch_leaves_nothing(tmp_path):
    store = store_with(tmp_path, entries(1, 2, term=1))
    with pytest.raises(RuntimeError):
        with store.write_batch() as batch:
            batch.append_entries(entries(2, 6, term=2))
            batch.set_hard_state(HardState(term=2, vote="n1", commit=1))
            batch.txn.put(b"stray", b"value")
            raise RuntimeError("the driver failed half way")
    assert (store.last_index(), store.term(2)) == (2, 1)
    assert store.hard_state() == HardState()
    with store.read_transaction() as txn:
        assert txn.get(b"stray") is None
    with store.write_batch() as batch:
        batch.append_entries(entries(3, 3, term=1))
    assert store.last_index() == 3


def test_a_full_map_raises_store_full_and_the_store_stays_usable(tmp_path):
    store = NodeStore(tmp_path, map_size_bytes=1 << 20)
    index = 0
    with pytest.raises(StoreFull, match="full"):
        while index < 1000:  # bounded: 1 MiB fills long before 1000 entries of 64 KiB
            with store.write_batch() as batch:
                batch.append_entries([Entry(term=1, index=index + 1, data=b"x" * (64 << 10))])
                batch.set_hard_state(HardState(term=1, commit=index + 1))
            index += 1
    assert index >= 1
    assert store.last_index() == index
    assert store.hard_state().commit == index
    assert store.entries(index, index + 1)[0].data == b"x" * (64 << 10)
    with store.write_batch() as batch:  # small writes still fit
        batch.set_hard_state(HardState(term=2, vote="n1", commit=index))
    assert store.hard_state().term == 2
    store.close()
    reopened = NodeStore(tmp_path, map_size_bytes=1 << 20)
    assert reopened.last_index() == index


def test_a_forced_snapshot_at_the_same_index_replaces_the_previous_one(tmp_path):
    store = store_with(tmp_path, entries(1, 3, term=1))
    with store.write_batch() as batch:
        batch.set_applied_index(3)
        batch.save_snapshot(SnapshotMeta(index=3, term=1, conf_state=VOTERS), b"first")
        batch.compact(2)
    with store.write_batch() as batch:
        batch.save_snapshot(SnapshotMeta(index=3, term=1, conf_state=VOTERS), b"again")
        batch.compact(2)
    assert store.snapshot_meta() == SnapshotMeta(index=3, term=1, conf_state=VOTERS, size_bytes=5)
    assert store.snapshot().data == b"again"
    assert (store.first_index(), store.last_index()) == (3, 3)


def test_applied_index_without_a_log(tmp_path):
    """The "none" replicator applies commands with no Raft log behind them."""
    store = NodeStore(tmp_path, MAP_SIZE_BYTES)
    with store.write_batch() as batch:
        batch.set_applied_index(7)
    assert store.applied_index() == 7
    assert store.last_index() == 0


def test_sync_counters_count_commits_and_fsyncs(tmp_path):
    store = NodeStore(tmp_path, MAP_SIZE_BYTES)
    assert store.sync_counters.to_dict() == {"commits": 0, "durable_commits": 0, "fsyncs": 0}
    with store.write_batch() as batch:
        batch.append_entries(entries(1, 2, term=1))
    durable = store.sync_counters.to_dict()
    assert durable["commits"] == durable["durable_commits"] == 1
    assert durable["fsyncs"] >= 1
    with store.write_batch(durable=False) as batch:
        batch.set_applied_index(2)
    assert store.sync_counters.to_dict() == durable  # an apply-only batch is deferred
    store.commit_deferred()
    applied = store.sync_counters.to_dict()
    assert applied["commits"] == 2 and applied["durable_commits"] == 1
    assert applied["fsyncs"] == durable["fsyncs"] + 1  # an apply-only batch: its commit alone
    with pytest.raises(RuntimeError):
        with store.write_batch() as batch:
            batch.append_entries(entries(3, 3, term=1))
            raise RuntimeError("aborted")
    assert store.sync_counters.to_dict() == applied  # an aborted batch costs no sync


def test_used_fraction_is_read_again_after_enough_commits_on_a_large_map(tmp_path, monkeypatch):
    from node.storage import lmdb_store

    store = NodeStore(tmp_path, 8 << 30)  # sparse file: the map size costs no disk
    readings = []
    real_info = store.env.info

    class CountingEnv:  # env.info() counted; everything else passed through
        def __getattr__(self, name):
            return getattr(real_env, name)

        def info(self):
            readings.append(1)
            return real_info()

    real_env = store.env
    store.env = CountingEnv()
    first = store.used_fraction()
    assert 0.0 < first < 0.01 and len(readings) == 1
    store.used_fraction()
    assert len(readings) == 1  # cached: nothing committed since
    for index in range(1, lmdb_store.USED_FRACTION_REFRESH_COMMITS + 1):
        with store.write_batch(durable=False) as batch:
            batch.append_entries([Entry(term=1, index=index, data=b"x" * 4096)])
        store.commit_deferred()  # a deferred batch is no commit yet
        store.used_fraction()
    assert len(readings) == 2  # read again after USED_FRACTION_REFRESH_COMMITS commits
    assert store.used_fraction() > first


def test_used_fraction_of_a_small_map_is_read_on_every_call(tmp_path):
    store = NodeStore(tmp_path, 1 << 20)
    before = store.used_fraction()
    with store.write_batch() as batch:
        batch.append_entries([Entry(term=1, index=1, data=b"x" * 200_000)])
    assert store.used_fraction() > before  # one commit later, already seen


def committed_applied_index(store: NodeStore) -> int:
    """The applied index as another thread (or a restart) sees it: committed state only."""
    found = []
    reader = threading.Thread(target=lambda: found.append(store.applied_index()))
    reader.start()
    reader.join()
    return found[0]


def test_apply_only_batches_are_deferred_until_a_durable_batch_a_read_or_commit_deferred(tmp_path):
    store = store_with(tmp_path, entries(1, 3, term=1))
    for index in (1, 2):
        with store.write_batch(durable=False) as batch:
            batch.set_applied_index(index)
    assert store.sync_counters.commits == 1 and committed_applied_index(store) == 0
    with store.write_batch() as batch:  # a durable batch takes them along: one commit
        batch.set_hard_state(HardState(term=2, vote="n1", commit=2))
    assert store.sync_counters.commits == 2 and committed_applied_index(store) == 2
    with store.write_batch(durable=False) as batch:
        batch.set_applied_index(3)
    assert committed_applied_index(store) == 2
    with store.read_transaction() as txn:  # the writing thread reads what it wrote
        assert layout.read_applied_index(txn, store._tables) == 3
    assert store.sync_counters.commits == 3 and committed_applied_index(store) == 3


def test_a_failed_batch_on_deferred_ones_aborts_itself_alone(tmp_path):
    store = store_with(tmp_path, entries(1, 3, term=1))
    with store.write_batch(durable=False) as batch:
        batch.set_applied_index(1)
    with pytest.raises(RuntimeError):
        with store.write_batch(durable=False) as batch:
            batch.set_applied_index(2)
            raise RuntimeError("the driver failed half way")
    store.commit_deferred()
    assert committed_applied_index(store) == 1


def test_deferred_batches_are_committed_after_the_most_allowed_and_on_close(tmp_path, monkeypatch):
    monkeypatch.setattr(lmdb_store, "DEFERRED_BATCHES_MAX", 3)
    store = store_with(tmp_path, entries(1, 9, term=1))
    for index in range(1, 4):
        with store.write_batch(durable=False) as batch:
            batch.set_applied_index(index)
    assert committed_applied_index(store) == 3
    with store.write_batch(durable=False) as batch:
        batch.set_applied_index(4)
    store.close()
    assert NodeStore(tmp_path, MAP_SIZE_BYTES).applied_index() == 4


def test_commit_deferred_waits_until_they_are_old_enough(tmp_path):
    store = store_with(tmp_path, entries(1, 2, term=1))
    with store.write_batch(durable=False) as batch:
        batch.set_applied_index(1)
    store.commit_deferred(older_than_seconds=3600)
    assert committed_applied_index(store) == 0
    store.commit_deferred(older_than_seconds=0)
    assert committed_applied_index(store) == 1


def committed_log(store: NodeStore) -> list[Entry]:
    """The log as another thread's read transaction sees it in LMDB (what survives a crash)."""
    result = []

    def read() -> None:
        with store.env.begin(db=store._tables.log) as txn:
            result.extend(layout.decode_entry(layout.key_index(key), value) for key, value in txn.cursor())

    reader = threading.Thread(target=read)
    reader.start()
    reader.join()
    return result


def test_deferred_log_batches_show_in_the_read_path_once_committed(tmp_path):
    # A leader's own entries are written without a flush (the driver): deferred like an apply.
    store = store_with(tmp_path, entries(1, 2, term=1))
    with store.write_batch(durable=False) as batch:
        batch.append_entries(entries(3, 4, term=1))
    with store.write_batch(durable=False) as batch:  # builds on the deferred ones
        batch.append_entries(entries(4, 5, term=2))
        batch.set_applied_index(3)
    assert store.sync_counters.commits == 1, "a deferred batch that changed the log was committed at once"
    assert (store.last_index(), store.entries(1, 3)) == (2, entries(1, 2, term=1))  # as committed
    assert [entry.index for entry in committed_log(store)] == [1, 2]
    with store.write_batch():  # an empty durable batch flushes every earlier one
        pass
    expected = entries(1, 3, term=1) + entries(4, 5, term=2)
    assert (store.last_index(), store.term(5), store.entries(1, 6)) == (5, 2, expected)
    assert committed_log(store) == expected
    store.close()
    reopened = NodeStore(tmp_path, MAP_SIZE_BYTES)
    assert (reopened.entries(1, 6), reopened.applied_index()) == (expected, 3)



def test_deferred_log_batches_are_committed_before_they_hold_much_of_the_map(tmp_path):
    # used_fraction() sees committed pages only: a deferred chain of large entries must not
    # grow unseen until a commit fails on a full map.
    store = NodeStore(tmp_path, 4 << 20)
    share_bytes = store.map_size_bytes * lmdb_store.DEFERRED_LOG_MAP_SHARE
    index = 0
    while store.sync_counters.commits == 0:
        index += 1
        with store.write_batch(durable=False) as batch:
            batch.append_entries([Entry(term=1, index=index, data=b"x" * 20_000)])
        assert index * 20_000 <= share_bytes + 20_000, "the deferred entries outgrew their share of the map"
    assert store.last_index() == index  # committed: the read path shows them
