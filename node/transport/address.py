"""Turning a config address ("host:port") into a ZeroMQ TCP endpoint."""

from __future__ import annotations


def tcp_endpoint(address: str) -> str:
    """"127.0.0.1:7001" -> "tcp://127.0.0.1:7001"; an endpoint already prefixed passes as is."""
    assert isinstance(address, str) and address, address
    if address.startswith("tcp://"):
        return address
    assert address.count(":") == 1, f"expected host:port, got {address!r}"
    return "tcp://" + address
