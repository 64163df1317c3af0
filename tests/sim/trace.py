"""The run's trace: a hash over every event (the determinism check) and, when verbose, a log."""

from __future__ import annotations

import hashlib
import sys
from typing import TextIO

from node.raft.types import Message


def describe_message(message: Message) -> str:
    parts = [
        f"{message.kind.name} {message.source}->{message.target} t{message.term}",
        f"lt{message.log_term} i{message.index} c{message.commit}",
    ]
    if message.entries:
        parts.append(f"entries={message.entries[0].index}..{message.entries[-1].index}")
    if message.reject:
        parts.append(f"reject hint=({message.reject_hint_index},{message.reject_hint_term})")
    if message.snapshot_meta is not None:
        parts.append(f"snap={message.snapshot_meta.index}@{message.snapshot_meta.term} off={message.snapshot_offset}")
    if message.context:
        parts.append(f"ctx={message.context!r}")
    return " ".join(parts)


class Trace:
    def __init__(self, verbose: bool = False, out: TextIO | None = None) -> None:
        self._hash = hashlib.sha256()
        self.verbose = verbose
        self._out = out or sys.stdout
        self.event_count = 0

    def record(self, now_ms: int, text: str) -> None:
        self.event_count += 1
        self._hash.update(f"{now_ms}|{text}\n".encode())
        if self.verbose:
            print(f"[{now_ms:>7}ms] {text}", file=self._out)

    def note(self, now_ms: int, text: str) -> None:
        """Commentary that is not an event (not hashed): shown only when verbose."""
        if self.verbose:
            print(f"[{now_ms:>7}ms]   {text}", file=self._out)

    def digest(self) -> str:
        return self._hash.hexdigest()
