"""Node figures per workload step: CPU from /proc, fsyncs and leader changes from status."""

from __future__ import annotations

import subprocess
import sys

from sandctl.bench_nodes import NodeSample, NodesSample, process_cpu_seconds, sample_from_statuses, step_figures

# Burns CPU, then says so and waits for its stdin to close: the test reads it in between.
BURNER = "import sys\nx = 0\nfor i in range(3_000_000): x += i\nprint('done', flush=True)\nsys.stdin.read()\n"


def test_cpu_of_a_live_node_process_is_read_from_proc():
    process = subprocess.Popen([sys.executable, "-c", BURNER, "n7"], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        assert process.stdout.readline() == b"done\n"
        cpu = process_cpu_seconds(process.pid, "n7")
        assert cpu is not None and cpu > 0.0
        # The same pid is not taken for another node (pid reused, or a node elsewhere).
        assert process_cpu_seconds(process.pid, "n8") is None
    finally:
        process.stdin.close()
        process.wait()
    assert process_cpu_seconds(process.pid, "n7") is None  # gone


def _sample(cpu_seconds: float, fsyncs: int, commits: int, elections: int, pid: int = 10) -> NodeSample:
    return NodeSample(pid=pid, cpu_seconds=cpu_seconds, fsyncs=fsyncs, synced_commits=commits,
                      elections_seen=elections)


def test_step_figures_per_operation_and_per_node():
    before = NodesSample({"n1": _sample(1.0, 100, 50, 1), "n2": _sample(2.0, 10, 10, 1, pid=11)})
    after = NodesSample({"n1": _sample(1.5, 300, 150, 1), "n2": _sample(2.25, 110, 60, 1, pid=11)})
    figures = step_figures(before, after, operations=1000)
    assert figures["node_cpu_us_per_op_by_node"] == {"n1": 500.0, "n2": 250.0}
    assert figures["node_cpu_us_per_op"] == 750.0
    assert figures["fsyncs_per_op_by_node"] == {"n1": 0.2, "n2": 0.1}
    assert figures["fsyncs_per_op"] == 0.3
    assert figures["synced_commits_per_op"] == 0.15
    assert figures["leader_changes"] == 0
    assert figures["node_cpu_nodes_measured"] == 2


def test_a_leader_change_and_a_restarted_or_silent_node():
    before = NodesSample({"n1": _sample(1.0, 100, 50, 1), "n2": _sample(2.0, 10, 10, 1, pid=11),
                          "n3": _sample(1.0, 5, 5, 1, pid=12)})
    after = NodesSample({"n1": _sample(2.0, 200, 100, 2), "n2": _sample(0.1, 1, 1, 0, pid=99),
                         "n3": NodeSample(None, None, None, None, None)})
    figures = step_figures(before, after, operations=100)
    assert figures["leader_changes"] == 1
    assert figures["node_cpu_us_per_op_by_node"] == {"n1": 10000.0, "n2": None, "n3": None}
    assert figures["node_cpu_us_per_op"] == 10000.0 and figures["node_cpu_nodes_measured"] == 1
    assert step_figures(before, after, operations=0)["node_cpu_us_per_op"] is None


def test_sample_from_status_replies():
    statuses = {"n1": {"pid": 2 ** 22 + 5, "store_syncs": {"fsyncs": 7, "commits": 4, "durable_commits": 3},
                       "elections_seen": 2}, "n2": None}
    sample = sample_from_statuses(statuses)
    assert sample.nodes["n1"] == NodeSample(pid=2 ** 22 + 5, cpu_seconds=None, fsyncs=7, synced_commits=4,
                                            elections_seen=2)
    assert sample.nodes["n2"] == NodeSample(None, None, None, None, None)
