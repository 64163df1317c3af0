"""The get workload's comparing sink: equal content in chunks of any size matches; one changed
byte, a missing tail or extra bytes do not."""

from __future__ import annotations

import io
import os

from sandctl.bench_transfer import _ComparingSink

ORIGINAL = os.urandom(10_000)


def feed(pieces: list[bytes | memoryview]) -> bool:
    sink = _ComparingSink(io.BytesIO(ORIGINAL))
    for piece in pieces:
        assert sink.write(piece) == len(piece)
    return sink.finish()


def chunks(data: bytes, size: int) -> list[memoryview]:
    view = memoryview(data)
    return [view[start:start + size] for start in range(0, len(data), size)]


def test_equal_content_matches_in_chunks_with_a_short_last_one():
    assert feed(chunks(ORIGINAL, 4096))  # 4096, 4096, 1808
    assert feed([ORIGINAL])


def test_one_changed_byte_in_any_chunk_is_a_mismatch():
    for position in (0, 4095, 4096, len(ORIGINAL) - 1):
        altered = bytearray(ORIGINAL)
        altered[position] ^= 1
        assert not feed(chunks(bytes(altered), 4096)), position


def test_a_missing_tail_or_extra_bytes_are_a_mismatch():
    assert not feed(chunks(ORIGINAL[:-1], 4096))
    assert not feed(chunks(ORIGINAL + b"x", 4096))
