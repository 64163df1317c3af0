"""ChunkService over real loopback sockets: ops, framing, validation, garbage, concurrency,
reads left to the client to verify, periodic GC."""

from __future__ import annotations

import threading

import lmdb
import msgpack
import pytest

from node import protocol
from node.chunks.service import ChunkService
from node.chunks.store import ChunkStore, chunk_id_of


def test_put_get_has_stats(start_service, make_client):
    service, store = start_service()
    client = make_client(service.bound_address)
    data = b"chunk body" * 1000
    chunk_id = chunk_id_of(data)
    assert client.call("chunk_put", {"id": chunk_id, "data": data})["result"] == {"stored": True}
    assert client.call("chunk_put", {"id": chunk_id, "data": data})["result"] == {"stored": False}
    reply = client.call("chunk_get", {"id": chunk_id})
    assert (reply["result"], reply["content"]) == ({"size": len(data)}, data)
    assert client.call("chunk_verify", {"id": chunk_id})["result"] == {"size": len(data)}
    missing = chunk_id_of(b"missing")
    assert client.call("chunk_has", {"ids": [chunk_id, missing]})["result"] == [True, False]
    stats = client.call("chunk_stats", {})["result"]
    assert (stats["chunks"], stats["bytes"]) == (1, len(data))
    assert stats["counters"]["puts"] == 1 and stats["counters"]["dedup_puts"] == 1
    reply = client.call("chunk_get", {"id": missing})
    assert (reply["ok"], reply["error"]["code"]) == (False, "NOT_FOUND")


def test_put_with_a_wrong_hash_is_refused(start_service, make_client):
    service, store = start_service()
    client = make_client(service.bound_address)
    reply = client.call("chunk_put", {"id": chunk_id_of(b"a"), "data": b"b"})
    assert reply["error"]["code"] == "CHECKSUM"
    assert store.usage()[0] == 0


@pytest.mark.parametrize("op,args", [
    ("chunk_nope", {}),
    ("write_file", {"path": "/a", "size": 1, "client": "c", "seq": 1}),  # a client-port op
    ("chunk_get", {}),
    ("chunk_get", {"id": b"short"}),
    ("chunk_get", {"id": "x" * 32}),
    ("chunk_get", {"id": b"x" * 32, "extra": 1}),
    ("chunk_verify", {"id": b"short"}),
    ("chunk_get", {"id": b"x" * 32, "verify": 1}),
    ("chunk_has", {"ids": [b"x" * 32, 7]}),
    ("chunk_has", {"ids": b"x" * 32}),
    ("chunk_gc", {"grace_seconds": -1.0}),
    ("chunk_gc", {"grace_seconds": float("nan")}),
    ("chunk_gc", {"dry_run": 1}),
])
def test_invalid_requests_get_bad_request(start_service, make_client, op, args):
    service, _ = start_service()
    client = make_client(service.bound_address)
    reply = client.call(op, args)
    assert (reply["ok"], reply["error"]["code"]) == (False, "BAD_REQUEST")
    assert client.call("chunk_stats", {})["ok"]


def test_garbage_frames_get_bad_request_and_service_keeps_serving(start_service, make_client, frame_bytes_max):
    service, _ = start_service()
    client = make_client(service.bound_address)
    frames = [
        [b"\xc1\xff garbage"],
        [b""],
        [msgpack.packb([1, 2, 3])],
        [msgpack.packb({"v": 2, "id": 5, "op": "chunk_stats", "args": {}})],
        [msgpack.packb({"v": 1, "id": 6, "op": "chunk_stats", "args": {}, "more": 1})],
        [b"two", b"frames"],
        [b"three", b"frames", b"!"],
        [b"\x00" * (frame_bytes_max + 1)],  # just over the limit: still answered
    ]
    for parts in frames:
        client.socket.send_multipart(parts)
        reply = client.receive()
        assert (reply["ok"], reply["error"]["code"]) == (False, "BAD_REQUEST")
    assert client.call("chunk_stats", {})["ok"]
    assert service.counters()["bad_requests"] == len(frames)


def request_frame(request_id: int, op: str, args: dict) -> bytes:
    return protocol.request(request_id, op, args)


@pytest.mark.parametrize("frames", [
    [request_frame(1, "chunk_put", {"id": chunk_id_of(b"a")})],  # no content frame
    [request_frame(1, "chunk_put", {"id": chunk_id_of(b"a"), "data": b"a"})],  # content inside the map
    [request_frame(1, "chunk_stats", {}), b"content"],  # content for an op that takes none
    [request_frame(1, "chunk_get", {"id": chunk_id_of(b"a")}), b"a"],
], ids=["put-without-content", "put-with-content-in-the-map", "stats-with-content", "get-with-content"])
def test_content_frames_must_match_the_op(start_service, make_client, frames):
    service, store = start_service()
    client = make_client(service.bound_address)
    client.send_frames(frames)
    reply = client.receive()
    assert (reply["id"], reply["ok"], reply["error"]["code"]) == (1, False, "BAD_REQUEST")
    assert "content" not in reply
    assert store.usage()[0] == 0
    assert client.call("chunk_stats", {})["ok"]


def test_content_over_the_frame_limit_is_refused(start_service, make_client, frame_bytes_max):
    service, store = start_service()
    client = make_client(service.bound_address)
    data = b"\x01" * (frame_bytes_max + 1)
    reply = client.call("chunk_put", {"id": chunk_id_of(data), "data": data})
    assert (reply["ok"], reply["error"]["code"]) == (False, "BAD_REQUEST")
    assert store.usage()[0] == 0


