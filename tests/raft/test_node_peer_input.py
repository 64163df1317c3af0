"""Peer input the core refuses: each message here once crashed a node with an AssertionError
(or was obeyed). step() now raises RejectedMessage and changes nothing."""

import pytest

from node.raft.errors import RaftError, RejectedMessage, StateLost
from node.raft.memory_storage import MemoryStorage
from node.raft.message_checks import NUMBER_MAX
from node.raft.node import RaftNode
from node.raft.types import (
    ConfChange,
    ConfChangeKind,
    ConfChangeStep,
    ConfState,
    Config,
    Entry,
    EntryKind,
    Message,
    MessageKind,
    SnapshotMeta,
)
from raft_harness import FAST, Cluster, led_with_one_entry_committed

import random

K = MessageKind


def observable(node: RaftNode) -> tuple:
    """Everything a rejected message must leave as it was."""
    return (node.status(), node.has_ready(), node.election_elapsed_ticks, node.snapshot_receiver)


def assert_rejected(node: RaftNode, message: Message, error=RejectedMessage, match: str | None = None) -> RejectedMessage:
    before = observable(node)
    with pytest.raises(error, match=match) as raised:
        node.step(message)
    assert observable(node) == before
    assert isinstance(raised.value, RaftError) and str(raised.value).startswith(message.kind.name)
    return raised.value


@pytest.fixture
def cluster() -> Cluster:
    return led_with_one_entry_committed()


def message(kind: MessageKind, source: str, target: str, term: int = 2, **fields) -> Message:
    return Message(kind=kind, source=source, target=target, term=term, **fields)


# -- a follower refuses what no leader could send ------------------------------------------------


def test_heartbeat_with_commit_beyond_the_log_end_is_rejected(cluster):
    error = assert_rejected(cluster.nodes["b"], message(K.HEARTBEAT, "a", "b", commit=413), match="beyond the log end 3")
    assert not error.lost_state


def test_heartbeat_to_a_node_whose_disk_was_wiped_raises_state_lost(cluster):
    # b's data directory is replaced by an empty one: it bootstraps again at term 1, index 1.
    cluster.storages["b"] = MemoryStorage()
    wiped = RaftNode(Config(node_id="b", **FAST), cluster.storages["b"], random.Random(1), peers="abc")
    error = assert_rejected(wiped, message(K.HEARTBEAT, "a", "b", term=2, commit=3), StateLost)
    assert error.lost_state and wiped.term == 1


def test_a_second_leader_in_the_term_is_rejected_by_the_leader(cluster):
    a = cluster.nodes["a"]
    assert_rejected(a, message(K.HEARTBEAT, "c", "a"), match="two leaders in term 2: a and c")
    assert_rejected(a, message(K.APPEND, "c", "a", index=3, log_term=2))


def test_a_second_leader_in_the_term_is_rejected_by_a_follower(cluster):
    assert_rejected(cluster.nodes["b"], message(K.APPEND, "c", "b", index=3, log_term=2), match="a and c")


def test_install_snapshot_without_meta_is_rejected(cluster):
    assert_rejected(cluster.nodes["b"], message(K.INSTALL_SNAPSHOT, "a", "b", snapshot_done=True), match="without")


def test_append_entries_with_a_gap_or_not_following_the_previous_index_are_rejected(cluster):
    b = cluster.nodes["b"]
    gap = (Entry(term=2, index=4), Entry(term=2, index=6))
    assert_rejected(b, message(K.APPEND, "a", "b", index=3, log_term=2, entries=gap), match="6 does not follow 4")
    detached = (Entry(term=2, index=9),)
    assert_rejected(b, message(K.APPEND, "a", "b", index=3, log_term=2, entries=detached), match="9 does not follow 3")


