"""Chunk ids, part of the wire contract: a chunk is named by the BLAKE2b-256 digest of its content.

Clients compute ids before sending a chunk and verify every chunk they read against its id;
nodes check the same on store. Both sides import this module (it needs nothing but hashlib),
so the client library does not depend on the node's chunk store.
"""

from __future__ import annotations

import hashlib

CHUNK_ID_BYTES = 32


def chunk_id_of(data: bytes | memoryview) -> bytes:
    """The id of a chunk: BLAKE2b with a 32-byte digest (hashlib releases the GIL meanwhile)."""
    return hashlib.blake2b(data, digest_size=CHUNK_ID_BYTES).digest()
