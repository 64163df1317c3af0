"""Virtual time: a clock and a queue of future events, ordered by (time, insertion order).

Insertion order breaks ties, so the same schedule always pops in the same order: together
with the run's single rng this makes a run a pure function of its seed.
"""

from __future__ import annotations

import heapq
from typing import Any

# Guard against a runaway schedule (an event that keeps rescheduling itself at the same time).
EVENTS_PER_RUN_MAX = 5_000_000


class EventQueue:
    def __init__(self) -> None:
        self.now_ms = 0
        self._heap: list[tuple[int, int, str, Any]] = []
        self._sequence = 0
        self.popped_count = 0

    def schedule(self, delay_ms: int, kind: str, payload: Any = None) -> None:
        assert delay_ms >= 0, delay_ms
        self._sequence += 1
        heapq.heappush(self._heap, (self.now_ms + delay_ms, self._sequence, kind, payload))

    def next_time_ms(self) -> int | None:
        return self._heap[0][0] if self._heap else None

    def pop(self) -> tuple[str, Any]:
        time_ms, _, kind, payload = heapq.heappop(self._heap)
        assert time_ms >= self.now_ms, "virtual time never runs backwards"
        self.now_ms = time_ms
        self.popped_count += 1
        assert self.popped_count <= EVENTS_PER_RUN_MAX, "runaway event schedule"
        return kind, payload

    def __len__(self) -> int:
        return len(self._heap)
