"""NodeStore's in-memory tail of the log answers exactly what LMDB holds, whatever the batches did."""

from __future__ import annotations

import random

import pytest

from node.raft.types import ConfState, Entry, HardState, Snapshot, SnapshotMeta
from node.storage import layout, lmdb_store
from node.storage.lmdb_store import NodeStore

MAP_SIZE_BYTES = 64 << 20
VOTERS = ConfState(voters=frozenset({"n1", "n2", "n3"}))


def stored_in_lmdb(store: NodeStore) -> dict[int, Entry]:
    """Every log entry as LMDB holds it, read past the store's own read path."""
    with store.env.begin() as txn:
        return {layout.key_index(key): layout.decode_entry(layout.key_index(key), value)
                for key, value in txn.cursor(db=store._tables.log)}


def check_reads_match_lmdb(store: NodeStore) -> None:
    stored = stored_in_lmdb(store)
    first, last = store.first_index(), store.last_index()
    assert sorted(stored) == list(range(first, last + 1))
    for low in range(first, last + 1):
        assert store.entries(low, last + 1) == [stored[index] for index in range(low, last + 1)]
        assert store.term(low) == stored[low].term
    if last >= first:
        one_entry_bytes = stored[first].size_bytes()
        assert store.entries(first, last + 1, bytes_max=one_entry_bytes) == [stored[first]]


@pytest.mark.parametrize("seed", range(20))
def test_the_tail_matches_lmdb_through_appends_overwrites_compaction_and_snapshots(tmp_path, monkeypatch, seed):
    monkeypatch.setattr(lmdb_store, "LOG_TAIL_ENTRIES_MAX", 7)
    monkeypatch.setattr(lmdb_store, "LOG_TAIL_BYTES_MAX", 400)
    rng = random.Random(seed)
    store = NodeStore(tmp_path, MAP_SIZE_BYTES)
    term, applied = 1, 0
    for _ in range(60):
        action = rng.random()
        first, last = store.first_index(), store.last_index()
        with store.write_batch() as batch:
            if action < 0.65 or last < first:
                # Append, sometimes over a suffix (a new leader's entries), in one or two calls.
                term += rng.random() < 0.3
                start = rng.randint(max(first, applied + 1), last + 1)
                count = rng.randint(1, 9)
                new = [Entry(term=term, index=index, data=bytes(rng.randrange(60)))
                       for index in range(start, start + count)]
                split = rng.randint(0, count)
                batch.append_entries(new[:split])
                batch.append_entries(new[split:])
            elif action < 0.85:
                # Snapshot what is applied, then compact up to it.
                applied = rng.randint(max(applied, first - 1), last)
                if applied >= first:
                    batch.set_applied_index(applied)
                    batch.save_snapshot(SnapshotMeta(applied, store.term(applied), VOTERS), b"image")
                    batch.compact(rng.randint(first - 1, applied))
            else:
                # A leader's snapshot beyond (or inside) the log.
                index = rng.randint(last, last + 5)
                snapshot_term = store.term(index) if index <= last and rng.random() < 0.5 else term
                if index > store.snapshot_meta().index and index > applied:
                    batch.install_snapshot(Snapshot(SnapshotMeta(index, snapshot_term, VOTERS), b"image"))
                    applied = index
        check_reads_match_lmdb(store)
    assert store.last_index() > 0


def test_entries_just_stored_are_read_from_memory(tmp_path, monkeypatch):
    store = NodeStore(tmp_path, MAP_SIZE_BYTES)
    with store.write_batch() as batch:
        batch.append_entries([Entry(term=1, index=index, data=b"x") for index in range(1, 6)])
        batch.set_hard_state(HardState(1, "", 0))
    monkeypatch.setattr(store, "env", None)  # any read of LMDB now fails
    assert [entry.index for entry in store.entries(2, 6)] == [2, 3, 4, 5]
    assert store.term(3) == 1
