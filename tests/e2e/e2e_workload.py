"""Shared load for end-to-end tests: a writer thread that records exactly what was acknowledged."""

from __future__ import annotations

import threading

from node.errors import TimedOut
from sandctl.client import Client

from tests.waiting import WAIT_SECONDS, wait_until  # noqa: F401 -- the one wait_until, named here too


class Writer(threading.Thread):
    """Writes /load/<n> = b"value-<n>" until stopped; remembers what was acknowledged."""

    def __init__(self, config) -> None:
        super().__init__(daemon=True)
        self.client = Client(config, timeout_seconds=15)
        self.acknowledged: list[int] = []
        self.uncertain: list[int] = []
        self.stop_event = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.client.mkdir("/load", parents=True)
            number = 0
            while not self.stop_event.is_set():
                number += 1
                try:
                    self.client.write_file(f"/load/{number}", f"value-{number}".encode())
                except TimedOut:
                    self.uncertain.append(number)  # outcome unknown: neither counted nor required
                    continue
                self.acknowledged.append(number)
        except BaseException as error:  # surfaced by the test, not swallowed
            self.error = error
        finally:
            self.client.close()

    def wait_for_acknowledged(self, count: int) -> None:
        def enough() -> bool:
            assert self.error is None, self.error
            return len(self.acknowledged) >= count

        wait_until(enough, f"{count} acknowledged writes (have {len(self.acknowledged)})")

    def finish(self) -> list[int]:
        self.stop_event.set()
        self.join(WAIT_SECONDS)
        assert not self.is_alive(), "writer did not stop"
        assert self.error is None, self.error
        return self.acknowledged


def assert_all_readable(client: Client, numbers: list[int]) -> None:
    for number in numbers:
        _, data = client.read(f"/load/{number}")
        assert data == f"value-{number}".encode(), number
