"""The large-file workloads of `sandctl bench`: put and get of one file of random bytes.

The file is streamed chunk by chunk through node/chunks/transfer.py, the same path `sandctl
put/get` use, so the figure includes hashing, replication and the final metadata commit.
If that module is not installed the rows say "unavailable" instead of inventing numbers.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import BinaryIO

from sandctl.bench_machine import MB
from sandctl.bench_stats import CpuMeter, peak_memory_mib, reset_peak_memory
from sandctl.bench_workloads import BenchContext

TRANSFER_MODULE = "node.chunks.transfer"
TRANSFER_DEADLINE_SECONDS_MIN = 60.0
# A slow disk still moves this many bytes per second; the deadline scales with the file.
TRANSFER_BYTES_PER_SECOND_MIN = 1 << 20


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
        if len(self._buffer) < size:
            self._buffer = bytearray(size)
        expected = memoryview(self._buffer)[:size]
        read = self._original.readinto(expected)
        self.matches = self.matches and read == size and expected == data
        self.size_bytes += size
        return size

    def finish(self) -> bool:
        """True if everything written equals the whole original file."""
        return self.matches and self._original.read(1) == b""


def _transfer_module():
    try:
        return importlib.import_module(TRANSFER_MODULE)
    except ImportError:
        return None


def unavailable_rows(reason: str) -> list[dict]:
    return [{"workload": name, "mode": "", "outstanding": 1, "unavailable": reason} for name in ("put", "get")]


def _deadline_seconds(size_bytes: int) -> float:
    return max(TRANSFER_DEADLINE_SECONDS_MIN, size_bytes / TRANSFER_BYTES_PER_SECOND_MIN)


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
        "client_peak_memory_mib": peak_mib,
        # Without a peak reset the figure is the process's lifetime peak: say so.
        "client_peak_memory_is_lifetime": not measured_peak,
    }


def put_get_workload(context: BenchContext, test_file: Path, workloads: set[str]) -> list[dict]:
    """Put test_file into the cluster, then get it back (hash-checked against the original)."""
    transfer = _transfer_module()
    if transfer is None:
        return unavailable_rows(f"{TRANSFER_MODULE} is not installed")
    config = context.config
    size_bytes = test_file.stat().st_size
    deadline_seconds = _deadline_seconds(size_bytes)
    chunk_addresses = {address.id: address.chunk for address in config.nodes}
    path = f"{context.directory('large')}/file-{size_bytes}"
    rows = []

    measured_peak = reset_peak_memory()
    meter = CpuMeter().start()
    with open(test_file, "rb") as reader:
        chunks, stored_bytes = transfer.put_stream(
            chunk_addresses, reader, chunk_size_bytes=config.chunk_size_bytes,
            replication=min(config.replication, len(config.nodes)), deadline_seconds=deadline_seconds,
            max_frame_bytes=config.max_frame_bytes)
    assert stored_bytes == size_bytes, f"put_stream stored {stored_bytes} of {size_bytes} bytes"
    context.client.call("write_file", {"path": path, "chunks": chunks, "size": size_bytes},
                        deadline_seconds=deadline_seconds)
    meter.stop()
    if "put" in workloads:
        rows.append(_row("put", size_bytes, meter, peak_memory_mib(), measured_peak))
    if "get" not in workloads:
        return rows

    with open(test_file, "rb", buffering=0) as original:
        measured_peak = reset_peak_memory()
        meter = CpuMeter().start()
        record = context.client.call("read", {"path": path, "stale": False})
        sink = _ComparingSink(original)
        transfer.get_stream(chunk_addresses, record["chunks"], sink, deadline_seconds=deadline_seconds,
                            max_frame_bytes=config.max_frame_bytes)
        meter.stop()
        matches = sink.finish()
    row = _row("get", size_bytes, meter, peak_memory_mib(), measured_peak)
    if sink.size_bytes != size_bytes or not matches:
        row["errors"] = 1
        row["errors_by_code"] = {"CONTENT_MISMATCH": 1}
    rows.append(row)
    return rows
