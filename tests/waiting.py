"""The one way tests wait: poll a condition until a deadline (never a bare sleep as
synchronisation). Used directly, or as the `wait_until` fixture of tests/conftest.py."""

from __future__ import annotations

import time

WAIT_SECONDS = 30.0
POLL_SECONDS = 0.01  # a polling interval inside a deadline, not a synchronisation point


def wait_until(condition, what: str, deadline_seconds: float = WAIT_SECONDS):
    """Poll condition() until it returns something truthy (returned) or fail at the deadline."""
    deadline = time.monotonic() + deadline_seconds
    while True:
        value = condition()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out after {deadline_seconds:.0f} s waiting for {what}"
        time.sleep(POLL_SECONDS)
