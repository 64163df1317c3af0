"""The repair throttle on a fake clock: bytes started never exceed rate * elapsed."""

from __future__ import annotations

from node.repair.throttle import Throttle


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def test_each_transfer_starts_only_once_its_bytes_fit_the_rate():
    clock = FakeClock()
    throttle = Throttle(1000, clock=clock, sleep=clock.sleep)
    started = []
    for size in (500, 1500, 1000, 0, 250):
        assert throttle.acquire(size)
        started.append((clock.now - 100.0, size))
    total = 0
    for elapsed, size in started:
        total += size
        assert total <= 1000 * elapsed + 1e-9, (elapsed, total)
    assert [round(elapsed, 6) for elapsed, _ in started] == [0.5, 2.0, 3.0, 3.0, 3.25]


def test_acquire_can_be_cancelled_while_waiting():
    clock = FakeClock()
    throttle = Throttle(10, clock=clock, sleep=clock.sleep)
    assert not throttle.acquire(1000, cancelled=lambda: clock.now > 101.0)
