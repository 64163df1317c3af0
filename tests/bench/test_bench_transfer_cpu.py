"""The put/get rows' CPU figures: CPU per MB of the client and the nodes, and the MB/s the
machine's cores would allow at that cost (the CPU limit beside the disk's ceiling)."""

from __future__ import annotations

from sandctl.bench_report import add_machine_ratios, render_table
from sandctl.bench_transfer import cpu_figures

SIZE_BYTES = 100_000_000  # 100 MB
NODES_MEASURED = {"node_cpu_us_per_op": 1_200_000.0, "node_cpu_nodes_measured": 3}  # 1.2 s over 3 nodes


def test_cpu_per_mb_and_the_limit_the_cores_allow():
    figures = cpu_figures(SIZE_BYTES, wall_seconds=1.0, client_cpu_seconds=0.4, node_figures=NODES_MEASURED,
                          node_count=3, cores=2)
    assert figures == {"client_cpu_ms_per_mb": 4.0, "node_cpu_ms_per_mb": 12.0, "cpu_ms_per_mb": 16.0,
                       "cpu_limit_mb_per_second": 125.0, "cpu_cores_busy": 1.6}


def test_no_node_or_total_figure_unless_every_node_was_measured():
    partly = {"node_cpu_us_per_op": 800_000.0, "node_cpu_nodes_measured": 2}  # one node restarted
    for node_figures in (partly, {"node_cpu_us_per_op": None, "node_cpu_nodes_measured": 0}):
        figures = cpu_figures(SIZE_BYTES, 1.0, 0.4, node_figures, node_count=3, cores=2)
        assert figures["client_cpu_ms_per_mb"] == 4.0
        assert figures["node_cpu_ms_per_mb"] is None and figures["cpu_limit_mb_per_second"] is None


def test_the_table_shows_the_cpu_limit_beside_the_ceiling():
    row = {"workload": "put", "mode": "95 MiB", "outstanding": 1, "throughput_mb_per_second": 100.0,
           "client_peak_memory_mib": 80.0, "errors": 0, "client_cpu_percent": 40.0}
    row.update(cpu_figures(SIZE_BYTES, 1.0, 0.4, NODES_MEASURED, node_count=3, cores=2))
    machine = {"replication_ceiling_mb_per_second": 400.0, "replication": 3, "file_size_bytes": SIZE_BYTES}
    add_machine_ratios([row], machine)
    table = render_table({"machine": machine, "results": [row]})
    assert "0.25 of ceiling; 16 CPU ms/MB: CPU limit 125 MB/s, 1.6 cores busy" in table
