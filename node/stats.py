"""Small bounded latency recorders for `sandctl status` (p50/p99 of recent samples) and the
Prometheus histograms of the metrics endpoint (node/metrics.py: every sample ever, cumulative)."""

from __future__ import annotations

import collections

from prometheus_client import Histogram

# Histogram bucket bounds in seconds, 0.1 ms to 10 s: a synced commit takes about a millisecond.
LATENCY_BUCKETS_SECONDS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
                           2.5, 10.0)


class LatencySamples:
    """Keeps the most recent `capacity` samples in milliseconds; memory is bounded by design."""

    def __init__(self, capacity: int = 2048) -> None:
        assert capacity > 0
        self._samples_ms: collections.deque[float] = collections.deque(maxlen=capacity)
        # Not registered anywhere: prometheus_client only counts here; percentiles() reports it.
        self._histogram = Histogram("latency_seconds", "", registry=None, buckets=LATENCY_BUCKETS_SECONDS)

    def add_seconds(self, seconds: float) -> None:
        assert seconds >= 0, seconds
        self._samples_ms.append(seconds * 1000.0)
        self._histogram.observe(seconds)

    def percentiles(self) -> dict:
        if not self._samples_ms:
            return {"p50": None, "p99": None, "samples": 0, "histogram": self.histogram()}
        ordered = sorted(self._samples_ms)
        last = len(ordered) - 1
        return {
            "p50": round(ordered[last * 50 // 100], 3),
            "p99": round(ordered[last * 99 // 100], 3),
            "samples": len(ordered),
            "histogram": self.histogram(),
        }

    def histogram(self) -> dict:
        """Every sample ever: {"buckets": [[upper bound seconds, cumulative count], ...] for the
        finite bounds (+Inf is "count"), "count": int, "sum_seconds": float}."""
        buckets, count, sum_seconds = [], 0, 0.0
        for sample in self._histogram.collect()[0].samples:
            if sample.name.endswith("_bucket") and sample.labels["le"] != "+Inf":
                buckets.append([float(sample.labels["le"]), int(sample.value)])
            elif sample.name.endswith("_count"):
                count = int(sample.value)
            elif sample.name.endswith("_sum"):
                sum_seconds = sample.value
        return {"buckets": buckets, "count": count, "sum_seconds": sum_seconds}
