"""node/large_buffers.py: freed chunk-sized buffers are reused instead of faulted in again.

Each check runs in a fresh interpreter, since the thresholds are process-wide and glibc's
defaults must be the starting point. The workload is what a chunk hop does in ZeroMQ's I/O
thread: a few 4 MiB buffers alive at once (plaintext, ciphertext, the message), touched and
freed, chunk after chunk; the figure is the process's minor page faults (a count, not a time).
"""

from __future__ import annotations

import platform
import subprocess
import sys

from node.large_buffers import keep_freed_buffers

CHUNKS = 16
_WORKLOAD = f"""
import resource, sys
from node.large_buffers import keep_freed_buffers
if sys.argv[1] == "keep":
    assert keep_freed_buffers()
def hop():
    buffers = [bytearray(4 << 20) for _ in range(3)]  # zero-filled: every page is touched
    return sum(len(buffer) for buffer in buffers)
hop()  # warm up: the first chunk's pages are new either way
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range({CHUNKS}):
    hop()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _faults_per_chunk(mode: str) -> float:
    done = subprocess.run([sys.executable, "-c", _WORKLOAD, mode], capture_output=True, text=True, check=True,
                          timeout=120)
    return int(done.stdout.strip()) / CHUNKS


def test_glibc_takes_the_thresholds_and_applying_twice_is_harmless():
    assert platform.libc_ver()[0] == "glibc", "the node's platform (Linux with glibc) is what this tunes"
    assert keep_freed_buffers() is True
    assert keep_freed_buffers() is True


def test_freed_chunk_buffers_are_reused_instead_of_faulted_in_again():
    pages_per_chunk = 3 * (4 << 20) // 4096
    default = _faults_per_chunk("default")
    kept = _faults_per_chunk("keep")
    # glibc's defaults give the pages back and fault most of them in again for every chunk.
    assert default > pages_per_chunk / 4, default
    assert kept < pages_per_chunk / 100, kept
