"""The large-file workloads of `sandctl bench`: put and get of one file of random bytes.

The file goes through Client.put_file / get_file, exactly what `sandctl put/get` run, so the
figure includes chunking, hashing, replication and the final metadata commit.
"""

from __future__ import annotations

from pathlib import Path
from typing import BinaryIO

from sandctl.bench_machine import MB
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
    """Put test_file into the cluster, then get it back (compared with the original), through
    the same client calls `sandctl put` and `sandctl get` use."""
    size_bytes = test_file.stat().st_size
    path = f"{context.directory('large')}/file-{size_bytes}"
    rows = []

    measured_peak = reset_peak_memory()
    meter = CpuMeter().start()
    with open(test_file, "rb") as reader:
        stored = context.client.put_file(path, reader, size_hint=size_bytes)
    meter.stop()
    assert stored["size"] == size_bytes, f"put stored {stored['size']} of {size_bytes} bytes"
    if "put" in workloads:
        rows.append(_row("put", size_bytes, meter, peak_memory_mib(), measured_peak))
    if "get" not in workloads:
        return rows

    with open(test_file, "rb", buffering=0) as original:
        measured_peak = reset_peak_memory()
        meter = CpuMeter().start()
        sink = _ComparingSink(original)
        context.client.get_file(path, sink)
        meter.stop()
        matches = sink.finish()
    row = _row("get", size_bytes, meter, peak_memory_mib(), measured_peak)
    if sink.size_bytes != size_bytes or not matches:
        row["errors"] = 1
        row["errors_by_code"] = {"CONTENT_MISMATCH": 1}
    rows.append(row)
    return rows
