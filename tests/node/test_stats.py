"""LatencySamples' histogram counts as a Prometheus histogram does (prometheus_client is the
oracle): a sample on a bound counts in that bound's bucket, and counts are cumulative."""

from __future__ import annotations

import random

from prometheus_client import Histogram

from node.stats import LATENCY_BUCKETS_SECONDS, LatencySamples


def _oracle(samples: list[float]) -> dict:
    histogram = Histogram("oracle_seconds", "", registry=None, buckets=LATENCY_BUCKETS_SECONDS)
    for seconds in samples:
        histogram.observe(seconds)
    buckets, count, sum_seconds = [], 0, 0.0
    for sample in histogram.collect()[0].samples:
        if sample.name.endswith("_bucket") and sample.labels["le"] != "+Inf":
            buckets.append([float(sample.labels["le"]), int(sample.value)])
        elif sample.name.endswith("_count"):
            count = int(sample.value)
        elif sample.name.endswith("_sum"):
            sum_seconds = sample.value
    return {"buckets": buckets, "count": count, "sum_seconds": sum_seconds}


def test_the_histogram_matches_prometheus_on_bounds_between_them_and_beyond_the_last():
    rng = random.Random(7)
    samples = list(LATENCY_BUCKETS_SECONDS) + [0.0, 11.0, 1e-9] + [rng.uniform(0, 12) ** 3 / 100 for _ in range(500)]
    recorder = LatencySamples(capacity=16)
    for seconds in samples:
        recorder.add_seconds(seconds)
    mine, oracle = recorder.histogram(), _oracle(samples)
    assert mine["buckets"] == oracle["buckets"]
    assert mine["count"] == oracle["count"] == len(samples)
    assert abs(mine["sum_seconds"] - oracle["sum_seconds"]) < 1e-9
    assert recorder.percentiles()["samples"] == 16  # the recent window stays bounded


def test_no_samples_give_an_empty_histogram():
    summary = LatencySamples().percentiles()
    assert summary["p50"] is None and summary["histogram"]["count"] == 0
    assert [count for _, count in summary["histogram"]["buckets"]] == [0] * len(LATENCY_BUCKETS_SECONDS)
