"""Small bounded latency recorders for `sandctl status` (p50/p99 of recent samples) and the
Prometheus histograms of the metrics endpoint (node/metrics.py: every sample ever, cumulative)."""

from __future__ import annotations

import bisect
import collections

# Histogram bucket bounds in seconds, 0.1 ms to 10 s: a synced commit takes about a millisecond.
LATENCY_BUCKETS_SECONDS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
                           2.5, 10.0)


class LatencySamples:
    """Keeps the most recent `capacity` samples in milliseconds; memory is bounded by design.
    Beside them, a histogram of every sample ever (Prometheus semantics: a sample counts in
    each bucket whose bound is at least the sample). It is counted here by hand: one
    prometheus_client Histogram.observe cost about 2 us (a lock and a loop over the bounds),
    paid for every write on the leader and for every batch on every node."""

    def __init__(self, capacity: int = 2048) -> None:
        assert capacity > 0
        self._samples_ms: collections.deque[float] = collections.deque(maxlen=capacity)
        # Per bound, the samples that fall in it and not in a smaller one; the last slot is +Inf.
        self._bucket_counts = [0] * (len(LATENCY_BUCKETS_SECONDS) + 1)
        self._count = 0
        self._sum_seconds = 0.0

    def add_seconds(self, seconds: float) -> None:
        assert seconds >= 0, seconds
        self._samples_ms.append(seconds * 1000.0)
        self._bucket_counts[bisect.bisect_left(LATENCY_BUCKETS_SECONDS, seconds)] += 1
        self._count += 1
        self._sum_seconds += seconds

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
        buckets, cumulative = [], 0
        for bound, count in zip(LATENCY_BUCKETS_SECONDS, self._bucket_counts):
            cumulative += count
            buckets.append([bound, cumulative])
        return {"buckets": buckets, "count": self._count, "sum_seconds": self._sum_seconds}
