"""`sandctl bench --compare FILE`: ratios of each figure to an earlier run."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from node.errors import BadRequest
from sandctl.bench import bench_command
from sandctl.bench_compare import compare_reports, load_report, render_comparison

EARLIER = {"results": [
    {"workload": "write", "mode": "100 B", "outstanding": 1, "ops_per_second": 200.0, "latency_ms_p50": 4.0,
     "node_cpu_us_per_op": 1000.0, "fsyncs_per_op": 5.0, "leader_changes": 0},
    {"workload": "failover", "mode": "3 leader kills", "outstanding": 4, "kill_to_ack_ms": [200.0, 300.0, 250.0],
     "writes_lost": 0},
    {"workload": "read", "mode": "stale", "outstanding": 1, "ops_per_second": 900.0},
]}
NOW = {"results": [
    {"workload": "write", "mode": "100 B", "outstanding": 1, "ops_per_second": 400.0, "latency_ms_p50": 2.0,
     "node_cpu_us_per_op": 800.0, "fsyncs_per_op": 4.0, "leader_changes": 0},
    {"workload": "failover", "mode": "10 leader kills", "outstanding": 4, "kill_to_ack_ms": [50.0] * 10,
     "writes_lost": 0},
    {"workload": "write", "mode": "100 B", "outstanding": 64, "ops_per_second": 3000.0},  # not in the earlier run
]}


def test_every_common_figure_gets_its_ratio():
    records = compare_reports(EARLIER, NOW)
    by_figure = {(r["workload"], r["outstanding"], r["figure"]): r for r in records}
    assert by_figure[("write", 1, "ops/s")]["ratio"] == 2.0
    assert by_figure[("write", 1, "p50 ms")]["ratio"] == 0.5
    assert by_figure[("write", 1, "node CPU us/op")]["ratio"] == 0.8
    assert by_figure[("write", 1, "fsyncs/op")]["ratio"] == 0.8
    assert by_figure[("write", 1, "leader changes")]["ratio"] is None  # 0 before: no ratio
    assert by_figure[("failover", 4, "kill->ack ms median")]["earlier"] == 250.0
    assert by_figure[("failover", 4, "kill->ack ms median")]["ratio"] == 0.2
    assert not [r for r in records if r["outstanding"] == 64 or r["workload"] == "read"]
    table = render_comparison(records, "old.json")
    assert "old.json" in table and "kill->ack ms median" in table
    assert "no workload step in common" in render_comparison([], "old.json")


def test_a_file_that_is_no_bench_run_is_refused(tmp_path):
    (tmp_path / "bad.json").write_text("{not json")
    (tmp_path / "other.json").write_text(json.dumps({"hello": 1}))
    for name in ("bad.json", "other.json", "missing.json"):
        with pytest.raises(BadRequest):
            load_report(tmp_path / name)
    (tmp_path / "good.json").write_text(json.dumps(EARLIER))
    assert load_report(tmp_path / "good.json") == EARLIER


def test_the_command_refuses_a_bad_compare_file_before_running(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "bad.json").write_text("[]")
    result = CliRunner().invoke(bench_command, ["--local", "--compare", str(tmp_path / "bad.json")])
    assert result.exit_code != 0
    assert result.output.strip().splitlines()[-1].startswith("Error:")
    assert "not a saved bench run" in result.output
    assert not (tmp_path / "bench").exists()
