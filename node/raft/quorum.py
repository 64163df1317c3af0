"""Quorum arithmetic: pure functions over a voter set and what each voter reported.

A joint configuration (`voters_outgoing` non-empty) decides only with a majority of BOTH
halves. An empty half agrees to everything, so the joint rules reduce to the simple ones.
"""

from __future__ import annotations

import enum
from typing import AbstractSet as Set, Mapping

from node.raft.types import NodeId


class VoteResult(enum.Enum):
    PENDING = 1  # neither a majority of yes nor of no yet
    WON = 2
    LOST = 3


# What an empty voter set "commits": anything, so min() over a joint config ignores it.
_UNBOUNDED_INDEX = 1 << 62


def majority_size(voter_count: int) -> int:
    return voter_count // 2 + 1


def majority_committed_index(voters: frozenset[NodeId], match: Mapping[NodeId, int]) -> int:
    """The highest index that a majority of `voters` has in `match` (missing voters count 0)."""
    if not voters:
        return _UNBOUNDED_INDEX
    indexes = sorted((match.get(voter, 0) for voter in voters), reverse=True)
    committed = indexes[majority_size(len(voters)) - 1]
    assert committed >= 0
    return committed


def committed_index(
    voters: frozenset[NodeId],
    match: Mapping[NodeId, int],
    voters_outgoing: frozenset[NodeId] = frozenset(),
) -> int:
    """The highest index acknowledged by a quorum of the (possibly joint) configuration."""
    assert voters or voters_outgoing, "a configuration without voters commits nothing"
    if not voters_outgoing:  # not joint (nearly always: asked per acknowledgement): one half
        return majority_committed_index(voters, match)
    committed = min(majority_committed_index(voters, match), majority_committed_index(voters_outgoing, match))
    assert committed < _UNBOUNDED_INDEX
    return committed


def majority_vote_result(voters: frozenset[NodeId], votes: Mapping[NodeId, bool]) -> VoteResult:
    """Votes from nodes outside `voters` are ignored; a missing vote is still pending."""
    if not voters:
        return VoteResult.WON
    granted = sum(1 for voter in voters if votes.get(voter) is True)
    rejected = sum(1 for voter in voters if votes.get(voter) is False)
    assert granted + rejected <= len(voters)
    needed = majority_size(len(voters))
    if granted >= needed:
        return VoteResult.WON
    if len(voters) - rejected < needed:
        return VoteResult.LOST
    return VoteResult.PENDING


def has_quorum(
    voters: frozenset[NodeId],
    nodes: Set[NodeId],
    voters_outgoing: frozenset[NodeId] = frozenset(),
) -> bool:
    """Whether `nodes` hold a majority of `voters` and one of `voters_outgoing` (an empty half
    agrees): what vote_result answers WON for when each of `nodes` voted yes and nobody no.
    Asked per read acknowledgement: set arithmetic, no vote map."""
    return ((not voters or 2 * len(voters & nodes) > len(voters))
            and (not voters_outgoing or 2 * len(voters_outgoing & nodes) > len(voters_outgoing)))


def vote_result(
    voters: frozenset[NodeId],
    votes: Mapping[NodeId, bool],
    voters_outgoing: frozenset[NodeId] = frozenset(),
) -> VoteResult:
    """The outcome of an election (or any yes/no poll) in a possibly joint configuration."""
    incoming = majority_vote_result(voters, votes)
    outgoing = majority_vote_result(voters_outgoing, votes)
    if incoming == outgoing:
        return incoming
    if VoteResult.LOST in (incoming, outgoing):
        return VoteResult.LOST
    return VoteResult.PENDING
