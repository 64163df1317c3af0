"""Deliberately broken variants of the core and of the driver, made in memory by tests (node/
is untouched on disk), to show that the simulator catches each bug class. Each is applied with
pytest's monkeypatch; MUTANTS lists them with what the checker reports.

If the core is restructured so that a mutant no longer breaks what it names (the tests that
use it then stop seeing a violation), update the mutant, not the expectation.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from node.raft import node as raft_node
from node.raft.log import RaftLog
from node.raft.node import RaftNode
from node.raft.read_only import ReadRequest
from node.raft.tracker import ProgressTracker
from node.raft.types import EntryKind, MessageKind, Role
from node.replicator.driver import Driver

from tests.sim.invariants import Checker

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
    persist = Driver._persist

    def persist_after_sending(self, ready, now_seconds, **parts):
        if parts.get("log", True):
            self._send(ready.messages_after_persist, now_seconds)  # (sent again after: a duplicate)
        return persist(self, ready, now_seconds, **parts)

    monkeypatch.setattr(Driver, "_persist", persist_after_sending)


def answer_before_commit(monkeypatch) -> None:
    """The driver answers clients as soon as their entries are in its own log (appended, not
    yet committed), as a reply sent too early in the apply batch would: a leader that then
    loses its log loses an acknowledged write."""
    persist = Driver._persist

    def persist_answering_early(self, ready, now_seconds, **parts):
        appended = [(entry.index, entry.data, {}) for entry in ready.entries if entry.kind == EntryKind.NORMAL]
        if appended and parts.get("log", True):
            self._callbacks.results_fixed(appended)
        return persist(self, ready, now_seconds, **parts)

    monkeypatch.setattr(Driver, "_persist", persist_answering_early)


def collide_read_contexts(monkeypatch) -> None:
    """Read contexts are a per-node counter from 1, as they were before contexts named their
    node and incarnation: two followers' reads collide at the leader (one is never answered),
    and an answer meant for a node's previous life matches a read of the new one."""

    def counter_only(self) -> bytes:
        self._read_counter += 1
        return self._read_counter.to_bytes(8, "big")

    monkeypatch.setattr(Driver, "_new_read_context", counter_only)


# -- the core ------------------------------------------------------------------------------


def accept_stale_term_append(monkeypatch) -> None:
    """A follower takes an APPEND from a leader of an older term as if it were current,
    overwriting entries it acknowledged to the real leader."""
    step = RaftNode.step

    def step_accepting_stale_appends(self, message):
        if (message.kind == MessageKind.APPEND and message.term < self.term and self.role != Role.LEADER
                and message.target == self.id):
            self._handle_append(message)
            return
        step(self, message)

    monkeypatch.setattr(RaftNode, "step", step_accepting_stale_appends)


def _with_learners(tracker: ProgressTracker):
    conf = tracker.conf_state
    return conf.voters | conf.learners, conf.voters_outgoing


def count_learners_in_the_quorum(monkeypatch) -> None:
    """Learners are members of the quorum set: for commits, elections and CheckQuorum."""
    from node.raft import quorum

    def committed_index(self) -> int:
        voters, outgoing = _with_learners(self)
        match = {node: progress.match for node, progress in self.progress.items()}
        return quorum.committed_index(voters, match, outgoing)

    def tally_votes(self):
        voters, outgoing = _with_learners(self)
        return quorum.vote_result(voters, self.votes, outgoing)

    def quorum_active(self, own_id) -> bool:
        voters, outgoing = _with_learners(self)
        active = {node: node == own_id or progress.recent_active for node, progress in self.progress.items()}
        return quorum.vote_result(voters, active, outgoing) == quorum.VoteResult.WON

    monkeypatch.setattr(ProgressTracker, "committed_index", committed_index)
    monkeypatch.setattr(ProgressTracker, "tally_votes", tally_votes)
    monkeypatch.setattr(ProgressTracker, "quorum_active", quorum_active)


