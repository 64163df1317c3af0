"""The bytes of a node snapshot: the namespace image plus the member addresses.

Addresses travel with the snapshot because a node that joins from a snapshot never sees the
conf-change entries that introduced the other members.
"""

from __future__ import annotations

import msgpack

SNAPSHOT_FORMAT_VERSION = 1


def encode_snapshot(namespace_data: bytes, addresses: bytes) -> bytes:
    return msgpack.packb([SNAPSHOT_FORMAT_VERSION, namespace_data, addresses], use_bin_type=True)


def decode_snapshot(data: bytes) -> tuple[bytes, bytes]:
    version, namespace_data, addresses = msgpack.unpackb(data, raw=False)
    assert version == SNAPSHOT_FORMAT_VERSION, f"unknown snapshot format {version}"
    return namespace_data, addresses
