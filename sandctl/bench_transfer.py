"""The large-file workloads of `sandctl bench`: put and get of one file of random bytes.

The file goes through Client.put_file / get_file, exactly what `sandctl put/get` run, so the
figure includes chunking, hashing, replication and the final metadata commit.

Beside MB/s each row gives the CPU the transfer cost per MB, the client's and the nodes' (the
figure that holds on a busy machine), and from it the CPU limit: the MB/s this machine's cores
would allow if they did nothing else. A put or get far below the disk's replication ceiling
but near the CPU limit is bound by CPU, not by the disk.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import BinaryIO

from sandctl.bench_machine import MB
from sandctl.bench_nodes import sample_nodes, step_figures
from sandctl.bench_stats import CpuMeter, peak_memory_mib, reset_peak_memory
from sandctl.bench_workloads import BenchContext


class _ComparingSink:
    """A writer that compares what it is given with the original file, block by block, so get
    never holds the file and the check costs a read and a memcmp (cheaper than hashing, which
    would be counted in the get's time and CPU)."""

    def __init__(self, original: BinaryIO) -> None:
        self._original = original
        self._buffer = bytearray()
        self.size_bytes = 0
        self.matches = True

    def write(self, data: bytes | memoryview) -> int:
        size = len(data)
        if len(self._buffer) != size:  # every chunk but the last has the same size: one buffer
            self._buffer = bytearray(size)
        read = self._original.readinto(self._buffer)
        # bytearray == buffer is one memcmp; memoryview == memoryview compares item by item
        # (about 3 ms per MB here, more than the get's own hashing).
        self.matches = self.matches and read == size and self._buffer == data
        self.size_bytes += size
        return size

    def finish(self) -> bool:
        """True if everything written equals the whole original file."""
        return self.matches and self._original.read(1) == b""


def cpu_figures(size_bytes: int, wall_seconds: float, client_cpu_seconds: float, node_figures: dict,
                node_count: int, cores: int) -> dict:
    """CPU milliseconds per MB moved (client, nodes, total) and the MB/s `cores` allow at that
    cost. Node and total figures only when every node's CPU was measured (all run here)."""
    assert size_bytes > 0 and cores >= 1 and node_count >= 1
    megabytes = size_bytes / MB
    client_ms_per_mb = client_cpu_seconds * 1000.0 / megabytes
    figures = {"client_cpu_ms_per_mb": round(client_ms_per_mb, 3), "node_cpu_ms_per_mb": None,
               "cpu_ms_per_mb": None, "cpu_limit_mb_per_second": None, "cpu_cores_busy": None}
    node_us = node_figures.get("node_cpu_us_per_op")  # the one operation is the whole transfer
    if node_us is None or node_figures.get("node_cpu_nodes_measured") != node_count:
        return figures
    node_ms_per_mb = node_us / 1000.0 / megabytes
    total_ms_per_mb = client_ms_per_mb + node_ms_per_mb
    figures.update({
        "node_cpu_ms_per_mb": round(node_ms_per_mb, 3),
        "cpu_ms_per_mb": round(total_ms_per_mb, 3),
        "cpu_limit_mb_per_second": round(cores * 1000.0 / max(total_ms_per_mb, 1e-9), 1),
        # How many cores the transfer kept busy on average: near `cores`, the CPU binds.
        "cpu_cores_busy": round(total_ms_per_mb * megabytes / 1000.0 / max(wall_seconds, 1e-9), 2),
    })
    return figures


def _row(workload: str, size_bytes: int, meter: CpuMeter, peak_mib: float, measured_peak: bool) -> dict:
    return {
        "workload": workload,
        "mode": f"{size_bytes / (1 << 20):g} MiB",
        "outstanding": 1,
        "operations": 1,
        "errors": 0,
        "size_bytes": size_bytes,
        "throughput_mb_per_second": round(size_bytes / MB / max(meter.wall_seconds, 1e-9), 1),
        "elapsed_seconds": round(meter.wall_seconds, 3),
        "client_cpu_percent": meter.cpu_percent,
        "host_steal_percent": meter.host_steal_percent,
        "client_peak_memory_mib": peak_mib,
        # Without a peak reset the figure is the process's lifetime peak: say so.
        "client_peak_memory_is_lifetime": not measured_peak,
    }


def put_get_workload(context: BenchContext, test_file: Path, workloads: set[str]) -> list[dict]:
    """Put test_file into the cluster, then get it back (compared with the original), through
    the same client calls `sandctl put` and `sandctl get` use."""
    size_bytes = test_file.stat().st_size
    path = f"{context.directory('large')}/file-{size_bytes}"
    rows = []

    node_count = len(context.config.nodes)
    cores = os.cpu_count() or 1

    def with_cpu(row: dict, meter: CpuMeter, before) -> dict:
        node_figures = step_figures(before, sample_nodes(context.client), 1)
        row.update(node_figures)
        row.update(cpu_figures(size_bytes, meter.wall_seconds, meter.cpu_seconds, node_figures, node_count, cores))
        return row

    context.client.wait_for_leader(context.request_timeout_seconds)
    before = sample_nodes(context.client)
    measured_peak = reset_peak_memory()
    meter = CpuMeter().start()
    with open(test_file, "rb") as reader:
        stored = context.client.put_file(path, reader, size_hint=size_bytes)
    meter.stop()
    assert stored["size"] == size_bytes, f"put stored {stored['size']} of {size_bytes} bytes"
    if "put" in workloads:
        rows.append(with_cpu(_row("put", size_bytes, meter, peak_memory_mib(), measured_peak), meter, before))
    if "get" not in workloads:
        return rows

    before = sample_nodes(context.client)
    with open(test_file, "rb", buffering=0) as original:
        measured_peak = reset_peak_memory()
        meter = CpuMeter().start()
        sink = _ComparingSink(original)
        context.client.get_file(path, sink)
        meter.stop()
        matches = sink.finish()
    row = with_cpu(_row("get", size_bytes, meter, peak_memory_mib(), measured_peak), meter, before)
    if sink.size_bytes != size_bytes or not matches:
        row["errors"] = 1
        row["errors_by_code"] = {"CONTENT_MISMATCH": 1}
    rows.append(row)
    return rows
