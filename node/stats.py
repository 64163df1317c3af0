"""Small bounded latency recorders for `sandctl status` (p50/p99 of recent samples)."""

from __future__ import annotations

import collections


class LatencySamples:
    """Keeps the most recent `capacity` samples in milliseconds; memory is bounded by design."""

    def __init__(self, capacity: int = 2048) -> None:
        assert capacity > 0
        self._samples_ms: collections.deque[float] = collections.deque(maxlen=capacity)

    def add_seconds(self, seconds: float) -> None:
        assert seconds >= 0, seconds
        self._samples_ms.append(seconds * 1000.0)

    def percentiles(self) -> dict:
        if not self._samples_ms:
            return {"p50": None, "p99": None, "samples": 0}
        ordered = sorted(self._samples_ms)
        last = len(ordered) - 1
        return {
            "p50": round(ordered[last * 50 // 100], 3),
            "p99": round(ordered[last * 99 // 100], 3),
            "samples": len(ordered),
        }