def count_learner_acks_toward_the_majority(monkeypatch) -> None:
    """A learner's ack counts as a voter's: the majority is still that of the voters, but it may
    be made of learners."""

    def committed_index(self) -> int:
        conf = self.conf_state
        needed = len(conf.voters) // 2 + 1
        counted = sorted((self.progress[node].match for node in conf.voters | conf.learners
                          if node in self.progress), reverse=True)
        commit = counted[needed - 1] if len(counted) >= needed else 0
        if conf.voters_outgoing:
            from node.raft import quorum

            match = {node: progress.match for node, progress in self.progress.items()}
            commit = min(commit, quorum.committed_index(conf.voters_outgoing, match))
        return commit

    monkeypatch.setattr(ProgressTracker, "committed_index", committed_index)


def serve_read_index_without_heartbeat_round(monkeypatch) -> None:
    """The leader answers a ReadIndex at once, without confirming with a quorum that it still
    leads: a deposed leader that has not noticed serves stale reads."""
    handle = RaftNode._handle_read_request

    def answer_at_once(self, context: bytes, requester) -> None:
        if self.log.term_or_zero(self.log.committed) != self.term:
            handle(self, context, requester)  # still waits for its no-op (that rule is kept)
            return
        self._answer_read(ReadRequest(self.log.committed, context, requester))

    monkeypatch.setattr(RaftNode, "_handle_read_request", answer_at_once)


def serve_read_index_before_own_term_noop(monkeypatch) -> None:
    """A new leader takes its commit index as the read index before its own no-op committed:
    the index may lag writes the previous leader acknowledged."""

    def without_the_noop_wait(self, context: bytes, requester) -> None:
        if self.tracker.is_single_voter(self.id):
            self._answer_read(ReadRequest(self.log.committed, context, requester))
            return
        self.read_only.add_request(self.log.committed, context, requester, self.id)
        if not self.read_only.round_in_flight():
            self._broadcast_heartbeat()

    monkeypatch.setattr(RaftNode, "_handle_read_request", without_the_noop_wait)


def send_vote_before_persisting(monkeypatch) -> None:
    """A vote grant leaves with Ready.messages, before the vote is on disk; the checker's direct
    "vote sent before its disk write" check is switched off, so only end-to-end checks (one vote
    per node and term, one leader per term) can catch it."""
    monkeypatch.setattr(raft_node, "_AFTER_PERSIST_KINDS", raft_node._AFTER_PERSIST_KINDS - {MessageKind.VOTE_RESPONSE})
    monkeypatch.setattr(Checker, "check_vote_before_disk_write", False)


@dataclass(frozen=True)
class Mutant:
    name: str
    apply: Callable
    violation: str  # a regular expression the violation must match


# Every mutant, and what the checker must say about it (bin/sim's default seeds must catch each).
MUTANTS = (
    Mutant("figure 8 rule dropped", drop_figure_8_rule, FIGURE_8_VIOLATION),
    Mutant("stale-term APPEND accepted by a follower", accept_stale_term_append,
           "overwrote entry|state machine safety|leader completeness|log matching|raised"),
    Mutant("learners in the quorum set", count_learners_in_the_quorum,
           "leader completeness|state machine safety|acknowledged write|two leaders|stale read|no single leader"),
    Mutant("a learner's ack counted toward the voter majority", count_learner_acks_toward_the_majority,
           "leader completeness|state machine safety|acknowledged write|stale read"),
    Mutant("ReadIndex without the heartbeat round", serve_read_index_without_heartbeat_round, "stale read"),
    Mutant("ReadIndex before the own-term no-op", serve_read_index_before_own_term_noop, "stale read"),
    # (or the voter, back from a power loss, is told by the candidate that it forgot the term
    # it voted in: Message.promised_term, and it stops)
    Mutant("vote sent before it is persisted (direct check off)", send_vote_before_persisting,
           "granted its term-\\d+ vote to both|two leaders in term|DiskLost.*saw it hold term"),
    Mutant("read contexts that collide", collide_read_contexts, "stale read|requester went unanswered"),
    Mutant("driver sends promises before persisting", send_promises_before_persisting, "before the disk write"),
    Mutant("clients answered before their entries commit", answer_before_commit, "acknowledged write|stale read"),
)
