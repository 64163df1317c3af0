"""A leader writes its own entries without a flush while its followers can commit them alone
(node/replicator/driver.py, OWN ENTRIES): the core does not count the leader for them until
they are flushed, and anything that needs them durable flushes them first."""

import math

from raft_harness import NOW_SECONDS, Cluster, _Outbox, _TranscriptDriver, _TranscriptMachine

from node.raft.types import Message, MessageKind, Role

FLUSH_SECONDS = 0.01


def _flushing_leader(unflushed_from: int = 1) -> tuple[Cluster, _TranscriptDriver]:
    cluster = Cluster("abc")
    cluster.elect("a")
    cluster.propose("a", b"first")  # both followers replicating, and just heard from
    node = cluster.nodes["a"]
    outbox = _Outbox()
    driver = _TranscriptDriver(node, cluster.disks["a"], _TranscriptMachine(), outbox, outbox, node_id="a",
                               incarnation=b"own", applied_index=node.log.applied, read_timeout_seconds=math.inf,
                               own_entries_flush_seconds=FLUSH_SECONDS, peer_fresh_seconds=1.0,
                               own_entries_unflushed_from=unflushed_from)
    driver.read_states = cluster.read_states["a"]
    driver.outbox = outbox
    driver.last_contact.update({"b": NOW_SECONDS, "c": NOW_SECONDS})
    cluster.drivers["a"] = driver
    return cluster, driver


def _lost_on_power_loss(cluster: Cluster, node_id: str, index: int) -> bool:
    """Whether `index` would be gone from node_id's disk after a power loss (left unflushed).
    The disk is put back afterwards."""
    disk = cluster.disks[node_id]
    image = disk._image()
    undo = list(disk._undo_images)
    disk.power_loss(lose_all=True)
    lost = disk.storage.last_index() < index
    storage = disk.storage
    storage._hard_state, storage._conf_state, storage._snapshot, entries, applied, disk.applied_index = image
    storage._entries, disk.applied, disk._undo_images = entries, applied, undo
    return lost


def _appends(messages: list[Message], target: str) -> list[Message]:
    return [m for m in messages if m.kind == MessageKind.APPEND and m.target == target]


def _acked(cluster: Cluster, appends: list[Message]) -> None:
    """Deliver the appends, then their acknowledgements to the leader."""
    replies = cluster.deliver(appends)
    cluster.deliver([m for m in replies if m.kind == MessageKind.APPEND_RESPONSE and m.target == "a"])


def test_the_leader_leaves_its_entry_unflushed_and_needs_both_followers_to_commit_it():
    cluster, driver = _flushing_leader()
    a = cluster.nodes["a"]
    index = a.propose(b"x")[1]
    appends = cluster.process("a")
    assert _lost_on_power_loss(cluster, "a", index), "the leader flushed its own entry with the write"
    assert a.tracker.progress["a"].match < index  # not counted: its copy is not durable
    _acked(cluster, _appends(appends, "b"))  # b acks durably
    assert a.log.committed < index, "committed on one durable copy and the leader's unflushed one"
    _acked(cluster, _appends(appends, "c"))
    assert a.log.committed >= index  # the followers' durable acks alone: a majority
    assert _lost_on_power_loss(cluster, "a", index)  # still no flush on the leader


def test_the_leader_flushes_at_once_when_a_follower_was_not_heard_from():
    cluster, driver = _flushing_leader()
    driver.last_contact["c"] = NOW_SECONDS - 2.0  # silent beyond peer_fresh_seconds
    a = cluster.nodes["a"]
    index = a.propose(b"x")[1]
    appends = cluster.process("a")
    assert not _lost_on_power_loss(cluster, "a", index)
    assert a.tracker.progress["a"].match >= index
    _acked(cluster, _appends(appends, "b"))
    assert a.log.committed >= index  # the leader and b


def test_unflushed_entries_are_flushed_after_own_entries_flush_seconds():
    cluster, driver = _flushing_leader()
    a = cluster.nodes["a"]
    index = a.propose(b"x")[1]
    cluster.process("a")
    assert driver.own_entries_flush_due_at() == NOW_SECONDS + FLUSH_SECONDS
    driver.process(NOW_SECONDS + FLUSH_SECONDS / 2)
    assert _lost_on_power_loss(cluster, "a", index)
    driver.process(NOW_SECONDS + FLUSH_SECONDS)
    assert not _lost_on_power_loss(cluster, "a", index)
    assert a.tracker.progress["a"].match >= index and driver.own_entries_flush_due_at() is None


def test_a_leader_that_steps_down_flushes_before_it_answers():
    cluster, driver = _flushing_leader()
    a = cluster.nodes["a"]
    index = a.propose(b"x")[1]
    cluster.process("a")
    assert _lost_on_power_loss(cluster, "a", index)
    # A leader of a later term appends after a's last entry: a steps down, and its ack (sent
    # after persisting) must not rest on a log a power loss could still shorten.
    append = Message(kind=MessageKind.APPEND, source="c", target="a", term=a.term + 1, index=index,
                     log_term=a.log.term(index), commit=index - 1)
    driver.step(append, NOW_SECONDS)
    assert a.role == Role.FOLLOWER
    answers = cluster.process("a")
    assert any(m.kind == MessageKind.APPEND_RESPONSE and not m.reject for m in answers)
    assert not _lost_on_power_loss(cluster, "a", index)


def test_a_lightly_loaded_leader_flushes_in_the_batch_and_commits_with_one_follower():
    cluster, driver = _flushing_leader(unflushed_from=3)
    a = cluster.nodes["a"]
    index = a.propose(b"x")[1]
    a.propose(b"y")
    appends = cluster.process("a")  # a Ready of two entries: below the threshold
    assert not _lost_on_power_loss(cluster, "a", index + 1)
    _acked(cluster, _appends(appends, "b"))
    assert a.log.committed >= index + 1  # the leader's durable copy and b's
    for value in (b"p", b"q", b"r"):
        last = a.propose(value)[1]
    cluster.process("a")  # three entries: left unflushed
    assert _lost_on_power_loss(cluster, "a", last)
