"""Pure helpers: percentiles, latency summaries, CPU and ratios."""

from __future__ import annotations

import time

import pytest

from sandctl.bench_stats import (CpuMeter, latency_summary_ms, machine_cpu_ticks, peak_memory_mib, percentile,
                                 rate_per_second, ratio, steal_percent)


def test_percentile_is_nearest_rank():
    values = [float(v) for v in range(1, 101)]  # 1..100
    assert percentile(values, 50.0) == 50.0
    assert percentile(values, 99.0) == 99.0
    assert percentile(values, 99.9) == 100.0
    assert percentile([7.0], 99.9) == 7.0


def test_percentile_of_nothing_is_a_bug():
    with pytest.raises(AssertionError):
        percentile([], 50.0)


def test_latency_summary_converts_seconds_to_milliseconds():
    summary = latency_summary_ms([0.003, 0.001, 0.002, 0.010])
    assert summary == {"latency_ms_p50": 2.0, "latency_ms_p99": 10.0, "latency_ms_p999": 10.0}


def test_latency_summary_of_no_completions_is_none():
    assert latency_summary_ms([]) == {"latency_ms_p50": None, "latency_ms_p99": None, "latency_ms_p999": None}


def test_cpu_meter_counts_this_process_busy_time():
    meter = CpuMeter().start()
    total = 0
    for number in range(200_000):  # busy, so CPU time is clearly above zero
        total += number * number
    meter.stop()
    assert total > 0
    assert meter.cpu_seconds > 0
    assert meter.wall_seconds > 0
    assert meter.cpu_percent > 0


def test_rates_and_ratios():
    assert rate_per_second(10, 2.0) == 5.0
    assert rate_per_second(10, 0.0) == 0.0
    assert ratio(5.0, 2.0) == 2.5
    assert ratio(None, 2.0) is None
    assert ratio(5.0, 0) is None


def test_peak_memory_is_positive():
    assert peak_memory_mib() > 0


def test_host_steal_is_the_stolen_share_of_the_machine_cpu_time_between_two_readings():
    #        user nice system idle iowait irq softirq steal guest guest_nice
    before = "cpu  1000 0 500 8000 100 0 50 350 0 0\ncpu0 500 0 250 4000 50 0 25 175 0 0\n"
    after = "cpu  1600 0 700 8800 100 0 50 750 0 0\ncpu0 800 0 350 4400 50 0 25 375 0 0\n"
    started, stopped = machine_cpu_ticks(before), machine_cpu_ticks(after)
    assert started == (10000, 350) and stopped == (12000, 750)
    assert steal_percent(started, stopped) == 20.0  # 400 of the 2000 ticks between them
    assert steal_percent(stopped, stopped) is None  # no time passed: no figure
    assert steal_percent(None, stopped) is None
    assert machine_cpu_ticks("intr 1 2 3\n") is None and machine_cpu_ticks("cpu 1 2 x 4 5 6 7 8\n") is None


def test_cpu_meter_reads_this_machine_steal():
    meter = CpuMeter().start()
    while time.monotonic() - meter.wall_started < 0.05:
        pass  # a few scheduler ticks of busy time, so the machine's CPU time moves
    meter.stop()
    assert meter.host_steal_percent is not None and 0.0 <= meter.host_steal_percent <= 100.0
