"""Fixtures for the client library's tests against real chunk services (in-process, loopback)."""

from __future__ import annotations

from tests.chunks.conftest import context, start_service  # noqa: F401  (fixtures, used by name)
