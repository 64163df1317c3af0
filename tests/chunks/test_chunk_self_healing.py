"""Chunk store and service pieces of self-healing data: inventory paging, scrub (finds and
removes a corrupt copy, remembers it for the leader, honours its rate), repair copies pulled
from another node and verified here, and deletes refused while the metadata records a replica."""

from __future__ import annotations

import os
import time

import pytest

from node.chunks.store import ChunkStore, chunk_id_of

MAP_SIZE_BYTES = 64 << 20


def corrupt_on_disk(store: ChunkStore, chunk_id: bytes) -> None:
    """Flip the stored bytes in place, as a failing disk would (fault injection)."""
    with store._env.begin(write=True) as txn:
        data = bytearray(txn.get(chunk_id, db=store._chunks))
        data[0] ^= 0xFF
        txn.put(chunk_id, bytes(data), db=store._chunks)


def put_chunks(store: ChunkStore, count: int, size: int = 1000) -> list[bytes]:
    ids = []
    for _ in range(count):
        data = os.urandom(size)
        ids.append(chunk_id_of(data))
        store.put(ids[-1], data)
    return sorted(ids)


def test_ids_after_pages_through_the_store_in_order(tmp_path):
    store = ChunkStore(tmp_path, MAP_SIZE_BYTES)
    ids = put_chunks(store, 7)
    pages, after, more = [], None, True
    while more:
        page, more = store.ids_after(after, 3)
        pages.append(page)
        after = page[-1] if page else None
    assert [len(page) for page in pages] == [3, 3, 1]
    assert [chunk_id for page in pages for chunk_id in page] == ids
    assert store.ids_after(ids[-1], 3) == ([], False)
    store.close()


def test_scrub_removes_a_corrupt_copy_and_remembers_it(tmp_path):
    store = ChunkStore(tmp_path, MAP_SIZE_BYTES)
    good, bad = put_chunks(store, 2)
    corrupt_on_disk(store, bad)
    removals_before = store.removals()
    assert store.scrub(good) == 1000 and store.has(good)
    assert store.scrub(bad) == 1000 and not store.has(bad)
    assert store.scrub(bad) == 0  # gone: nothing to read
    assert [chunk_id for _, chunk_id in store.corrupt_events()] == [bad]
    assert store.removals() == removals_before + 1
    assert store.counters()["scrubbed"] == 2 and store.counters()["checksum_mismatches"] == 1
    store.close()


def test_a_corrupt_copy_found_by_a_read_is_remembered_too(tmp_path):
    store = ChunkStore(tmp_path, MAP_SIZE_BYTES)
    (chunk_id,) = put_chunks(store, 1)
    corrupt_on_disk(store, chunk_id)
    with pytest.raises(Exception, match="corrupt"):
        store.get(chunk_id)
    assert [chunk_id_found for _, chunk_id_found in store.corrupt_events()] == [chunk_id]
    store.close()


def test_inventory_over_the_wire_pages_and_validates(start_service, make_client):
    service, store = start_service()
    ids = put_chunks(store, 5)
    client = make_client(service.bound_address)
    first = client.call("chunk_inventory", {"limit": 2})["result"]
    assert first == {"ids": ids[:2], "more": True}
    rest = client.call("chunk_inventory", {"after": ids[1]})["result"]
    assert rest == {"ids": ids[2:], "more": False}
    assert client.call("chunk_inventory", {"limit": 0})["error"]["code"] == "BAD_REQUEST"
    assert client.call("chunk_inventory", {"after": b"short"})["error"]["code"] == "BAD_REQUEST"
    stats = client.call("chunk_stats", {})["result"]
    assert stats["incarnation"] == service.incarnation and stats["removals"] == 0 and stats["corrupt_events"] == []


def test_fetch_from_copies_a_verified_chunk_from_a_peer(start_service, make_client):
    source, source_store = start_service("n1")
    addresses = {"n1": source.bound_address}
    target, target_store = start_service("n2", peer_chunk_address=addresses.get)
    (chunk_id,) = put_chunks(source_store, 1, size=50_000)
    client = make_client(target.bound_address)
    reply = client.call("chunk_fetch_from", {"id": chunk_id, "source": "n1"})
    assert reply["result"] == {"stored": True, "size": 50_000}
    assert target_store.get(chunk_id) == source_store.get(chunk_id)
    missing = chunk_id_of(b"nobody has this")
    assert client.call("chunk_fetch_from", {"id": missing, "source": "n1"})["error"]["code"] == "NOT_FOUND"
    assert client.call("chunk_fetch_from", {"id": chunk_id, "source": "n9"})["error"]["code"] == "BAD_REQUEST"
    assert client.call("chunk_fetch_from", {"id": chunk_id, "source": 7})["error"]["code"] == "BAD_REQUEST"


def test_fetch_from_a_corrupt_source_stores_nothing(start_service, make_client):
    source, source_store = start_service("n1")
    target, target_store = start_service("n2", peer_chunk_address={"n1": source.bound_address}.get)
    (chunk_id,) = put_chunks(source_store, 1)
    corrupt_on_disk(source_store, chunk_id)
    reply = make_client(target.bound_address).call("chunk_fetch_from", {"id": chunk_id, "source": "n1"})
    assert reply["error"]["code"] == "CHECKSUM"
    assert not target_store.has(chunk_id)


def test_fetch_from_a_silent_source_fails_instead_of_hanging(start_service, make_client, monkeypatch):
    from node.chunks import service as service_module
    monkeypatch.setattr(service_module, "FETCH_TIMEOUT_SECONDS", 0.2)
    import socket
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen()
    try:
        target, target_store = start_service("n2", peer_chunk_address=lambda node: "127.0.0.1:%d" % silent.getsockname()[1])
        reply = make_client(target.bound_address).call("chunk_fetch_from", {"id": b"x" * 32, "source": "n1"})
        assert reply["error"]["code"] == "UNAVAILABLE"
    finally:
        silent.close()


def test_delete_is_refused_while_the_metadata_records_a_replica_here(start_service, make_client):
    recorded: set[bytes] = set()
    service, store = start_service(replica_recorded_here=recorded.__contains__)
    chunk_a, chunk_b = put_chunks(store, 2)
    recorded.add(chunk_a)
    client = make_client(service.bound_address)
    assert client.call("chunk_delete", {"id": chunk_a})["error"]["code"] == "REFUSED"
    assert store.has(chunk_a)
    assert client.call("chunk_delete", {"id": chunk_b})["result"] == {"deleted": True}
    assert client.call("chunk_delete", {"id": chunk_b})["result"] == {"deleted": False}
    assert not store.has(chunk_b)


def test_the_scrub_thread_finds_corruption_within_its_rate(start_service, wait_until):
    rate_bytes_per_second = 200_000
    service, store = start_service(scrub_bytes_per_second=rate_bytes_per_second)
    ids = put_chunks(store, 20, size=10_000)
    corrupt_on_disk(store, ids[-1])  # the last in id order: found after reading all the others
    started = time.monotonic()
    wait_until(lambda: not store.has(ids[-1]), "the scrub to remove the corrupt copy")
    elapsed = time.monotonic() - started
    scrubbed_bytes = store.counters()["scrubbed_bytes"]
    # An upper bound on the rate, with a chunk of slack for the one read before the first pause.
    assert scrubbed_bytes <= rate_bytes_per_second * elapsed + 10_000, (scrubbed_bytes, elapsed)
    assert all(store.has(chunk_id) for chunk_id in ids[:-1])
    assert [chunk_id for _, chunk_id in store.corrupt_events()] == [ids[-1]]
