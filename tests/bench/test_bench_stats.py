"""Pure helpers: percentiles, latency summaries, CPU and ratios."""

from __future__ import annotations

import pytest

from sandctl.bench_stats import CpuMeter, latency_summary_ms, peak_memory_mib, percentile, rate_per_second, ratio


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
