"""RaftLog.slice under a byte limit, and the entry-size sums it counts with (in C), against
the plain definition: the longest run from `low` within bytes_max, but at least one entry,
wherever the log splits between storage and the unstable tail."""

import random

import pytest

from node.raft.log import RaftLog
from node.raft.memory_storage import MemoryStorage
from node.raft.types import Entry, EntryKind, entries_data_bytes, entries_size_bytes, entries_within, prefix_within

SEED = 20261201
ROUNDS = 3000


def reference_within(entries: list[Entry], bytes_max: int, at_least_one: bool = True) -> int:
    total_bytes = 0
    for count, entry in enumerate(entries):
        total_bytes += entry.size_bytes()
        if total_bytes > bytes_max and (count > 0 or not at_least_one):
            return count
    return len(entries)


def random_entries(rng: random.Random, first: int, count: int) -> list[Entry]:
    return [Entry(term=1, index=first + offset, kind=EntryKind.NORMAL, data=b"d" * rng.choice([0, 1, 5, 40, 200, 1000]))
            for offset in range(count)]


def split_log(entries: list[Entry], stored: int) -> RaftLog:
    """A log holding `entries`: the first `stored` in storage, the rest in the unstable tail."""
    storage = MemoryStorage()
    storage.append(entries[:stored])
    log = RaftLog(storage)
    if stored < len(entries):
        log.append(entries[stored:])
    assert log.last_index() == len(entries)
    return log


def test_size_sums_match_the_entries_own():
    rng = random.Random(SEED)
    for _ in range(200):
        entries = random_entries(rng, 1, rng.randrange(20))
        assert entries_size_bytes(entries) == sum(entry.size_bytes() for entry in entries)
        assert entries_data_bytes(entries) == sum(len(entry.data) for entry in entries)
        assert entries_size_bytes(tuple(entries)) == entries_size_bytes(entries)


def test_entries_within_matches_the_definition():
    rng = random.Random(SEED)
    for _ in range(ROUNDS):
        entries = random_entries(rng, 1, rng.randrange(12))
        bytes_max = rng.choice([-50, 0, 1, 23, 24, 25, 48, 100, 500, 3000, 10**6])
        at_least_one = rng.random() < 0.5
        assert entries_within(entries, bytes_max, at_least_one) == reference_within(entries, bytes_max, at_least_one), \
            (entries, bytes_max, at_least_one)
        start = rng.randrange(len(entries) + 1)
        stop = rng.randrange(start, len(entries) + 1)
        assert prefix_within(entries, start, stop, bytes_max, at_least_one) == \
            start + reference_within(entries[start:stop], bytes_max, at_least_one), (entries, start, stop, bytes_max)


@pytest.mark.parametrize("seed", range(5))
def test_slice_with_a_byte_limit_matches_the_definition(seed):
    rng = random.Random(SEED + seed)
    for _ in range(ROUNDS // 5):
        count = rng.randrange(1, 30)
        entries = random_entries(rng, 1, count)
        stored = rng.randrange(count + 1)  # entries 1..stored are in storage, the rest unstable
        log = split_log(entries, stored)
        low = rng.randrange(1, count + 1)
        high = rng.randrange(low, count + 2)
        bytes_max = rng.choice([None, 0, 1, 24, 30, 100, 250, 1100, 5000, 10**6])
        got = log.slice(low, high, bytes_max)
        wanted = entries[low - 1:high - 1]
        if bytes_max is not None:
            wanted = wanted[:reference_within(wanted, bytes_max)]
        assert got == wanted, (stored, low, high, bytes_max)
        assert type(got) is list
        if got and stored < count:
            assert got is not log.unstable.entries  # a copy: the caller may keep it


def test_terms_and_last_index_wherever_the_log_splits():
    rng = random.Random(SEED)
    for _ in range(500):
        count = rng.randrange(1, 20)
        terms = sorted(rng.randrange(1, 5) for _ in range(count))
        entries = [Entry(term=term, index=position + 1) for position, term in enumerate(terms)]
        stored = rng.randrange(count + 1)
        log = split_log(entries, stored)
        assert [log.term(index) for index in range(1, count + 1)] == terms
        assert log.term(0) == 0 and log.term_or_zero(count + 1) == 0
