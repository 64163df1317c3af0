"""Ratios against the machine, the table, the JSON file and the click command's surface."""

from __future__ import annotations

import json

from click.testing import CliRunner

from sandctl.bench import WORKLOADS, bench_command, writes_lost
from sandctl.bench_report import add_machine_ratios, render_table, save_report

MACHINE = {"directory": "/d", "lmdb_synced_commits_per_second": 500.0, "replication_ceiling_mb_per_second": 200.0,
           "replication": 3, "file_size_bytes": 1 << 20}


def _rows():
    return [
        {"workload": "write", "mode": "100 B", "outstanding": 16, "ops_per_second": 2000.0, "errors": 1,
         "latency_ms_p50": 1.5, "latency_ms_p99": 9.0, "latency_ms_p999": 20.0, "client_cpu_percent": 40.0,
         "host_steal_percent": 12.5},
        {"workload": "read", "mode": "stale", "outstanding": 1, "ops_per_second": 900.0, "errors": 0,
         "latency_ms_p50": 1.0, "latency_ms_p99": 2.0, "latency_ms_p999": 3.0, "client_cpu_percent": 30.0},
        {"workload": "put", "mode": "1 MiB", "outstanding": 1, "throughput_mb_per_second": 50.0,
         "client_peak_memory_mib": 80.0, "errors": 0, "client_cpu_percent": 60.0},
        {"workload": "get", "mode": "", "outstanding": 1, "unavailable": "sandctl.transfer is not installed"},
        {"workload": "failover", "mode": "3 leader kills", "outstanding": 4, "ops_per_second": 100.0,
         "kill_to_ack_ms": [300.5, 280.0, 410.0], "writes_lost": 0, "writes_acknowledged": 900, "errors": 2,
         "client_cpu_percent": 20.0},
    ]


def test_ratios_against_the_machine():
    rows = _rows()
    add_machine_ratios(rows, MACHINE)
    assert rows[0]["writes_per_fsync"] == 4.0
    assert "writes_per_fsync" not in rows[1]  # reads need no fsync
    assert rows[2]["fraction_of_replication_ceiling"] == 0.25
    assert "fraction_of_replication_ceiling" not in rows[3]
    assert rows[4]["writes_per_fsync"] == 0.2


def test_table_shows_every_figure_beside_its_machine_ratio():
    rows = _rows()
    add_machine_ratios(rows, MACHINE)
    table = render_table({"machine": MACHINE, "results": rows, "results_file": "/d/bench/x.json"})
    assert "LMDB synced commits/s" in table and "500" in table
    assert "2000 ops/s" in table and "4 writes/fsync" in table
    assert "50 MB/s, peak 80 MiB" in table and "0.25 of ceiling" in table
    assert "unavailable: sandctl.transfer is not installed" in table
    assert "kill->ack ms: 300.5, 280, 410; lost 0 of 900" in table
    assert "/d/bench/x.json" in table
    assert "host steal %" in table and "12.5" in table  # the host's share, beside the client's CPU


def test_report_is_saved_as_json(tmp_path):
    report = {"machine": MACHINE, "results": _rows()}
    path = save_report(report, tmp_path / "bench", "20250101T000000.000Z")
    assert path == tmp_path / "bench" / "20250101T000000.000Z.json"
    assert json.loads(path.read_text()) == report
    assert [p.name for p in (tmp_path / "bench").iterdir()] == [path.name]  # no temp file left


def test_writes_lost_adds_up_failover_rows():
    assert writes_lost({"results": _rows()}) == 0
    assert writes_lost({"results": [{"workload": "failover", "writes_lost": 2}, {"workload": "write"}]}) == 2


def test_command_lists_workloads_and_options():
    result = CliRunner().invoke(bench_command, ["--help"])
    assert result.exit_code == 0
    for name in WORKLOADS:
        assert name in result.output
    for option in ("--duration", "--concurrency", "--json", "--keep", "--local", "--config", "--data-dir"):
        assert option in result.output


def test_unknown_workload_is_a_usage_error():
    result = CliRunner().invoke(bench_command, ["nonsense"])
    assert result.exit_code == 2
