"""What the machine under the data directory can do at most, so cluster figures have a scale.

Two limits, both measured in a scratch directory on the data directory's disk:
- LMDB synced commits per second: every Raft write needs at least one synced commit, so
  writes/s divided by this is the number of writes each fsync carried (group commit).
- The replication ceiling: the MB/s of writing the test file's bytes into `replication` fresh
  files at once, each fsynced. A put cannot be faster than its replicas' disks, so put MB/s
  divided by this says how much of the disk the whole chunk path uses.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
import time
from pathlib import Path

MB = 1_000_000  # MB/s uses decimal megabytes, like disk vendors and dd
COPY_BLOCK_BYTES = 1 << 20
LMDB_SCRATCH_MAP_BYTES = 64 << 20
LMDB_VALUE_BYTES = 100  # the size of a small Raft entry
LMDB_COMMITS_MIN = 3  # even a very short run measures a few commits, so the rate is not 0

assert LMDB_VALUE_BYTES * 1_000_000 < LMDB_SCRATCH_MAP_BYTES * 2  # a long run cannot fill the map


def lmdb_synced_commits_per_second(directory: Path, duration_seconds: float) -> dict:
    """Commit one small put per synced LMDB transaction for duration_seconds in a fresh env."""
    # Imported here, not at the top: this measurement of the node's storage engine is the only
    # place sandctl touches lmdb, and the client library must not load it (tests/test_boundaries.py).
    import lmdb

    assert duration_seconds > 0
    scratch = Path(tempfile.mkdtemp(prefix="lmdb-commits-", dir=directory))
    env = lmdb.open(str(scratch), map_size=LMDB_SCRATCH_MAP_BYTES, sync=True, metasync=True,
                    max_dbs=0, subdir=True, lock=True)
    value = os.urandom(LMDB_VALUE_BYTES)
    commits = 0
    try:
        started = time.monotonic()
        deadline = started + duration_seconds
        while commits < LMDB_COMMITS_MIN or time.monotonic() < deadline:
            # Overwrite a bounded key set so the map never grows past a few pages per key.
            with env.begin(write=True) as txn:
                txn.put(b"k%05d" % (commits % 10_000), value)
            commits += 1
        elapsed_seconds = time.monotonic() - started
    finally:
        env.close()
        shutil.rmtree(scratch, ignore_errors=True)
    assert commits >= LMDB_COMMITS_MIN
    return {
        "lmdb_synced_commits_per_second": round(commits / elapsed_seconds, 1),
        "lmdb_commits": commits,
        "elapsed_seconds": round(elapsed_seconds, 3),
    }


def write_random_file(path: Path, size_bytes: int) -> None:
    """The benchmark's test file: random bytes, so no chunk deduplicates against another."""
    assert size_bytes >= 0
    with open(path, "wb") as out:
        remaining = size_bytes
        while remaining > 0:
            block = os.urandom(min(COPY_BLOCK_BYTES, remaining))
            out.write(block)
            remaining -= len(block)
    assert path.stat().st_size == size_bytes


def _copy_with_fsync(source: Path, destination: Path, errors: list[BaseException]) -> None:
    try:
        with open(source, "rb") as reader, open(destination, "wb") as writer:
            while True:
                block = reader.read(COPY_BLOCK_BYTES)
                if not block:
                    break
                writer.write(block)
            writer.flush()
            os.fsync(writer.fileno())
    except BaseException as error:  # reported by the caller's thread, not lost in this one
        errors.append(error)


def replication_ceiling_mb_per_second(source: Path, directory: Path, replication: int, rounds: int = 1) -> dict:
    """Write source's bytes into `replication` fresh files at once (one thread each), fsync
    each, and report the best round's MB/s of the file (not of the sum of copies): the rate a
    put of this file could reach if the disk were the only limit."""
    assert replication >= 1
    assert rounds >= 1
    size_bytes = source.stat().st_size
    # Warm the page cache so the first round measures writing, not reading the source.
    with open(source, "rb") as reader:
        while reader.read(COPY_BLOCK_BYTES):
            pass
    best_seconds = None
    for round_number in range(rounds):
        scratch = Path(tempfile.mkdtemp(prefix=f"fsync-round{round_number}-", dir=directory))
        try:
            errors: list[BaseException] = []
            threads = [
                threading.Thread(target=_copy_with_fsync, args=(source, scratch / f"replica-{i}", errors))
                for i in range(replication)
            ]
            started = time.monotonic()
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            elapsed_seconds = time.monotonic() - started
            if errors:
                raise errors[0]
        finally:
            shutil.rmtree(scratch, ignore_errors=True)  # new files each round, never overwrites
        if best_seconds is None or elapsed_seconds < best_seconds:
            best_seconds = elapsed_seconds
    assert best_seconds is not None
    return {
        "replication_ceiling_mb_per_second": round(size_bytes / MB / max(best_seconds, 1e-9), 1),
        "replication": replication,
        "file_size_bytes": size_bytes,
        "elapsed_seconds": round(best_seconds, 3),
    }


def measure_machine(directory: Path, test_file: Path, replication: int, lmdb_duration_seconds: float) -> dict:
    """Both limits, measured in `directory` (which must be on the data directory's disk)."""
    directory.mkdir(parents=True, exist_ok=True)
    result = {"directory": str(directory)}
    result.update(lmdb_synced_commits_per_second(directory, lmdb_duration_seconds))
    ceiling = replication_ceiling_mb_per_second(test_file, directory, replication)
    result.update({k: v for k, v in ceiling.items() if k != "elapsed_seconds"})
    return result
