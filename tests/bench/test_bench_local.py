"""Every workload, a fraction of a second each, against a real local 3-node cluster.

The failover workload's lost-write count must come from real reads: an acknowledged write
is deleted behind the benchmark's back before the read-back, and it must be counted.
"""

from __future__ import annotations

import json

import pytest

from node.config import ClusterConfig
from sandctl import cluster
from sandctl.bench import WORKLOADS, run_bench

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

FILE_SIZE_BYTES = 256 << 10
TEMPLATE = ClusterConfig(nodes=(), chunk_size_bytes=64 << 10, inline_bytes_max=16 << 10, request_timeout_seconds=10.0)


@pytest.fixture
def isolated(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("SANDSTORE_CONFIG", raising=False)
    monkeypatch.delenv("SANDSTORE_DATA_DIR", raising=False)
    return tmp_path


def test_every_workload_reports_its_shape_and_counts_a_dropped_write(isolated):
    dropped: list[str] = []

    def drop_one_acknowledged_write(context, acknowledged: dict[str, bytes]) -> None:
        path = sorted(acknowledged)[len(acknowledged) // 2]
        context.client.rm(path)
        dropped.append(path)

    data_dir = isolated / "data"
    report = run_bench(config=None, data_dir=data_dir, workloads=WORKLOADS, duration_seconds=0.3,
                       concurrency_levels=(1, 4), local=True, file_size_bytes=FILE_SIZE_BYTES,
                       local_template=TEMPLATE, before_verify=drop_one_acknowledged_write, failover_kills=3)

    # Every process the benchmark started is gone, and only the results file is left.
    assert len(report["cluster"]["pids_started"]) == 3 + 3  # three nodes, three restarts
    for pid in report["cluster"]["pids_started"]:
        assert not any(cluster.is_node_process(pid, node_id) for node_id in ("n1", "n2", "n3"))
    bench_directory = data_dir / "bench"
    assert [path.name for path in bench_directory.iterdir()] == [report["timestamp"] + ".json"]
    saved = json.loads((bench_directory / (report["timestamp"] + ".json")).read_text())
    assert saved["results"] == report["results"]

    machine = report["machine"]
    assert machine["lmdb_synced_commits_per_second"] > 0
    assert machine["replication_ceiling_mb_per_second"] > 0
    assert machine["replication"] == 3
    assert machine["file_size_bytes"] == FILE_SIZE_BYTES

    rows = report["results"]
    assert not [row for row in rows if "error" in row or "unavailable" in row], rows
    by_workload: dict[str, list[dict]] = {}
    for row in rows:
        by_workload.setdefault(row["workload"], []).append(row)
    assert sorted(by_workload) == sorted(WORKLOADS)

    writes = by_workload["write"]
    assert [row["outstanding"] for row in writes] == [1, 4]
    for row in writes:
        assert row["operations"] > 0 and row["errors"] == 0
        assert row["ops_per_second"] > 0 and row["writes_per_fsync"] > 0
        assert 0 < row["latency_ms_p50"] <= row["latency_ms_p99"] <= row["latency_ms_p999"]
        assert row["client_cpu_percent"] >= 0
        # Every node runs here: each one's CPU and syncs per write are measured.
        assert row["node_cpu_nodes_measured"] == 3
        assert row["node_cpu_us_per_op"] > 0
        assert all(value > 0 for value in row["node_cpu_us_per_op_by_node"].values())
        assert row["fsyncs_per_op"] > 0 and row["synced_commits_per_op"] > 0
        assert isinstance(row["leader_changes"], int) and row["leader_changes"] >= 0

    reads = by_workload["read"]
    assert [(row["mode"], row["outstanding"]) for row in reads] == [
        ("linearizable", 1), ("linearizable", 4), ("stale", 1), ("stale", 4)]
    for row in reads:
        assert row["operations"] > 0 and row["errors"] == 0  # errors include content mismatches

    small_put, small_get = by_workload["small"]
    assert small_put["operations"] > 0 and small_put["errors"] == 0
    assert small_get["operations"] == small_put["operations"] and small_get["errors"] == 0
    assert small_get["files_per_second"] > 0

    for name in ("put", "get"):
        (row,) = by_workload[name]
        assert row["size_bytes"] == FILE_SIZE_BYTES and row["errors"] == 0
        assert row["throughput_mb_per_second"] > 0 and row["client_peak_memory_mib"] > 0
        assert row["fraction_of_replication_ceiling"] > 0

    (failover,) = by_workload["failover"]
    assert len(failover["kill_to_ack_ms"]) == 3
    assert all(ms > 0 for ms in failover["kill_to_ack_ms"])
    assert failover["kill_to_ack_ms_median"] == sorted(failover["kill_to_ack_ms"])[1]
    assert len(failover["kill_to_leader_ms"]) == 3 and all(ms > 0 for ms in failover["kill_to_leader_ms"])
    assert len(dropped) == 1
    assert failover["writes_acknowledged"] >= 1
    assert failover["writes_unverified"] == 0
    assert failover["writes_lost"] == 1  # exactly the write dropped above: the cluster lost none


def test_read_back_counts_missing_and_altered_writes_as_lost(isolated):
    """verify_acknowledged against a real one-node cluster: only real reads decide."""
    from sandctl.bench_cluster import LocalCluster
    from sandctl.bench_failover import verify_acknowledged
    from sandctl.bench_workloads import BenchContext
    from sandctl.client import Client

    template = ClusterConfig(nodes=(), replicator="none", replication=1)
    with LocalCluster(isolated / "cluster", node_count=1, template=template) as local:
        local.start()
        with Client(local.config) as client:
            context = BenchContext(local.config, client, "/bench/t", 0.1, 10.0)
            directory = context.directory("failover")
            acknowledged = {f"{directory}/f{i}": b"data-%d" % i for i in range(40)}
            for path, data in acknowledged.items():
                client.write_file(path, data)
            assert verify_acknowledged(context, acknowledged) == {
                "writes_acknowledged": 40, "writes_lost": 0, "writes_unverified": 0}

            acknowledged[f"{directory}/never-written"] = b"x"  # acknowledged, but not in the cluster
            acknowledged[f"{directory}/f7"] = b"other bytes"  # in the cluster with other content
            client.rm(f"{directory}/f8")  # dropped behind the benchmark's back
            assert verify_acknowledged(context, acknowledged) == {
                "writes_acknowledged": 41, "writes_lost": 3, "writes_unverified": 0}
        pids = list(local.pids_started)
    assert len(pids) == 1
    assert not cluster.is_node_process(pids[0], "n1")