def test_append_entries_with_terms_out_of_order_are_rejected(cluster):
    b = cluster.nodes["b"]
    backwards = (Entry(term=2, index=4), Entry(term=1, index=5))
    assert_rejected(b, message(K.APPEND, "a", "b", index=3, log_term=2, entries=backwards), match="term 1")
    future = (Entry(term=3, index=4),)
    assert_rejected(b, message(K.APPEND, "a", "b", index=3, log_term=2, entries=future), match="term 3")


def test_append_contradicting_the_committed_log_is_rejected(cluster):
    # Entry 3 is committed with term 2; a leader of a later term claiming term 1 there is lying.
    assert_rejected(cluster.nodes["b"], message(K.APPEND, "a", "b", term=2, index=3, log_term=1,
                                                entries=(Entry(term=2, index=4),)), match="committed")


@pytest.mark.parametrize("data", [b"\xff not json", b"[" * 100_000, b'{"steps": [[9, "d"]], "context": ""}',
                                  b'{"steps": [[1, 5]], "context": ""}', b'{"steps": [[1, "d"]], "context": "xyz"}'])
def test_a_membership_change_that_does_not_decode_is_rejected(cluster, data):
    garbage = (Entry(term=2, index=4, kind=EntryKind.CONF_CHANGE, data=data),)
    assert_rejected(cluster.nodes["b"], message(K.APPEND, "a", "b", index=3, log_term=2, entries=garbage),
                    match="entry 4")


def snapshot_chunk(meta: SnapshotMeta, data: bytes = b"", offset: int = 0, done: bool = True, term: int = 2) -> Message:
    return message(K.INSTALL_SNAPSHOT, "a", "b", term=term, snapshot_meta=meta, snapshot_offset=offset,
                   snapshot_data=data, snapshot_done=done)


def test_snapshot_whose_voters_and_learners_overlap_is_rejected(cluster):
    overlap = ConfState(voters=frozenset("abc"), learners=frozenset("c"))
    assert_rejected(cluster.nodes["b"], snapshot_chunk(SnapshotMeta(index=9, term=2, conf_state=overlap)),
                    match="overlap")


def test_snapshot_without_voters_is_rejected(cluster):
    assert_rejected(cluster.nodes["b"], snapshot_chunk(SnapshotMeta(index=9, term=2)), match="no voters")


def test_snapshot_chunks_beyond_the_announced_size_or_not_following_are_rejected(cluster):
    meta = SnapshotMeta(index=9, term=2, conf_state=ConfState(voters=frozenset("abc")), size_bytes=8)
    b = cluster.nodes["b"]
    b.step(snapshot_chunk(meta, b"1234", done=False))
    assert b.snapshot_receiver.received_bytes == 4
    assert_rejected(b, snapshot_chunk(meta, b"56789", offset=4, done=False), match="beyond the announced size 8")
    assert_rejected(b, snapshot_chunk(meta, b"56", offset=4, done=True), match="short of the size 8")
    assert_rejected(b, snapshot_chunk(meta, b"78", offset=6, done=True), match="offset 6 does not follow the 4 bytes")
    b.step(snapshot_chunk(meta, b"12", offset=0, done=False))  # a duplicate is answered, not refused
    assert b.snapshot_receiver.received_bytes == 4
    b.step(snapshot_chunk(meta, b"5678", offset=4, done=True))  # the honest last chunk still completes it
    assert b.log.unstable.snapshot.data == b"12345678"


# -- the leader refuses answers about entries it never had ----------------------------------------


@pytest.mark.parametrize("kind", [K.APPEND_RESPONSE, K.HEARTBEAT_RESPONSE])
def test_answer_claiming_an_index_beyond_the_leaders_log_is_rejected(cluster, kind):
    assert_rejected(cluster.nodes["a"], message(kind, "b", "a", index=10**12), match="beyond the leader's last index 3")


