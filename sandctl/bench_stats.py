"""Pure helpers of `sandctl bench`: latency percentiles, the client's own CPU and memory, and
the CPU time the host took from this machine.

The benchmark prints the client's CPU use beside every figure so a reader can tell a slow
cluster from a saturated load generator, and the host's steal so that a virtual machine whose
host was busy (its other guests ran on our cores) is not taken for a slow cluster; these
helpers measure them.
"""

from __future__ import annotations

import math
import resource
import time
from dataclasses import dataclass
from pathlib import Path

PERCENTILES = (("latency_ms_p50", 50.0), ("latency_ms_p99", 99.0), ("latency_ms_p999", 99.9))
PROC_STATUS_PATH = Path("/proc/self/status")
PROC_STAT_PATH = Path("/proc/stat")
PROC_CLEAR_REFS_PATH = Path("/proc/self/clear_refs")
# Writing "5" to clear_refs resets the peak resident set size (VmHWM) on Linux >= 4.0, so
# each transfer's peak can be measured on its own instead of the process's lifetime peak.
CLEAR_PEAK_RSS = b"5"


def percentile(sorted_values: list[float], percent: float) -> float:
    """Nearest-rank percentile of an ascending list (the value at least percent% are <=)."""
    assert sorted_values, "percentile of nothing"
    assert 0.0 < percent <= 100.0
    rank = math.ceil(percent / 100.0 * len(sorted_values))
    assert 1 <= rank <= len(sorted_values)
    return sorted_values[rank - 1]


def latency_summary_ms(latencies_seconds: list[float]) -> dict[str, float | None]:
    """p50/p99/p99.9 in milliseconds; None for each when nothing completed."""
    if not latencies_seconds:
        return {name: None for name, _ in PERCENTILES}
    ordered = sorted(latencies_seconds)
    assert ordered[0] >= 0.0
    return {name: round(percentile(ordered, percent) * 1000.0, 3) for name, percent in PERCENTILES}


@dataclass
class CpuMeter:
    """Wall and CPU time of this process (all its threads) between start() and stop()."""

    wall_started: float = 0.0
    cpu_started: float = 0.0
    wall_seconds: float = 0.0
    cpu_seconds: float = 0.0
    machine_ticks_started: tuple[int, int] | None = None  # (all, stolen) of /proc/stat's cpu line
    host_steal_percent: float | None = None  # None where /proc/stat is not readable

    def start(self) -> "CpuMeter":
        self.wall_started = time.monotonic()
        self.cpu_started = time.process_time()
        self.machine_ticks_started = machine_cpu_ticks()
        return self

    def stop(self) -> "CpuMeter":
        self.wall_seconds = time.monotonic() - self.wall_started
        self.cpu_seconds = time.process_time() - self.cpu_started
        assert self.wall_seconds >= 0.0
        self.host_steal_percent = steal_percent(self.machine_ticks_started, machine_cpu_ticks())
        return self

    @property
    def cpu_percent(self) -> float:
        """CPU seconds per wall second, in percent of one core (100 = one core saturated)."""
        if self.wall_seconds <= 0.0:
            return 0.0
        return round(100.0 * self.cpu_seconds / self.wall_seconds, 1)


def machine_cpu_ticks(text: str | None = None) -> tuple[int, int] | None:
    """(all, stolen): the machine's CPU time since boot in ticks, summed over its CPUs, from
    /proc/stat's first line (user nice system idle iowait irq softirq steal ...; guest time is
    counted in user already); None where it cannot be read."""
    try:
        line = (PROC_STAT_PATH.read_text() if text is None else text).split("\n", 1)[0]
        fields = line.split()
        if fields[0] != "cpu" or len(fields) < 9:
            return None
        ticks = [int(field) for field in fields[1:9]]
    except (OSError, ValueError, IndexError):
        return None
    return sum(ticks), ticks[7]


def steal_percent(started: tuple[int, int] | None, stopped: tuple[int, int] | None) -> float | None:
    """Percent of the machine's CPU time between two readings that its host ran something else
    on (steal): 0 on bare metal and on a quiet host; None without both readings."""
    if started is None or stopped is None or stopped[0] <= started[0]:
        return None
    return round(100.0 * (stopped[1] - started[1]) / (stopped[0] - started[0]), 1)


def reset_peak_memory() -> bool:
    """Reset this process's peak RSS; False where the kernel does not support it."""
    try:
        PROC_CLEAR_REFS_PATH.write_bytes(CLEAR_PEAK_RSS)
        return True
    except OSError:
        return False


def peak_memory_mib() -> float:
    """Peak resident set size of this process in MiB (since the last reset, if supported)."""
    try:
        for line in PROC_STATUS_PATH.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024.0, 1)  # the kernel reports kB
    except OSError:
        pass
    # Linux reports ru_maxrss in KiB: the lifetime peak, an upper bound.
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0, 1)


def rate_per_second(count: float, seconds: float) -> float:
    return round(count / seconds, 1) if seconds > 0 else 0.0


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    if numerator is None or not denominator:
        return None
    return round(numerator / denominator, 3)