def test_unverified_get_serves_a_corrupt_copy_and_chunk_verify_removes_it(start_service, make_client, tmp_path):
    data = b"will rot" * 1000
    chunk_id = chunk_id_of(data)
    service, store = start_service("n1")
    make_client(service.bound_address).call("chunk_put", {"id": chunk_id, "data": data})
    service.stop()
    store.close()
    environment = lmdb.open(str(tmp_path / "n1" / "chunks.lmdb"), max_dbs=2)
    try:
        with environment.begin(write=True) as txn:
            txn.put(chunk_id, b"X" + data[1:], db=environment.open_db(b"chunks", txn=txn))
    finally:
        environment.close()

    service, store = start_service("n1")
    client = make_client(service.bound_address)
    unverified = client.call("chunk_get", {"id": chunk_id, "verify": False})
    assert unverified["content"] == b"X" + data[1:]  # the reader's own check must catch this
    assert store.counters()["checksum_mismatches"] == 0
    reply = client.call("chunk_verify", {"id": chunk_id})
    assert (reply["ok"], reply["error"]["code"]) == (False, "CHECKSUM")
    assert store.counters()["checksum_mismatches"] == 1
    assert not store.has(chunk_id)  # removed, so a good replica can be written here again
    assert client.call("chunk_verify", {"id": chunk_id})["error"]["code"] == "NOT_FOUND"


def test_verified_get_refuses_a_corrupt_copy(start_service, make_client, tmp_path):
    data = b"will rot" * 1000
    chunk_id = chunk_id_of(data)
    service, store = start_service("n1")
    make_client(service.bound_address).call("chunk_put", {"id": chunk_id, "data": data})
    service.stop()
    store.close()
    environment = lmdb.open(str(tmp_path / "n1" / "chunks.lmdb"), max_dbs=2)
    try:
        with environment.begin(write=True) as txn:
            txn.put(chunk_id, data[:-1] + b"X", db=environment.open_db(b"chunks", txn=txn))
    finally:
        environment.close()
    service, store = start_service("n1")
    reply = make_client(service.bound_address).call("chunk_get", {"id": chunk_id})  # verify defaults to true
    assert (reply["ok"], reply["error"]["code"]) == (False, "CHECKSUM")
    assert "content" not in reply
    assert store.counters()["checksum_mismatches"] == 1


def test_concurrent_clients(start_service, make_client):
    service, store = start_service(worker_threads=4)
    client_count, chunks_per_client = 6, 10
    clients = [make_client(service.bound_address) for _ in range(client_count)]
    failures: list[str] = []

    def run(number: int) -> None:
        client = clients[number]
        try:
            ids = []
            for position in range(chunks_per_client):
                data = (b"%d/%d " % (number, position)) * 20000
                ids.append(chunk_id_of(data))
                client.send("chunk_put", {"id": ids[-1], "data": data})  # pipelined
            replies = [client.receive() for _ in ids]
            assert all(reply["ok"] for reply in replies), replies
            for chunk_id in ids:
                assert chunk_id_of(client.call("chunk_get", {"id": chunk_id})["content"]) == chunk_id
        except AssertionError as error:
            failures.append(f"client {number}: {error}")

    threads = [threading.Thread(target=run, args=(number,)) for number in range(client_count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []
    assert store.usage()[0] == client_count * chunks_per_client


def test_gc_op_uses_the_referenced_set(start_service, make_client, wait_until):
    kept = b"kept"
    service, store = start_service(referenced_chunk_ids=lambda: {chunk_id_of(kept)}, gc_grace_seconds=0.0)
    client = make_client(service.bound_address)
    for data in (kept, b"orphan"):
        client.call("chunk_put", {"id": chunk_id_of(data), "data": data})
    dry = client.call("chunk_gc", {"dry_run": True, "grace_seconds": 0.0})["result"]
    assert dry["unreferenced"] == 1 and store.usage()[0] == 2
    # Written a moment ago with no grace: deleted once the clock has moved on at all.
    wait_until(lambda: client.call("chunk_gc", {})["result"]["deleted"] == 1, "the orphan to be collected")
    assert store.usage()[0] == 1 and store.has(chunk_id_of(kept))


def test_periodic_gc_runs(start_service, make_client, wait_until):
    service, store = start_service(referenced_chunk_ids=set, gc_grace_seconds=0.0, gc_interval_seconds=0.02)
    client = make_client(service.bound_address)
    client.call("chunk_put", {"id": chunk_id_of(b"orphan"), "data": b"orphan"})
    wait_until(lambda: store.usage()[0] == 0, "periodic gc to delete the orphan")
    assert store.counters()["gc_deleted"] == 1


def test_failing_reference_source_does_not_kill_the_service(start_service, make_client):
    def broken() -> set[bytes]:
        raise RuntimeError("metadata not ready")

    service, store = start_service(referenced_chunk_ids=broken, gc_interval_seconds=0.01)
    client = make_client(service.bound_address)
    assert client.call("chunk_gc", {})["error"]["code"] == "INTERNAL"
    assert client.call("chunk_put", {"id": chunk_id_of(b"x"), "data": b"x"})["ok"]


def test_stop_without_start_closes_the_sockets(context, tmp_path):
    store = ChunkStore(tmp_path, 1 << 20)
    service = ChunkService(context, "127.0.0.1:*", store, referenced_chunk_ids=set, gc_grace_seconds=1.0,
                           frame_bytes_max=1 << 20)
    service.stop()  # the context fixture's term() hangs if a socket stayed open
    store.close()
