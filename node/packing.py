"""packb: msgpack.packb (use_bin_type=True) without building a Packer on every call.

msgpack.packb(value) constructs a Packer and its buffer per call, which costs about twice as
much as packing a small value; the write path packs several small values per write (the log
entry, the records, the session, the reply, the peer frame). A Packer is not thread-safe (the
chunk service's threads encode replies too), so each thread keeps its own. Packer.pack resets
its buffer after every call, also when packing raises, so a failed pack leaves nothing behind.
"""

from __future__ import annotations

import threading

import msgpack

_per_thread = threading.local()


def packb(value: object) -> bytes:
    try:  # an attribute read: cheaper than getattr(..., None) on every call
        packer = _per_thread.packer
    except AttributeError:  # this thread's first call
        packer = _per_thread.packer = msgpack.Packer(use_bin_type=True)
    return packer.pack(value)
