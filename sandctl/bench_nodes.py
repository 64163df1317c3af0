"""What a workload step cost the nodes: CPU time, disk syncs and leader changes.

Before and after each step the benchmark asks every node for its status (its pid, the store's
sync counters, the elections it has seen) and reads the CPU time of the nodes that run on this
machine from /proc/PID/stat. step_figures() turns the two samples into per-operation figures:
node CPU microseconds per operation (per node and in total), fsyncs per operation, and the
leader changes seen during the step (0 is the only right answer without a fault).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

PROC = Path("/proc")
CLOCK_TICKS_PER_SECOND = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
# proc(5) numbers /proc/PID/stat's fields from 1: utime is field 14, stime 15 (clock ticks).
STAT_UTIME_FIELD_NUMBER = 14
STAT_STIME_FIELD_NUMBER = 15
STAT_FIRST_FIELD_AFTER_NAME = 3  # the state, after "pid (name)"
STATUS_TIMEOUT_SECONDS = 2.0


@dataclass(frozen=True)
class NodeSample:
    pid: int | None
    cpu_seconds: float | None  # None: the node does not run on this machine (or its pid is unknown)
    fsyncs: int | None
    synced_commits: int | None
    elections_seen: int | None


@dataclass
class NodesSample:
    nodes: dict[str, NodeSample] = field(default_factory=dict)


def process_cpu_seconds(pid: int, node_id: str) -> float | None:
    """utime + stime of pid, if pid is a live process running node node_id on this machine."""
    try:
        command_line = (PROC / str(pid) / "cmdline").read_bytes().split(b"\0")
        fields = (PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    if node_id.encode() not in command_line:
        return None  # a pid of another machine, or reused by another program
    # The process name (field 2) may hold spaces and parentheses: split after its last ")".
    after_name = fields[fields.rindex(")") + 2:].split()
    ticks = (int(after_name[STAT_UTIME_FIELD_NUMBER - STAT_FIRST_FIELD_AFTER_NAME])
             + int(after_name[STAT_STIME_FIELD_NUMBER - STAT_FIRST_FIELD_AFTER_NAME]))
    return ticks / CLOCK_TICKS_PER_SECOND


def sample_from_statuses(statuses: dict[str, object]) -> NodesSample:
    """A sample from each node's `status` reply (a dict, or None / an error when it did not answer)."""
    sample = NodesSample()
    for node_id, status in sorted(statuses.items()):
        if not isinstance(status, dict):
            sample.nodes[node_id] = NodeSample(None, None, None, None, None)
            continue
        pid = status.get("pid") if isinstance(status.get("pid"), int) else None
        syncs = status.get("store_syncs") or {}
        sample.nodes[node_id] = NodeSample(
            pid=pid,
            cpu_seconds=process_cpu_seconds(pid, node_id) if pid is not None else None,
            fsyncs=syncs.get("fsyncs"),
            synced_commits=syncs.get("commits"),
            elections_seen=status.get("elections_seen"),
        )
    return sample


def sample_nodes(client) -> NodesSample:
    """Every node's figures now (through a sandctl.client.Client)."""
    return sample_from_statuses(client.broadcast("status", {}, timeout_seconds=STATUS_TIMEOUT_SECONDS))


def _difference(before: float | int | None, after: float | int | None) -> float | int | None:
    if before is None or after is None or after < before:
        return None  # unknown, or the node restarted (its counters began again)
    return after - before


def _per_operation(total: float | None, operations: int, scale: float = 1.0) -> float | None:
    if total is None or operations <= 0:
        return None
    return round(total * scale / operations, 3)


def step_figures(before: NodesSample, after: NodesSample, operations: int) -> dict:
    """Per-operation figures of one step, JSON-ready. A node that restarted or did not answer in
    either sample has None for its own figures and is left out of the totals (which then say
    how many nodes they cover)."""
    cpu_us_per_node: dict[str, float | None] = {}
    fsyncs_per_node: dict[str, float | None] = {}
    cpu_total = fsyncs_total = commits_total = 0.0
    cpu_nodes = fsync_nodes = 0
    leader_changes = 0
    for node_id in sorted(set(before.nodes) | set(after.nodes)):
        old, new = before.nodes.get(node_id), after.nodes.get(node_id)
        same_process = old is not None and new is not None and old.pid is not None and old.pid == new.pid
        cpu = _difference(old.cpu_seconds, new.cpu_seconds) if same_process else None
        fsyncs = _difference(old.fsyncs, new.fsyncs) if same_process else None
        commits = _difference(old.synced_commits, new.synced_commits) if same_process else None
        elections = _difference(old.elections_seen, new.elections_seen) if same_process else None
        cpu_us_per_node[node_id] = _per_operation(cpu, operations, 1e6)
        fsyncs_per_node[node_id] = _per_operation(fsyncs, operations)
        if cpu is not None:
            cpu_total += cpu
            cpu_nodes += 1
        if fsyncs is not None and commits is not None:
            fsyncs_total += fsyncs
            commits_total += commits
            fsync_nodes += 1
        leader_changes = max(leader_changes, elections or 0)  # every node sees the same change
    return {
        "node_cpu_us_per_op": _per_operation(cpu_total, operations, 1e6) if cpu_nodes else None,
        "node_cpu_us_per_op_by_node": cpu_us_per_node,
        "node_cpu_nodes_measured": cpu_nodes,
        "fsyncs_per_op": _per_operation(fsyncs_total, operations) if fsync_nodes else None,
        "fsyncs_per_op_by_node": fsyncs_per_node,
        "synced_commits_per_op": _per_operation(commits_total, operations) if fsync_nodes else None,
        "leader_changes": leader_changes,
    }
