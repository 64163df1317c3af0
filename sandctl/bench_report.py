"""Turn benchmark rows into ratios against the machine, a tabulate table, and a JSON file."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from tabulate import tabulate

from sandctl.bench_machine import MB
from sandctl.bench_stats import ratio

TABLE_HEADERS = ("workload", "mode", "outstanding", "rate", "p50 ms", "p99 ms", "p99.9 ms", "errors",
                 "client CPU %", "host steal %", "node CPU us/op", "fsyncs/op", "leader changes", "vs machine")


def add_machine_ratios(rows: list[dict], machine: dict) -> None:
    """Writes per fsync for request workloads, fraction of the replication ceiling for put/get."""
    commits_per_second = machine.get("lmdb_synced_commits_per_second")
    ceiling = machine.get("replication_ceiling_mb_per_second")
    for row in rows:
        if row.get("workload") in ("write", "failover") or (row.get("workload") == "small" and "put" in row["mode"]):
            rate = row.get("ops_per_second", row.get("files_per_second"))
            row["writes_per_fsync"] = ratio(rate, commits_per_second)
        if row.get("workload") in ("put", "get") and "throughput_mb_per_second" in row:
            row["fraction_of_replication_ceiling"] = ratio(row["throughput_mb_per_second"], ceiling)
        if row.get("workload") == "repair" and "repair_mb_per_second" in row:
            row["fraction_of_replication_ceiling"] = ratio(row["repair_mb_per_second"], ceiling)


def _rate(row: dict) -> str:
    if "unavailable" in row:
        return "unavailable: " + row["unavailable"]
    if "error" in row:
        return "failed: " + row["error"]
    if row["workload"] == "failover":
        kills = ", ".join(f"{ms:g}" for ms in row.get("kill_to_ack_ms", []))
        median = row.get("kill_to_ack_ms_median")
        median_text = f"median {median:g}; " if median is not None else ""
        leader_median = row.get("kill_to_leader_ms_median")
        if leader_median is not None:
            median_text += f"(kill->new leader median {leader_median:g}) "
        return (f"kill->ack ms: {median_text}{kills}; "
                f"lost {row.get('writes_lost')} of {row.get('writes_acknowledged')}")
    if row["workload"] == "partition":
        def joined(key: str) -> str:
            return ", ".join("?" if ms is None else f"{ms:g}" for ms in row.get(key, []))
        leaders = f" (cut->new leader ms: {joined('cut_to_leader_ms')})" if row.get("cut_to_leader_ms") else ""
        return (f"cut->ack ms: {joined('cut_to_ack_ms')}{leaders}; heal->recovered ms: {joined('heal_to_recovered_ms')}; "
                f"longest gap ms: {joined('longest_ack_gap_ms')}; "
                f"status silence after heal ms: {joined('longest_status_silence_after_heal_ms')}; "
                f"lost {row.get('writes_lost')} of {row.get('writes_acknowledged')}")
    if row["workload"] == "repair":
        return (f"{row['repair_mb_per_second']:g} MB/s re-copied ({row['repair_bytes'] / MB:g} MB in "
                f"{row['repair_seconds']:g} s; limit {row['repair_limit_mb_per_second']:g} MB/s)")
    if "throughput_mb_per_second" in row:
        return f"{row['throughput_mb_per_second']:g} MB/s, peak {row['client_peak_memory_mib']:g} MiB"
    if "files_per_second" in row:
        return f"{row['files_per_second']:g} files/s"
    return f"{row.get('ops_per_second', 0):g} ops/s"


def _versus_machine(row: dict) -> str:
    if row.get("writes_per_fsync") is not None:
        return f"{row['writes_per_fsync']:g} writes/fsync"
    parts = []
    if row.get("fraction_of_replication_ceiling") is not None:
        parts.append(f"{row['fraction_of_replication_ceiling']:g} of ceiling")
    if row.get("cpu_limit_mb_per_second") is not None:
        # The CPU's own limit at this transfer's cost per MB (sandctl/bench_transfer.py).
        parts.append(f"{row['cpu_ms_per_mb']:g} CPU ms/MB: CPU limit {row['cpu_limit_mb_per_second']:g} MB/s, "
                     f"{row['cpu_cores_busy']:g} cores busy")
    return "; ".join(parts)


def _node_cpu(row: dict) -> str:
    """Total node CPU per operation, then each node's share: "310 (n1 150, n2 80, n3 80)"."""
    total = row.get("node_cpu_us_per_op")
    if total is None:
        return ""
    by_node = row.get("node_cpu_us_per_op_by_node") or {}
    shares = ", ".join(f"{node} {value:.0f}" for node, value in sorted(by_node.items()) if value is not None)
    return f"{total:.0f} ({shares})" if shares else f"{total:.0f}"


def _cell(value: object) -> object:
    return "" if value is None else value


def render_table(report: dict) -> str:
    machine = report.get("machine", {})
    machine_rows = [
        ("LMDB synced commits/s", machine.get("lmdb_synced_commits_per_second"), machine.get("directory", "")),
        (f"replication ceiling MB/s ({machine.get('replication')} fsynced copies)",
         machine.get("replication_ceiling_mb_per_second"),
         f"{machine.get('file_size_bytes', 0) / (1 << 20):g} MiB file"),
    ]
    rows = [
        (row["workload"], row.get("mode", ""), row.get("outstanding", ""), _rate(row),
         _cell(row.get("latency_ms_p50")), _cell(row.get("latency_ms_p99")), _cell(row.get("latency_ms_p999")),
         _cell(row.get("errors")), _cell(row.get("client_cpu_percent")),
         _cell(row.get("host_steal_percent")), _node_cpu(row),
         _cell(row.get("fsyncs_per_op")), _cell(row.get("leader_changes")), _versus_machine(row))
        for row in report.get("results", [])
    ]
    parts = [
        tabulate(machine_rows, headers=("machine", "limit", "measured on")),
        "",
        tabulate(rows, headers=TABLE_HEADERS),
    ]
    if report.get("results_file"):
        parts += ["", f"results: {report['results_file']}"]
    return "\n".join(parts)


def save_report(report: dict, directory: Path, timestamp: str) -> Path:
    """Write <directory>/<timestamp>.json atomically (temp file + rename); returns its path."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{timestamp}.json"
    with tempfile.NamedTemporaryFile("w", dir=directory, prefix=".bench.", suffix=".tmp", delete=False) as file:
        json.dump(report, file, indent=2, sort_keys=True)
        file.write("\n")
    os.replace(file.name, path)
    return path
