"""ChunkStore: content addressing, dedup, corruption detection, StoreFull and the GC grace logic."""

from __future__ import annotations

import logging
import threading
import time

import lmdb
import pytest

from node.chunks.store import ChunkStore, chunk_id_of
from node.errors import ChecksumMismatch, NotFound, StoreFull

MAP_SIZE_BYTES = 64 << 20


class FakeClock:
    def __init__(self, now_seconds: float = 1000.0) -> None:
        self.now_seconds = now_seconds

    def __call__(self) -> float:
        return self.now_seconds


@pytest.fixture
def clock():
    return FakeClock()


@pytest.fixture
def store(tmp_path, clock):
    store = ChunkStore(tmp_path, MAP_SIZE_BYTES, clock=clock)
    yield store
    store.close()


def corrupt(directory, chunk_id: bytes, content: bytes) -> None:
    """Overwrite a stored value behind the store's back, as a failing disk would."""
    env = lmdb.open(str(directory / "chunks.lmdb"), max_dbs=2)
    try:
        with env.begin(write=True) as txn:
            txn.put(chunk_id, content, db=env.open_db(b"chunks", txn=txn))
    finally:
        env.close()


def test_put_get_has_delete(store):
    data = b"hello chunk" * 1000
    chunk_id = chunk_id_of(data)
    assert not store.has(chunk_id)
    assert store.put(chunk_id, data) is True
    assert store.has(chunk_id)
    assert store.get(chunk_id) == data
    assert store.usage() == (1, len(data))
    assert store.delete(chunk_id) is True
    assert store.delete(chunk_id) is False
    with pytest.raises(NotFound):
        store.get(chunk_id)
    assert store.counters()["get_misses"] == 1


def test_identical_chunks_are_stored_once(store):
    data = b"x" * 5000
    assert store.put(chunk_id_of(data), data) is True
    assert store.put(chunk_id_of(data), data) is False
    assert store.usage() == (1, 5000)
    assert store.counters()["dedup_puts"] == 1


def test_put_with_wrong_id_is_refused_before_writing(store):
    with pytest.raises(ChecksumMismatch):
        store.put(chunk_id_of(b"other"), b"data")
    assert store.usage()[0] == 0


def test_large_chunks_round_trip(store):
    data = bytes(range(256)) * (5 << 12)  # 5 MiB
    store.put(chunk_id_of(data), data)
    assert store.get(chunk_id_of(data)) == data


def test_data_survives_reopen(tmp_path, clock):
    data = b"durable"
    first = ChunkStore(tmp_path, MAP_SIZE_BYTES, clock=clock)
    first.put(chunk_id_of(data), data)
    first.close()
    second = ChunkStore(tmp_path, MAP_SIZE_BYTES, clock=clock)
    try:
        assert second.get(chunk_id_of(data)) == data
    finally:
        second.close()


def test_corruption_is_detected_logged_and_removed(tmp_path, clock, caplog):
    data = b"precious" * 100
    chunk_id = chunk_id_of(data)
    writer = ChunkStore(tmp_path, MAP_SIZE_BYTES, clock=clock)
    writer.put(chunk_id, data)
    writer.close()  # LMDB allows one open environment per path in a process
    corrupt(tmp_path, chunk_id, b"precioUs" + data[8:])
    store = ChunkStore(tmp_path, MAP_SIZE_BYTES, clock=clock)
    try:
        with caplog.at_level(logging.WARNING), pytest.raises(ChecksumMismatch, match=chunk_id.hex()):
            store.get(chunk_id)
        assert chunk_id.hex() in caplog.text
        assert store.counters()["checksum_mismatches"] == 1
        # The corrupt copy is gone, so a replica can be written here again.
        assert not store.has(chunk_id)
        assert store.put(chunk_id, data) is True
        assert store.get(chunk_id) == data
    finally:
        store.close()


def test_full_map_raises_store_full_and_keeps_the_store_intact(tmp_path, clock):
    store = ChunkStore(tmp_path, 1 << 20, clock=clock)
    try:
        kept = b"k" * 1000
        store.put(chunk_id_of(kept), kept)
        big = b"b" * (2 << 20)
        with pytest.raises(StoreFull):
            store.put(chunk_id_of(big), big)
        assert store.get(chunk_id_of(kept)) == kept
        assert store.usage()[0] == 1
        small = b"s" * 100
        assert store.put(chunk_id_of(small), small)
    finally:
        store.close()


def put(store: ChunkStore, text: bytes) -> bytes:
    store.put(chunk_id_of(text), text)
    return chunk_id_of(text)


def test_new_chunks_expire_from_their_write_time_unless_referenced(store, clock):
    clock.now_seconds = 1000.0
    orphan = put(store, b"orphan")
    committed = put(store, b"committed")
    result = store.collect_garbage({committed}, now_seconds=1050.0, grace_seconds=60.0, dry_run=False)
    assert result == {"unreferenced": 1, "deleted": 0, "deleted_bytes": 0}
    result = store.collect_garbage({committed}, now_seconds=1061.0, grace_seconds=60.0, dry_run=False)
    assert result == {"unreferenced": 1, "deleted": 1, "deleted_bytes": len(b"orphan")}
    assert not store.has(orphan) and store.has(committed)


