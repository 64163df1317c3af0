"""put_stream/get_stream through three in-process chunk services."""

from __future__ import annotations

import hashlib
import io
import random
import threading
import time

import lmdb
import pytest

from node.errors import ChecksumMismatch, NotFound, Unavailable
from sandctl.transfer import get_stream, put_stream

CHUNK_SIZE_BYTES = 64 << 10
DEADLINE_SECONDS = 10.0
FAST_ATTEMPT_TIMEOUT_SECONDS = 0.3


@pytest.fixture
def cluster(start_service):
    """Three chunk services; returns {node id: (service, store)}."""
    return {name: start_service(name) for name in ("n1", "n2", "n3")}


def addresses(cluster) -> dict[str, str]:
    return {name: service.bound_address for name, (service, _) in cluster.items()}


def payload(size: int) -> bytes:
    return random.Random(size).randbytes(size)  # distinct chunks, reproducible


class CountingReader(io.BytesIO):
    """Tracks how far reading ran ahead of completed chunks."""

    def __init__(self, data: bytes) -> None:
        super().__init__(data)
        self.read_bytes = 0
        self.completed_bytes = 0
        self.ahead_bytes_max = 0

    def read(self, size: int = -1) -> bytes:
        data = super().read(size)
        self.read_bytes += len(data)
        self.ahead_bytes_max = max(self.ahead_bytes_max, self.read_bytes - self.completed_bytes)
        return data

    def completed(self, size: int) -> None:
        self.completed_bytes += size


def put(cluster, data: bytes, context, **options) -> tuple[list, int]:
    options.setdefault("replication", 3)
    options.setdefault("deadline_seconds", DEADLINE_SECONDS)
    return put_stream(addresses(cluster), io.BytesIO(data), chunk_size_bytes=CHUNK_SIZE_BYTES,
                      context=context, **options)


def get(cluster, chunks: list, context, **options) -> bytes:
    out = io.BytesIO()
    options.setdefault("deadline_seconds", DEADLINE_SECONDS)
    written = get_stream(addresses(cluster), chunks, out, context=context, **options)
    assert written == len(out.getvalue())
    return out.getvalue()


