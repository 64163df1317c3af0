"""A byte-rate bound shared by threads: each transfer pays for its bytes before it starts.

acquire(n) returns once the bytes granted so far, n included, fit in rate * (time since the
first acquire): a transfer starts only after its own bytes have "drained" at the configured
rate. So the bytes started by any moment t are at most rate * (t - first acquire), whatever
the concurrency: an upper bound, never a burst.
"""

from __future__ import annotations

import threading
import time
from typing import Callable


class Throttle:
    def __init__(self, bytes_per_second: float, *, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], object] = time.sleep) -> None:
        assert bytes_per_second > 0
        self._bytes_per_second = bytes_per_second
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._free_at = 0.0  # when the bytes granted so far have drained

    def reserve(self, size_bytes: int) -> float:
        """Book size_bytes; returns the clock time at which they may start."""
        assert size_bytes >= 0
        with self._lock:
            self._free_at = max(self._clock(), self._free_at) + size_bytes / self._bytes_per_second
            return self._free_at

    def acquire(self, size_bytes: int, cancelled: Callable[[], bool] = lambda: False) -> bool:
        """Wait until size_bytes may start; False if cancelled() turned true meanwhile."""
        start = self.reserve(size_bytes)
        while True:
            if cancelled():
                return False
            remaining = start - self._clock()
            if remaining <= 0:
                return True
            self._sleep(min(remaining, 0.1))
