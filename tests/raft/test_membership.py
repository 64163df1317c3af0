import pytest

from node.raft.errors import ConfChangeInProgress, InvalidConfChange
from node.raft.membership import apply_change
from node.raft.types import ConfChange, ConfChangeKind, ConfChangeStep, ConfState

ADD_VOTER, ADD_LEARNER = ConfChangeKind.ADD_VOTER, ConfChangeKind.ADD_LEARNER
REMOVE, LEAVE = ConfChangeKind.REMOVE_NODE, ConfChangeKind.LEAVE_JOINT


def change(*steps: tuple[ConfChangeKind, str]) -> ConfChange:
    return ConfChange(steps=tuple(ConfChangeStep(kind, node) for kind, node in steps))


def conf(voters: str, outgoing: str = "", learners: str = "") -> ConfState:
    return ConfState(voters=frozenset(voters), voters_outgoing=frozenset(outgoing), learners=frozenset(learners))


def test_adding_a_learner_is_direct():
    assert apply_change(conf("abc"), change((ADD_LEARNER, "d"))) == conf("abc", learners="d")


def test_adding_a_voter_enters_joint_consensus():
    assert apply_change(conf("abc"), change((ADD_VOTER, "d"))) == conf("abcd", outgoing="abc")


def test_promoting_a_learner():
    assert apply_change(conf("abc", learners="d"), change((ADD_VOTER, "d"))) == conf("abcd", outgoing="abc")


def test_demoting_a_voter_keeps_it_voting_in_the_outgoing_half():
    joint = apply_change(conf("abc"), change((ADD_LEARNER, "c")))
    assert joint == conf("ab", outgoing="abc", learners="c")
    assert apply_change(joint, change((LEAVE, ""))) == conf("ab", learners="c")


def test_removing_nodes():
    assert apply_change(conf("abc", learners="d"), change((REMOVE, "d"))) == conf("abc")
    joint = apply_change(conf("abc"), change((REMOVE, "a")))
    assert joint == conf("bc", outgoing="abc")
    assert apply_change(joint, change((LEAVE, ""))) == conf("bc")


def test_several_steps_apply_atomically():
    result = apply_change(conf("abc"), change((ADD_VOTER, "d"), (REMOVE, "a")))
    assert result == conf("bcd", outgoing="abc")


@pytest.mark.parametrize(
    "start, steps",
    [
        (conf("abc"), [(ADD_VOTER, "a")]),
        (conf("abc", learners="d"), [(ADD_LEARNER, "d")]),
        (conf("abc"), [(REMOVE, "z")]),
        (conf("a"), [(REMOVE, "a")]),
        (conf("abc"), [(LEAVE, "")]),
        (conf("abc"), []),
        (conf("abc"), [(ADD_VOTER, "")]),
        (conf("ab", outgoing="abc"), [(LEAVE, ""), (ADD_VOTER, "d")]),
    ],
)
def test_invalid_changes(start, steps):
    with pytest.raises(InvalidConfChange):
        apply_change(start, change(*steps))


def test_no_change_but_leaving_while_joint():
    with pytest.raises(ConfChangeInProgress):
        apply_change(conf("abcd", outgoing="abc"), change((ADD_LEARNER, "e")))