@pytest.mark.parametrize("size", [0, 1, CHUNK_SIZE_BYTES, CHUNK_SIZE_BYTES + 1, 50 * CHUNK_SIZE_BYTES])
def test_round_trip(cluster, context, size):
    data = payload(size)
    reader = CountingReader(data)
    chunks, total = put_stream(addresses(cluster), reader, chunk_size_bytes=CHUNK_SIZE_BYTES, replication=3,
                               deadline_seconds=DEADLINE_SECONDS, chunks_in_flight_max=4,
                               progress=reader.completed, context=context)
    assert total == size == sum(chunk_size for _, chunk_size, _ in chunks)
    assert len(chunks) == -(-size // CHUNK_SIZE_BYTES)
    assert all(sorted(replicas) == ["n1", "n2", "n3"] for _, _, replicas in chunks)
    assert reader.ahead_bytes_max <= 4 * CHUNK_SIZE_BYTES
    assert reader.completed_bytes == size
    got = []
    result = get(cluster, chunks, context, progress=got.append)
    assert hashlib.sha256(result).digest() == hashlib.sha256(data).digest()
    assert sum(got) == size


def test_replicas_are_distinct_and_spread(cluster, context):
    chunks, _ = put(cluster, payload(12 * CHUNK_SIZE_BYTES), context, replication=2)
    assert all(len(set(replicas)) == 2 for _, _, replicas in chunks)
    per_node = {name: store.usage()[0] for name, (_, store) in cluster.items()}
    assert per_node == {"n1": 8, "n2": 8, "n3": 8}


def test_repeated_content_is_stored_once_per_node(cluster, context):
    data = b"\x07" * (5 * CHUNK_SIZE_BYTES)
    chunks, _ = put(cluster, data, context, replication=3)
    assert len(chunks) == 5 and len({chunk_id for chunk_id, _, _ in chunks}) == 1
    assert all(store.usage()[0] == 1 for _, store in cluster.values())
    assert get(cluster, chunks, context) == data


def test_replication_is_capped_by_node_count(cluster, context):
    chunks, _ = put(cluster, payload(1000), context, replication=5)
    assert sorted(chunks[0][2]) == ["n1", "n2", "n3"]


def test_put_replaces_a_dead_node(cluster, context):
    cluster["n1"][0].stop()
    data = payload(6 * CHUNK_SIZE_BYTES)
    chunks, _ = put(cluster, data, context, replication=2, attempt_timeout_seconds=FAST_ATTEMPT_TIMEOUT_SECONDS)
    assert all(sorted(replicas) == ["n2", "n3"] for _, _, replicas in chunks)
    assert get(cluster, chunks, context, attempt_timeout_seconds=FAST_ATTEMPT_TIMEOUT_SECONDS) == data


def test_put_without_enough_live_nodes_is_unavailable_at_the_deadline(cluster, context):
    cluster["n3"][0].stop()
    with pytest.raises(Unavailable, match="chunk 0 .* on 2 of 3 replicas .*n3: no reply within"):
        put(cluster, payload(100), context, replication=3, deadline_seconds=1.0,
            attempt_timeout_seconds=FAST_ATTEMPT_TIMEOUT_SECONDS)


def test_put_refused_by_every_node_fails_before_the_deadline(start_service, context):
    cluster = {"n1": start_service("n1", map_size_bytes=1 << 20)}
    started = time.monotonic()
    with pytest.raises(Unavailable, match="chunk .* on 0 of 1 replicas .*n1: chunk store is full"):
        put(cluster, payload(40 * CHUNK_SIZE_BYTES), context, replication=1)
    assert time.monotonic() - started < DEADLINE_SECONDS / 2


def test_put_gives_up_at_the_deadline(cluster, context):
    for service, _ in cluster.values():
        service.stop()
    with pytest.raises(Unavailable):
        put(cluster, payload(100), context, deadline_seconds=0.2)


def test_get_with_one_service_stopped(cluster, context):
    data = payload(10 * CHUNK_SIZE_BYTES + 7)
    chunks, _ = put(cluster, data, context, replication=2)
    cluster["n2"][0].stop()
    assert get(cluster, chunks, context, attempt_timeout_seconds=FAST_ATTEMPT_TIMEOUT_SECONDS) == data


def corrupt_every_chunk(directory) -> None:
    """Flip a byte of every stored value behind the store's back (the store must be closed)."""
    env = lmdb.open(str(directory / "chunks.lmdb"), max_dbs=2)
    try:
        with env.begin(write=True) as txn:
            database = env.open_db(b"chunks", txn=txn)
            for key, value in list(txn.cursor(db=database)):
                txn.put(key, bytes([value[0] ^ 1]) + value[1:], db=database)
    finally:
        env.close()


def test_get_with_one_replica_corrupted(cluster, context, start_service, tmp_path):
    data = payload(8 * CHUNK_SIZE_BYTES)
    chunks, _ = put(cluster, data, context, replication=3)
    service, store = cluster["n1"]
    service.stop()
    store.close()
    corrupt_every_chunk(tmp_path / "n1")
    cluster["n1"] = start_service("n1")
    assert get(cluster, chunks, context) == data
    assert cluster["n1"][1].counters()["checksum_mismatches"] >= 1


def test_get_names_the_chunk_when_every_replica_fails(cluster, context, start_service, tmp_path):
    data = payload(2 * CHUNK_SIZE_BYTES)
    chunks, _ = put(cluster, data, context, replication=1)
    first_id, _, [holder] = chunks[0]
    cluster[holder][1].delete(first_id)
    with pytest.raises(NotFound, match=first_id.hex()):
        get(cluster, chunks, context)
    [holder] = chunks[1][2]
    service, store = cluster[holder]
    service.stop()
    store.close()
    corrupt_every_chunk(tmp_path / holder)
    cluster[holder] = start_service(holder)
    with pytest.raises(ChecksumMismatch, match=chunks[1][0].hex()):
        get(cluster, chunks[1:], context)


def test_get_of_a_chunk_on_no_known_node_is_not_found(cluster, context):
    chunks, _ = put(cluster, payload(10), context, replication=1)
    with pytest.raises(NotFound, match="known node"):
        get(cluster, [[chunks[0][0], 10, ["n9"]]], context)


def test_get_keeps_at_most_chunks_in_flight_max(cluster, context):
    data = payload(20 * CHUNK_SIZE_BYTES)
    chunks, _ = put(cluster, data, context, replication=1)
    stores = [store for _, store in cluster.values()]

    class CheckingWriter(io.BytesIO):
        written_chunks = 0
        ahead_chunks_max = 0

        def write(self, data: bytes) -> int:
            served_chunks = sum(store.counters()["gets"] for store in stores)
            self.ahead_chunks_max = max(self.ahead_chunks_max, served_chunks - self.written_chunks)
            self.written_chunks += 1
            return super().write(data)

    writer = CheckingWriter()
    get_stream(addresses(cluster), chunks, writer, deadline_seconds=DEADLINE_SECONDS, chunks_in_flight_max=3,
               context=context)
    assert writer.getvalue() == data
    assert 1 <= writer.ahead_chunks_max <= 3


def test_get_writes_every_chunk_in_order_from_one_thread_and_reports_each_once_written(cluster, context):
    data = payload(12 * CHUNK_SIZE_BYTES)
    chunks, _ = put(cluster, data, context)

    class RecordingWriter(io.BytesIO):
        threads: set = set()

        def write(self, data: bytes) -> int:
            self.threads.add(threading.get_ident())
            return super().write(data)

    writer = RecordingWriter()
    reported = []
    written = get_stream(addresses(cluster), chunks, writer, deadline_seconds=DEADLINE_SECONDS, context=context,
                         progress=lambda size: reported.append((size, len(writer.getvalue()))))
    assert written == len(data) and writer.getvalue() == data
    assert len(writer.threads) == 1  # the helpers' writer thread: one writer, in file order
    # Each chunk is reported after it was written, never before.
    assert [size for size, _ in reported] == [CHUNK_SIZE_BYTES] * 12
    assert all(length >= sum(size for size, _ in reported[:index + 1]) for index, (_, length) in enumerate(reported))


def test_an_exception_from_the_writer_ends_the_get_with_it_and_nothing_more_is_written(cluster, context):
    chunks, _ = put(cluster, payload(20 * CHUNK_SIZE_BYTES), context)

    class Enough(Exception):
        pass

    class StoppingWriter:
        def __init__(self) -> None:
            self.writes = 0

        def write(self, data: bytes) -> int:
            self.writes += 1
            if self.writes == 3:
                raise Enough("three chunks are plenty")
            return len(data)

    writer = StoppingWriter()
    with pytest.raises(Enough, match="plenty"):
        get_stream(addresses(cluster), chunks, writer, deadline_seconds=DEADLINE_SECONDS, context=context,
                   chunks_in_flight_max=4)
    assert writer.writes == 3  # the chunks already handed to the writer after it were dropped