def test_snapshot_answer_asking_beyond_the_image_is_rejected():
    cluster = Cluster("abc", snapshot_chunk_bytes=4)
    cluster.elect("a")
    cluster.nodes["a"].propose(b"e")
    cluster.stabilize(drop=lambda m: "c" in (m.source, m.target))
    a, storage = cluster.nodes["a"], cluster.storages["a"]
    storage.create_snapshot(3, storage.initial_state()[1], b"0123456789")
    storage.compact(3)
    a.compacted(3)
    cluster.stabilize(cluster.tick("a", cluster.settings["heartbeat_ticks"]), drop=lambda m: m.kind == K.INSTALL_SNAPSHOT_RESPONSE)
    assert a.tracker.progress["c"].pending_snapshot == 3
    assert_rejected(a, message(K.INSTALL_SNAPSHOT_RESPONSE, "c", "a", index=3, snapshot_offset=11),
                    match="beyond the snapshot's 10 bytes")


# -- elections and leadership ---------------------------------------------------------------------


def test_timeout_now_from_anyone_but_the_leader_is_rejected(cluster):
    b = cluster.nodes["b"]
    assert_rejected(b, message(K.TIMEOUT_NOW, "c", "b"), match="two leaders")
    assert_rejected(b, message(K.TIMEOUT_NOW, "c", "b", term=3), match="later term")
    b.step(message(K.TIMEOUT_NOW, "a", "b"))  # from the leader it still starts an election
    assert (b.role.name, b.term) == ("CANDIDATE", 3)


def test_read_answers_and_requests_from_impossible_terms_are_rejected(cluster):
    assert_rejected(cluster.nodes["b"], message(K.READ_INDEX_RESPONSE, "a", "b", term=3, index=3, context=b"r"))
    assert_rejected(cluster.nodes["a"], message(K.READ_INDEX, "b", "a", term=3, context=b"r"), match="later term")
    assert_rejected(cluster.nodes["a"], message(K.READ_INDEX, "b", "a"), match="non-empty context")


@pytest.mark.parametrize("term", [NUMBER_MAX, 2**64 - 1])
def test_an_absurd_term_is_rejected_before_it_can_be_persisted(cluster, term):
    assert_rejected(cluster.nodes["b"], message(K.HEARTBEAT, "c", "b", term=term), match="term")
    assert_rejected(cluster.nodes["b"], message(K.VOTE, "c", "b", term=term, index=3, log_term=2), match="term")


@pytest.mark.parametrize("field", ["index", "commit", "log_term", "reject_hint_index", "snapshot_offset"])
def test_negative_or_huge_numbers_are_rejected(cluster, field):
    assert_rejected(cluster.nodes["b"], message(K.APPEND, "a", "b", **{field: -1}), match=field)
    assert_rejected(cluster.nodes["b"], message(K.APPEND, "a", "b", **{field: NUMBER_MAX}), match=field)


def test_a_candidate_claiming_a_last_entry_from_a_later_term_is_rejected(cluster):
    assert_rejected(cluster.nodes["b"], message(K.PRE_VOTE, "c", "b", term=3, index=3, log_term=4), match="log_term")


def test_honest_traffic_still_flows_after_rejections(cluster):
    for forged in (message(K.HEARTBEAT, "a", "b", commit=413), message(K.APPEND_RESPONSE, "b", "a", index=10**12)):
        with pytest.raises(RejectedMessage):
            cluster.nodes[forged.target].step(forged)
    cluster.propose("a", b"after")
    assert [cluster.applied[n][-1].data for n in "abc"] == [b"after"] * 3


def test_membership_changes_still_replicate(cluster):
    change = ConfChange(steps=(ConfChangeStep(ConfChangeKind.ADD_LEARNER, "d"),))
    cluster.add_node("d", seed=40)
    cluster.nodes["a"].propose_membership_change(change)
    cluster.stabilize()
    assert cluster.nodes["b"].tracker.conf_state.learners == {"d"}


def test_only_answers_to_replication_are_held_against_the_leaders_log(cluster):
    # A pre-vote for the leader's own term may describe a longer log (found by bin/sim seed 725).
    cluster.nodes["a"].step(message(K.PRE_VOTE, "c", "a", index=8, log_term=2))
    assert cluster.nodes["a"].role.name == "LEADER"
