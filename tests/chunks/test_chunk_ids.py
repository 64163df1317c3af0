"""Chunk ids: new chunks are named by BLAKE3, chunks named by BLAKE2b before stay valid
everywhere a chunk is checked (store, scrub, a get's verification at the client)."""

from __future__ import annotations

import hashlib
import io
import random

import pytest

from node.chunk_ids import CHUNK_ID_BYTES, chunk_id_of, chunk_matches, legacy_chunk_id_of
from node.chunks.store import ChunkStore
from node.errors import ChecksumMismatch
from sandctl.transfer import get_stream, put_stream

# BLAKE3's published test vector for the empty input (github.com/BLAKE3-team/BLAKE3, test_vectors).
BLAKE3_OF_EMPTY_HEX = "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262"
MAP_SIZE_BYTES = 64 << 20
DEADLINE_SECONDS = 10.0


def payload(size: int, seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(size)


def test_a_new_chunk_is_named_by_its_blake3_digest():
    assert chunk_id_of(b"").hex() == BLAKE3_OF_EMPTY_HEX
    data = payload(100_000)
    assert len(chunk_id_of(data)) == CHUNK_ID_BYTES
    assert chunk_id_of(data) != hashlib.blake2b(data, digest_size=CHUNK_ID_BYTES).digest()
    assert chunk_id_of(memoryview(data)) == chunk_id_of(data)


def test_either_digest_names_the_content_and_nothing_else():
    data = payload(10_000)
    assert legacy_chunk_id_of(data) == hashlib.blake2b(data, digest_size=CHUNK_ID_BYTES).digest()
    assert chunk_matches(chunk_id_of(data), data)
    assert chunk_matches(legacy_chunk_id_of(data), data)
    other = data[:-1] + bytes([data[-1] ^ 1])
    assert not chunk_matches(chunk_id_of(data), other)
    assert not chunk_matches(legacy_chunk_id_of(data), other)


@pytest.fixture
def store(tmp_path):
    store = ChunkStore(tmp_path, MAP_SIZE_BYTES)
    yield store
    store.close()


def test_the_store_keeps_a_chunk_named_by_blake2b(store):
    data = payload(50_000, seed=1)
    legacy_id = legacy_chunk_id_of(data)
    assert store.put(legacy_id, data) is True
    assert store.get(legacy_id, verify=True) == data
    assert store.scrub(legacy_id) == len(data)
    assert store.has(legacy_id)  # the scrub did not take it for corrupt
    assert store.counters()["checksum_mismatches"] == 0
    # A new put of the same content gets its BLAKE3 id: stored again, beside the old one.
    assert store.put(chunk_id_of(data), data) is True
    assert store.usage() == (2, 2 * len(data))


def test_the_store_refuses_content_under_another_chunks_id(store):
    data = payload(1000, seed=2)
    for chunk_id in (chunk_id_of(data), legacy_chunk_id_of(data)):
        with pytest.raises(ChecksumMismatch):
            store.put(chunk_id, data + b"x")
    assert store.usage() == (0, 0)


def test_put_names_chunks_by_blake3_and_get_reads_a_file_of_blake2b_chunks(start_service, context):
    services = {name: start_service(name) for name in ("n1", "n2")}
    addresses = {name: service.bound_address for name, (service, _) in services.items()}
    data = payload(200_000, seed=3)
    chunk_size_bytes = 64 << 10
    chunks, size = put_stream(addresses, io.BytesIO(data), chunk_size_bytes=chunk_size_bytes, replication=2,
                              deadline_seconds=DEADLINE_SECONDS, context=context)
    assert size == len(data)
    pieces = [data[start:start + chunk_size_bytes] for start in range(0, len(data), chunk_size_bytes)]
    assert [chunk_id for chunk_id, _, _ in chunks] == [chunk_id_of(piece) for piece in pieces]

    # A file written before BLAKE3: its chunks are stored under their BLAKE2b ids.
    legacy = []
    for piece in pieces:
        for _, store in services.values():
            store.put(legacy_chunk_id_of(piece), piece)
        legacy.append([legacy_chunk_id_of(piece), len(piece), sorted(services)])
    out = io.BytesIO()
    assert get_stream(addresses, legacy, out, deadline_seconds=DEADLINE_SECONDS, context=context) == len(data)
    assert out.getvalue() == data
    assert all(store.counters()["checksum_mismatches"] == 0 for _, store in services.values())
