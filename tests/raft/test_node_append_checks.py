"""A follower's checks of an APPEND with many entries: one bad entry anywhere among them is
refused with the sentence that names it, and changes nothing (the checks are made across all
entries at once, and the first bad entry is then found and named)."""

import pytest

from node.raft.errors import RaftError, RejectedMessage
from node.raft.message_checks import NUMBER_MAX, check_shape
from node.raft.types import ConfChange, ConfChangeKind, ConfChangeStep, Entry, EntryKind, Message, MessageKind
from raft_harness import Cluster, led_with_one_entry_committed

K = MessageKind
ENTRY_COUNT = 64
PREVIOUS_INDEX = 3  # the fixture's last entry, of term 2
LEADER_TERM = 4


@pytest.fixture
def cluster() -> Cluster:
    return led_with_one_entry_committed()


def entries(count: int = ENTRY_COUNT) -> list[Entry]:
    """Normal entries after index 3, of terms 2, 3 and 4 in turn (never decreasing)."""
    return [Entry(term=2 + position * 3 // count, index=PREVIOUS_INDEX + 1 + position, data=b"w%d" % position)
            for position in range(count)]


def append(batch: list[Entry], term: int = LEADER_TERM, log_term: int = 2) -> Message:
    return Message(kind=K.APPEND, source="a", target="b", term=term, log_term=log_term, index=PREVIOUS_INDEX,
                   entries=tuple(batch), commit=PREVIOUS_INDEX)


def assert_rejected(cluster: Cluster, message: Message, match: str) -> None:
    node = cluster.nodes["b"]
    before = (node.status(), node.has_ready(), node.log.last_index())
    with pytest.raises(RejectedMessage, match=match) as raised:
        node.step(message)
    assert (node.status(), node.has_ready(), node.log.last_index()) == before
    assert isinstance(raised.value, RaftError)


def test_many_good_entries_are_appended(cluster):
    node = cluster.nodes["b"]
    node.step(append(entries()))
    assert node.log.last_index() == PREVIOUS_INDEX + ENTRY_COUNT
    assert node.term == LEADER_TERM
    ready = node.ready()
    assert [entry.index for entry in ready.entries] == list(range(PREVIOUS_INDEX + 1, PREVIOUS_INDEX + 1 + ENTRY_COUNT))
    assert [message.index for message in ready.messages_after_persist] == [PREVIOUS_INDEX + ENTRY_COUNT]


POSITIONS = [0, ENTRY_COUNT // 2, ENTRY_COUNT - 1]


@pytest.mark.parametrize("position", POSITIONS)
def test_an_index_gap_anywhere_is_named(cluster, position):
    batch = entries()
    batch[position] = batch[position]._replace(index=batch[position].index + 1)
    previous = PREVIOUS_INDEX + position
    assert_rejected(cluster, append(batch), match=f"entry {previous + 2} does not follow {previous}$")


@pytest.mark.parametrize("position", POSITIONS[1:])
def test_a_repeated_index_is_named(cluster, position):
    batch = entries()
    batch[position] = batch[position]._replace(index=batch[position - 1].index)
    previous = batch[position - 1].index
    assert_rejected(cluster, append(batch), match=f"entry {previous} does not follow {previous}$")


@pytest.mark.parametrize("position", POSITIONS[1:])
def test_a_term_that_decreases_anywhere_is_named(cluster, position):
    batch = [entry._replace(term=3) for entry in entries()]
    batch[position - 1] = batch[position - 1]._replace(term=LEADER_TERM)
    index = batch[position].index
    assert_rejected(cluster, append(batch), match=f"entry {index} has term 3 after {LEADER_TERM}$")


def test_a_term_beyond_the_leaders_is_named(cluster):
    batch = entries()
    batch[-1] = batch[-1]._replace(term=LEADER_TERM + 1)
    assert_rejected(cluster, append(batch), match=f"entry {batch[-1].index} has term {LEADER_TERM + 1}")


def test_a_first_entry_older_than_the_previous_entry_is_named(cluster):
    batch = [entry._replace(term=3) for entry in entries()]
    batch[0] = batch[0]._replace(term=2)
    # log_term 3: the previous entry is of term 3, so an entry of term 2 cannot follow it.
    assert_rejected(cluster, append(batch, log_term=3), match=f"entry {PREVIOUS_INDEX + 1} has term 2 after 3")


def test_a_membership_change_that_does_not_decode_among_many_is_named(cluster):
    batch = entries()
    batch[40] = batch[40]._replace(kind=EntryKind.CONF_CHANGE, data=b"{not json")
    assert_rejected(cluster, append(batch), match=f"entry {batch[40].index} is not a membership change")


def test_a_membership_change_that_decodes_among_many_is_taken(cluster):
    change = ConfChange(steps=(ConfChangeStep(ConfChangeKind.ADD_LEARNER, "d"),))
    batch = entries()
    batch[40] = batch[40]._replace(kind=EntryKind.CONF_CHANGE, data=change.encode())
    cluster.nodes["b"].step(append(batch))
    assert cluster.nodes["b"].log.last_index() == PREVIOUS_INDEX + ENTRY_COUNT


def test_a_last_index_beyond_the_number_limit_is_named():
    start = NUMBER_MAX - 3
    batch = tuple(Entry(term=1, index=start + position) for position in range(4))
    message = Message(kind=K.APPEND, source="a", target="b", term=1, log_term=1, index=start - 1, entries=batch)
    with pytest.raises(RejectedMessage, match=r"entry index .* is outside \[0, 2\^62\)"):
        check_shape(message)
    check_shape(message._replace(entries=batch[:-1]))  # the last index NUMBER_MAX - 1 is fine
