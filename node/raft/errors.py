"""Operating errors the core raises to its caller. Each says when it happens.

Bugs are not errors: a broken invariant is an AssertionError and must crash loudly.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from node.raft.types import Message


class RaftError(Exception):
    """Base class of every error the core raises on purpose."""


class NotLeader(RaftError):
    """propose / membership change / transfer asked of a node that is not the leader.
    `leader_hint` is the node it believes leads now ("" when it knows none)."""

    def __init__(self, leader_hint: str) -> None:
        super().__init__(f"not the leader (leader: {leader_hint or 'unknown'})")
        self.leader_hint = leader_hint


class ProposalDropped(RaftError):
    """The leader refused a proposal: a leadership transfer is under way, or the uncommitted
    tail already holds uncommitted_bytes_max."""


class ConfChangeInProgress(RaftError):
    """A membership change was proposed while an earlier one is not yet applied (or the
    configuration is still joint)."""


class InvalidConfChange(RaftError):
    """The membership change makes no sense: removing an unknown node, leaving no voters,
    adding a node that is already in that role, ..."""


class TransferRefused(RaftError):
    """transfer_leadership named an unknown node, a learner, or the leader itself."""


class Compacted(RaftError):
    """Storage was asked for an index that a snapshot has already compacted away."""


class Unavailable(RaftError):
    """Storage was asked for an index beyond its last entry."""


class RejectedMessage(RaftError):
    """step() refused a peer's message that is malformed or contradicts this node's state
    (commit beyond the log end, a second leader in one term, a snapshot without meta, an
    acknowledgement of entries the leader never had, an absurd term, ...). Nothing changed:
    the driver drops the message and counts it. `lost_state` is False; see StateLost."""

    lost_state = False

    def __init__(self, message: "Message", reason: str) -> None:
        super().__init__(f"{message.kind.name} from {message.source!r} (term {message.term}) rejected: {reason}")
        self.kind = message.kind
        self.source = message.source
        self.reason = reason


class StateLost(RejectedMessage):
    """A peer proves that this node forgot state it had promised: the leader speaks of entries
    this node acknowledged, but its log holds nothing beyond the bootstrap snapshot (a
    heartbeat's commit lies beyond that log), or a peer saw this node hold a later term than it
    holds now (Message.promised_term). The node's data directory was most likely wiped or
    replaced. Rejected like any RejectedMessage; the driver should tell the operator that this
    node must be removed and added back as a new member."""

    lost_state = True

    def __init__(self, message: "Message", reason: str, *, promised_term: int = 0, held_term: int = 0) -> None:
        super().__init__(message, reason)
        self.promised_term = promised_term  # 0: the heartbeat's commit is the proof
        self.held_term = held_term
