"""Keep freed chunk-sized buffers in the process instead of handing them back to the kernel.

Each chunk crosses several multi-megabyte buffers that live for one message: the bytes read
from LMDB, and inside ZeroMQ's I/O thread CurveZMQ's plaintext and ciphertext buffers and the
message it builds. glibc's default policy returns such memory to the kernel when it is freed
(a dynamic mmap threshold, and a trim threshold of twice that), so the next chunk's buffers
are fresh pages: a page fault, a zeroed page and a cgroup charge per 4 KiB, on every chunk,
on both ends of every hop. A profile of a 256 MiB get showed that in the ZeroMQ I/O threads
of every node and the client; with the thresholds below node CPU per MB fell by about a fifth.

Fixed thresholds keep allocations under MMAP_THRESHOLD_BYTES on the heap and let up to
TRIM_THRESHOLD_BYTES of free memory stay mapped for reuse: a process moving chunks keeps a
few chunks' worth of memory it already paid for, never more than that bound. The limits are
process-wide and harmless elsewhere; on a C library without mallopt nothing changes.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import threading

# glibc's mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
# Below glibc's own maximum for the mmap threshold (32 MiB on 64-bit): a 4 MiB chunk and its
# encrypted copy come from the heap; a frame near frame_bytes_max (64 MiB) is still mapped
# on its own and returned when freed.
MMAP_THRESHOLD_BYTES = 32 << 20
# Free heap each allocator arena keeps for reuse: a few chunks in flight, each crossing three
# or so buffers in the I/O thread (3 x 3 x 4 MiB), with room to spare. A node that served a
# 256 MiB put and get held ~50 MiB more anonymous memory than at start.
TRIM_THRESHOLD_BYTES = 64 << 20

_lock = threading.Lock()
_applied: bool | None = None


def keep_freed_buffers() -> bool:
    """Apply the thresholds once per process; True if the C library took them."""
    global _applied
    with _lock:
        if _applied is None:
            _applied = _apply()
        return _applied


def _apply() -> bool:
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (musl has no mallopt): keep its defaults
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    # mallopt returns 1 on success, 0 on error.
    return bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)) and bool(
        mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES))
