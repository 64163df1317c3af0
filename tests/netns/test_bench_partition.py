"""The partition workload's shell: refused without root, and its report row and table line."""

from __future__ import annotations

from types import SimpleNamespace

from sandctl import bench_partition
from sandctl.bench_report import render_table

NEEDS_ROOT = False  # the non-root path is what these check


def test_without_root_the_workload_is_unavailable_not_an_error(monkeypatch):
    monkeypatch.setattr(bench_partition, "is_root", lambda: False)
    rows = bench_partition.partition_workload(SimpleNamespace(duration_seconds=8.0))
    assert rows == [{"workload": "partition", "mode": "", "outstanding": bench_partition.WRITER_THREADS,
                     "unavailable": "needs root (it builds network namespaces)"}]
    assert "unavailable: needs root" in render_table({"results": rows})


def test_the_table_shows_every_repetition():
    row = {"workload": "partition", "mode": "leader isolated 8 s x2", "outstanding": 4,
           "cut_to_ack_ms": [250.0, 300.5], "cut_to_leader_ms": [200.0, 250.0], "heal_to_recovered_ms": [700.0, 900.0],
           "longest_ack_gap_ms": [310.0, 420.0], "longest_status_silence_after_heal_ms": [450.0, 600.0],
           "writes_acknowledged": 100, "writes_lost": 0}
    table = render_table({"results": [row]})
    assert "cut->ack ms: 250, 300.5 (cut->new leader ms: 200, 250)" in table and "longest gap ms: 310, 420" in table
    assert "lost 0 of 100" in table
