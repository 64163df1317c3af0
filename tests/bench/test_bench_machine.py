"""Machine limits measured in a scratch directory; every scratch file is removed afterwards."""

from __future__ import annotations

from sandctl.bench_machine import (
    LMDB_COMMITS_MIN,
    lmdb_synced_commits_per_second,
    measure_machine,
    replication_ceiling_mb_per_second,
    write_random_file,
)


def test_lmdb_commits_are_counted_and_scratch_is_removed(tmp_path):
    result = lmdb_synced_commits_per_second(tmp_path, duration_seconds=0.05)
    assert result["lmdb_commits"] >= LMDB_COMMITS_MIN
    assert result["lmdb_synced_commits_per_second"] > 0
    assert list(tmp_path.iterdir()) == []


def test_random_file_has_the_size_and_no_repeated_blocks(tmp_path):
    path = tmp_path / "file"
    write_random_file(path, (1 << 20) + 17)
    data = path.read_bytes()
    assert len(data) == (1 << 20) + 17
    half = 1 << 19
    assert data[:half] != data[half:2 * half]  # chunks must not deduplicate against each other


def test_replication_ceiling_writes_fresh_copies_then_removes_them(tmp_path):
    source = tmp_path / "source"
    write_random_file(source, 300_000)
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    result = replication_ceiling_mb_per_second(source, scratch, replication=3, rounds=2)
    assert result["replication"] == 3
    assert result["file_size_bytes"] == 300_000
    assert result["replication_ceiling_mb_per_second"] > 0
    assert list(scratch.iterdir()) == []


def test_measure_machine_reports_both_limits(tmp_path):
    source = tmp_path / "source"
    write_random_file(source, 100_000)
    result = measure_machine(tmp_path / "machine", source, replication=2, lmdb_duration_seconds=0.05)
    assert result["lmdb_synced_commits_per_second"] > 0
    assert result["replication_ceiling_mb_per_second"] > 0
    assert result["replication"] == 2
    assert result["directory"] == str(tmp_path / "machine")