def test_unreferenced_time_is_remembered_and_cleared_when_referenced_again(store, clock):
    clock.now_seconds = 0.0
    chunk = put(store, b"chunk")
    store.collect_garbage({chunk}, now_seconds=10.0, grace_seconds=100.0, dry_run=False)  # referenced
    store.collect_garbage(set(), now_seconds=200.0, grace_seconds=100.0, dry_run=False)  # first seen at 200
    assert store.collect_garbage(set(), now_seconds=299.0, grace_seconds=100.0, dry_run=False)["deleted"] == 0
    store.collect_garbage({chunk}, now_seconds=300.0, grace_seconds=100.0, dry_run=False)  # referenced again
    store.collect_garbage(set(), now_seconds=350.0, grace_seconds=100.0, dry_run=False)  # first seen at 350
    assert store.collect_garbage(set(), now_seconds=449.0, grace_seconds=100.0, dry_run=False)["deleted"] == 0
    assert store.collect_garbage(set(), now_seconds=451.0, grace_seconds=100.0, dry_run=False)["deleted"] == 1


def test_putting_an_unreferenced_chunk_again_restarts_its_grace(store, clock):
    clock.now_seconds = 0.0
    chunk = put(store, b"reused")
    clock.now_seconds = 90.0
    put(store, b"reused")  # a new upload of the same content, about to commit
    assert store.collect_garbage(set(), now_seconds=150.0, grace_seconds=100.0, dry_run=False)["deleted"] == 0
    assert store.has(chunk)


def test_dry_run_changes_nothing(store, clock):
    clock.now_seconds = 0.0
    chunk = put(store, b"victim")
    result = store.collect_garbage(set(), now_seconds=500.0, grace_seconds=100.0, dry_run=True)
    assert result == {"unreferenced": 1, "deleted": 1, "deleted_bytes": 6}
    assert store.has(chunk)
    # A referenced chunk seen in a dry run is not cleared from the table either.
    store.collect_garbage({chunk}, now_seconds=500.0, grace_seconds=100.0, dry_run=True)
    assert store.collect_garbage(set(), now_seconds=500.0, grace_seconds=100.0, dry_run=False)["deleted"] == 1


def test_gc_deletes_many_adjacent_chunks_in_one_pass(store, clock):
    clock.now_seconds = 0.0
    chunks = [put(store, b"chunk %d" % number) for number in range(60)]
    keep = set(chunks[::7])
    result = store.collect_garbage(keep, now_seconds=1000.0, grace_seconds=10.0, dry_run=False)
    assert result["deleted"] == 60 - len(keep)
    assert store.usage()[0] == len(keep)
    assert all(store.has(chunk) for chunk in keep)


def test_concurrent_puts_share_one_synced_transaction(store):
    """Group commit: puts that arrive while a transaction commits are written together in the
    next one, and none returns before the transaction holding its chunk is committed."""
    batches: list[list[bytes]] = []
    first_commit_may_finish = threading.Event()
    commit = store._commit

    def observed_commit(batch):
        batches.append([queued.chunk_id for queued in batch])
        if len(batches) == 1:
            first_commit_may_finish.wait()
        commit(batch)

    store._commit = observed_commit
    contents = [b"chunk %d " % number * 1000 for number in range(5)]
    returned: list[bytes] = []
    threads = [threading.Thread(target=lambda data=data: returned.append(data) if store.put(chunk_id_of(data), data)
                                else None) for data in contents]
    threads[0].start()
    wait_for(lambda: len(batches) == 1, "the first put to start committing")
    for thread in threads[1:]:
        thread.start()
    wait_for(lambda: len(store._commit_queue) == 4, "the other puts to queue behind the first commit")
    assert returned == []  # nothing is acknowledged before its commit
    first_commit_may_finish.set()
    for thread in threads:
        thread.join()
    assert batches[0] == [chunk_id_of(contents[0])]
    assert sorted(batches[1]) == sorted(chunk_id_of(data) for data in contents[1:])  # one transaction
    assert len(batches) == 2
    assert sorted(returned) == sorted(contents)
    assert [store.get(chunk_id_of(data)) for data in contents] == contents


def test_a_failed_group_commit_fails_every_put_in_it(tmp_path, clock):
    store = ChunkStore(tmp_path, 1 << 20, clock=clock)
    try:
        big = b"\x01" * (2 << 20)
        with pytest.raises(StoreFull):
            store.put(chunk_id_of(big), big)
        small = b"fits"
        assert store.put(chunk_id_of(small), small) is True  # the store still works afterwards
        assert not store.has(chunk_id_of(big))
    finally:
        store.close()


def wait_for(condition, what: str, seconds: float = 5.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.001)  # a polling interval, not a synchronisation point


