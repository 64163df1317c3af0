"""Membership changes as one pure function: (current ConfState, ConfChange) -> new ConfState.

Rules: a change of the voter set goes through the joint configuration (voters_outgoing = the
old voters) and leaves it with LEAVE_JOINT; a learner-only change is applied directly. A
demoted voter may sit in voters_outgoing and learners at once while joint: it still votes for
the outgoing half until the joint configuration is left.
"""

from __future__ import annotations

from node.raft.errors import ConfChangeInProgress, InvalidConfChange
from node.raft.types import ConfChange, ConfChangeKind, ConfState


def apply_change(conf_state: ConfState, change: ConfChange) -> ConfState:
    """The configuration after `change`. Raises InvalidConfChange when it makes no sense and
    ConfChangeInProgress for anything but LEAVE_JOINT while the configuration is joint."""
    if not change.steps:
        raise InvalidConfChange("a membership change needs at least one step")
    kinds = [step.kind for step in change.steps]
    if ConfChangeKind.LEAVE_JOINT in kinds:
        if len(kinds) != 1:
            raise InvalidConfChange("LEAVE_JOINT must be the only step of its change")
        return leave_joint(conf_state)
    if conf_state.joint:
        raise ConfChangeInProgress("the configuration is joint; wait until it has been left")

    voters = set(conf_state.voters)
    learners = set(conf_state.learners)
    for step in change.steps:
        if not step.node:
            raise InvalidConfChange(f"{step.kind.name} needs a node id")
        if step.kind == ConfChangeKind.ADD_VOTER:
            if step.node in voters:
                raise InvalidConfChange(f"{step.node} is already a voter")
            learners.discard(step.node)
            voters.add(step.node)
        elif step.kind == ConfChangeKind.ADD_LEARNER:
            if step.node in learners:
                raise InvalidConfChange(f"{step.node} is already a learner")
            voters.discard(step.node)
            learners.add(step.node)
        else:
            assert step.kind == ConfChangeKind.REMOVE_NODE, step.kind
            if step.node not in voters and step.node not in learners:
                raise InvalidConfChange(f"{step.node} is not a member")
            voters.discard(step.node)
            learners.discard(step.node)
    if not voters:
        raise InvalidConfChange("the change would leave no voters")
    assert not voters & learners

    if voters == set(conf_state.voters):
        return ConfState(voters=conf_state.voters, learners=frozenset(learners))
    return ConfState(voters=frozenset(voters), voters_outgoing=conf_state.voters, learners=frozenset(learners))


def leave_joint(conf_state: ConfState) -> ConfState:
    if not conf_state.joint:
        raise InvalidConfChange("LEAVE_JOINT needs a joint configuration")
    # A demoted voter was in the outgoing half and the learners: now it is only a learner.
    return ConfState(voters=conf_state.voters, learners=conf_state.learners)
