"""Deliberately broken variants of the core, made in memory by tests (node/ is untouched), to
show that the simulator catches the bug class. Each is applied with pytest's monkeypatch.

If the core is restructured so that a mutant no longer breaks what it names (the tests that
use it then stop seeing a violation), update the mutant, not the expectation.
"""

from __future__ import annotations

from node.raft.log import RaftLog

# What the checker reports when a leader commits an entry of an earlier term by counting
# replicas (Raft paper, figure 8) and that entry is then overwritten.
FIGURE_8_VIOLATION = "leader completeness|state machine safety"


def _maybe_commit_without_the_term_check(self: RaftLog, index: int, term: int) -> bool:
    if index > self.committed:
        self.commit_to(index)
        return True
    return False


def drop_figure_8_rule(monkeypatch) -> None:
    """A leader commits whatever a quorum holds, even an entry of an earlier term."""
    monkeypatch.setattr(RaftLog, "maybe_commit", _maybe_commit_without_the_term_check)


# -- the driver (node/replicator/driver.py, the module production runs) -------------------


def send_promises_before_persisting(monkeypatch) -> None:
    """The driver sends Ready.messages_after_persist (vote grants, append acks) before the batch
    that backs them is written."""
    from node.replicator.driver import Driver

    persist = Driver._persist

    def persist_after_sending(self, ready, now_seconds):
        self._send(ready.messages_after_persist, now_seconds)  # (sent again after: a duplicate)
        return persist(self, ready, now_seconds)

    monkeypatch.setattr(Driver, "_persist", persist_after_sending)