def stored_bytes_by_walking(directory) -> int:
    env = lmdb.open(str(directory / "chunks.lmdb"), max_dbs=3, readonly=True, lock=False)
    try:
        with env.begin(buffers=True) as txn:
            chunks = env.open_db(b"chunks", txn=txn, create=False)
            return sum(len(value) for value in txn.cursor(db=chunks).iternext(keys=False, values=True))
    finally:
        env.close()


def test_usage_follows_every_write_and_removal(tmp_path, clock):
    store = ChunkStore(tmp_path, MAP_SIZE_BYTES, clock=clock)
    try:
        kept, deleted, collected = put(store, b"k" * 3000), put(store, b"d" * 2000), put(store, b"c" * 1000)
        put(store, b"k" * 3000)  # dedup: nothing more stored
        assert store.usage() == (3, 6000)
        assert store.delete(deleted) and not store.delete(deleted)
        assert store.usage() == (2, 4000)
        clock.now_seconds += 100
        assert store.collect_garbage({kept}, clock(), 10, dry_run=True)["deleted_bytes"] == 1000
        assert store.usage() == (2, 4000)
        assert store.collect_garbage({kept}, clock(), 10, dry_run=False)["deleted_bytes"] == 1000
        assert not store.has(collected)
        assert store.usage() == (1, 3000)
    finally:
        store.close()
    corrupt(tmp_path, kept, b"K" * 3000)
    store = ChunkStore(tmp_path, MAP_SIZE_BYTES, clock=clock)
    try:
        assert store.scrub(kept) == 3000  # found corrupt and removed
        assert store.usage() == (0, 0)
        put(store, b"k" * 3000)
        assert store.usage() == (1, 3000)
    finally:
        store.close()
    assert stored_bytes_by_walking(tmp_path) == 3000


def test_a_store_written_before_the_usage_table_is_summed_once_on_open(tmp_path, clock):
    store = ChunkStore(tmp_path, MAP_SIZE_BYTES, clock=clock)
    put(store, b"a" * 1500)
    put(store, b"b" * 2500)
    store.close()
    env = lmdb.open(str(tmp_path / "chunks.lmdb"), max_dbs=3)
    try:
        with env.begin(write=True) as txn:
            txn.drop(env.open_db(b"usage", txn=txn))  # as a store written before the table was
    finally:
        env.close()
    store = ChunkStore(tmp_path, MAP_SIZE_BYTES, clock=clock)
    try:
        assert store.usage() == (2, 4000)
        put(store, b"c" * 500)
        assert store.usage() == (3, 4500)
    finally:
        store.close()


def test_a_view_keeps_its_content_while_the_chunk_is_deleted_and_its_pages_reused(store):
    data = bytes(range(256)) * 4096  # 1 MiB
    chunk_id = put(store, data)
    view = store.view(chunk_id)
    assert type(view) is memoryview and view == data
    assert store.delete(chunk_id)
    for number in range(8):  # new chunks, which may take the freed pages once no reader holds them
        put(store, bytes([number]) * len(data))
    assert view == data  # its read transaction still holds the old pages
    assert store.counters()["gets"] == 1
    with pytest.raises(NotFound):
        store.view(chunk_id)


def test_views_past_the_limit_are_copies_and_released_views_free_their_slot(store, monkeypatch):
    monkeypatch.setattr("node.chunks.store.VIEWS_OPEN_MAX", 2)
    chunk_id = put(store, b"v" * 10000)
    first, second = store.view(chunk_id), store.view(chunk_id)
    third = store.view(chunk_id)
    assert (type(first), type(second), type(third)) == (memoryview, memoryview, bytes)
    del first
    assert type(store.view(chunk_id)) is memoryview  # released at once: the slot is free again
    assert third == second == b"v" * 10000


def test_a_corrupt_chunk_is_refused_by_view_and_removed(tmp_path, clock):
    data = b"precious" * 100
    chunk_id = put_and_close(tmp_path, clock, data)
    corrupt(tmp_path, chunk_id, b"precioUs" + data[8:])
    store = ChunkStore(tmp_path, MAP_SIZE_BYTES, clock=clock)
    try:
        assert store.view(chunk_id, verify=False) == b"precioUs" + data[8:]
        with pytest.raises(ChecksumMismatch):
            store.view(chunk_id)
        assert not store.has(chunk_id)
        assert store.counters()["checksum_mismatches"] == 1
    finally:
        store.close()


def test_close_waits_for_views_still_referenced(tmp_path, clock):
    store = ChunkStore(tmp_path, MAP_SIZE_BYTES, clock=clock)
    holder = [store.view(put(store, b"w" * 100000))]  # as a frame not yet sent holds it
    closing = threading.Thread(target=store.close)
    closing.start()
    closing.join(0.05)
    assert closing.is_alive()  # it cannot unmap the store under the view
    holder.clear()
    closing.join(5)
    assert not closing.is_alive()


def put_and_close(directory, clock, data: bytes) -> bytes:
    store = ChunkStore(directory, MAP_SIZE_BYTES, clock=clock)
    try:
        return put(store, data)
    finally:
        store.close()
