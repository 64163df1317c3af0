"""Fixtures for the client library's tests against real chunk services (in-process, loopback)."""

from __future__ import annotations

from tests.chunks.conftest import start_service  # noqa: F401  (a fixture, used by name; `context` is tests/conftest.py's)
