"""When the Raft replicator asks the node's loop to wake: a follower that hears its leader
sleeps through its ticks (they are counted when the next message wakes it, before that
message), and wakes on every tick again once the leader is late; a follower that holds
committed entries back (Driver, APPLY_HOLD_ENTRIES_MAX) wakes when the hold ends, not for the
ticks before it, and applies in the turn in which the hold ended. No timing is asserted: each
test reads the replicator's own answers for given `now` values."""

from __future__ import annotations

import socket
import time

import pytest
import zmq

from node.config import ClusterConfig, NodeAddress
from node.metadata.commands import new_command
from node.metadata.state_machine import Namespace
from node.raft.types import Entry, Message, MessageKind, Role
from node.replicator.raft import RaftReplicator
from node.storage.lmdb_store import NodeStore
from node.transport.codec import encode_message

LEADER = "n2"
LEADER_TERM = 5
POLL_DEADLINE_MS = 10_000


def _unused_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class _Callbacks:
    def results_fixed(self, results) -> None: ...
    def applied(self, index, decoded, result) -> None: ...
    def conf_applied(self, index, term) -> None: ...
    def reads_ready(self, tokens) -> None: ...
    def reads_failed(self, tokens, error) -> None: ...


@pytest.fixture
def replicator(tmp_path, context):
    nodes = tuple(
        NodeAddress(node_id, f"127.0.0.1:{_unused_port()}", f"127.0.0.1:{_unused_port()}",
                    f"127.0.0.1:{_unused_port()}", raft_bind="127.0.0.1:*" if node_id == "n1" else "")
        for node_id in ("n1", "n2", "n3")
    )
    config = ClusterConfig(nodes=nodes)
    store = NodeStore(tmp_path / "n1", 1 << 26)
    namespace = Namespace(store.env, session_ttl_ns=10**12)
    made = RaftReplicator(config, "n1", store, namespace, _Callbacks(), context)
    yield made
    made.close()
    store.close()


def _heartbeat(replicator: RaftReplicator) -> Message:
    return Message(kind=MessageKind.HEARTBEAT, source=LEADER, target="n1", term=LEADER_TERM,
                   commit=replicator.core.status().commit)


def _deliver(replicator: RaftReplicator, context: zmq.Context, message: Message) -> None:
    """Send `message` to the replicator's raft port as node n2 and let it read it."""
    sender = context.socket(zmq.DEALER)
    sender.setsockopt(zmq.LINGER, 0)
    sender.setsockopt(zmq.IDENTITY, LEADER.encode())
    sender.connect(f"tcp://{replicator.transport.peer.bound_address}")
    try:
        sender.send(encode_message(message))
        assert replicator.transport.peer.socket.poll(POLL_DEADLINE_MS), "the message never arrived"
        replicator.on_readable(replicator.transport.peer.socket)
    finally:
        sender.close(linger=0)


def _follow(replicator: RaftReplicator, context: zmq.Context) -> float:
    """Make the replicator a follower of n2 that just heard from it; the time it heard."""
    _deliver(replicator, context, _heartbeat(replicator))
    heard_at = replicator.driver.last_contact[LEADER]
    replicator.run(heard_at)
    assert replicator.core.role == Role.FOLLOWER and replicator.core.lead == LEADER
    assert not replicator.driver.has_work()
    return heard_at


def test_a_follower_that_hears_its_leader_sleeps_through_its_ticks(replicator, context):
    heard_at = _follow(replicator, context)
    tick_seconds = replicator._tick_seconds
    heartbeat_seconds = replicator._config.heartbeat_ticks * tick_seconds
    # Until the next heartbeat is a tick late, no tick needs the loop: it waits for the message.
    sleep_seconds = replicator.seconds_until_tick(heard_at)
    assert sleep_seconds > heartbeat_seconds
    assert sleep_seconds <= heartbeat_seconds + 2 * tick_seconds
    # A leader later than that: every tick counts towards the election again.
    late = heard_at + heartbeat_seconds + 2 * tick_seconds
    replicator.run(late)
    assert replicator.seconds_until_tick(late) <= tick_seconds


def test_ticks_slept_through_are_counted_before_the_message_that_wakes_the_follower(replicator, context):
    heard_at = _follow(replicator, context)
    elapsed_before = replicator.core.election_elapsed_ticks
    # The loop slept through several ticks; the heartbeat that wakes it ends that silence.
    replicator._next_tick_at = heard_at - 5 * replicator._tick_seconds
    _deliver(replicator, context, _heartbeat(replicator))
    replicator.run(replicator.driver.last_contact[LEADER])
    assert replicator.core.election_elapsed_ticks <= elapsed_before
    assert replicator.core.election_elapsed_ticks == 0


def test_a_follower_with_an_open_apply_batch_wakes_on_the_next_tick(replicator, context):
    heard_at = _follow(replicator, context)
    with replicator._measured_store.write_batch(durable=False):
        pass  # an apply-only batch: NodeStore keeps it open until a commit
    assert replicator.seconds_until_tick(heard_at) <= replicator._tick_seconds
    # Committed with the next durable batch (or by the loop a tick later): it sleeps again.
    with replicator._measured_store.write_batch(durable=True):
        pass
    assert replicator.seconds_until_tick(heard_at) > replicator._tick_seconds


def _append(replicator: RaftReplicator, context: zmq.Context, index: int, log_term: int, entries: tuple,
            commit: int) -> float:
    _deliver(replicator, context, Message(kind=MessageKind.APPEND, source=LEADER, target="n1", term=LEADER_TERM,
                                          index=index, log_term=log_term, entries=entries, commit=commit))
    heard_at = replicator.driver.last_contact[LEADER]
    replicator.run(heard_at)
    return heard_at


def _holding_follower(replicator: RaftReplicator, context: zmq.Context) -> float:
    """n1 follows n2, and holds entry 2 back, committed: when the hold began. The hold is one
    tick here (production holds APPLY_HOLD_TICKS): shorter than a follower's wake for its
    leader's heartbeats, so the hold's end is what the loop must wake for."""
    replicator.driver._apply_hold_seconds = replicator._tick_seconds
    command = new_command("mkdir", {"path": "/a", "client": "c", "seq": 1}, 1, args_validated=True)
    _append(replicator, context, 1, 1, (Entry(LEADER_TERM, 2, data=command.encode()),), 1)
    held_since = _append(replicator, context, 2, LEADER_TERM, (), 2)
    assert replicator.core.role == Role.FOLLOWER and replicator.core.lead == LEADER
    assert replicator.core.log.committed == 2 and replicator.driver.applied_index == 1
    assert replicator.driver.committed_held_until() is not None
    return held_since


def test_a_holding_follower_wakes_when_the_hold_ends_not_on_the_tick_before(replicator, context):
    held_since = _holding_follower(replicator, context)
    tick_seconds = replicator._tick_seconds
    held_until = replicator.driver.committed_held_until()
    assert held_until == pytest.approx(held_since + tick_seconds)
    # The next tick is due long before the hold ends: only the election counts it.
    replicator._next_tick_at = held_since + tick_seconds / 10
    if replicator._store.has_deferred:
        replicator._store.commit_deferred()  # (an apply-only batch open wakes it every tick)
    assert replicator.seconds_until_tick(held_since) == pytest.approx(held_until - held_since)


def test_a_hold_that_ends_during_a_turn_is_applied_in_that_turn(replicator, context):
    held_since = _holding_follower(replicator, context)
    held_until = replicator.driver.committed_held_until()
    while time.monotonic() < held_until:
        pass  # (at most one tick)
    replicator.run(held_since)  # a turn that began before the hold ended, and ends after it
    assert replicator.driver.applied_index == 2
    assert replicator.driver.committed_held_until() is None


@pytest.fixture
def single_voter(tmp_path, context):
    nodes = (NodeAddress("n1", "127.0.0.1:1", f"127.0.0.1:{_unused_port()}", f"127.0.0.1:{_unused_port()}",
                         raft_bind="127.0.0.1:*"),)
    store = NodeStore(tmp_path / "n1", 1 << 26)
    made = RaftReplicator(ClusterConfig(nodes=nodes), "n1", store, Namespace(store.env, session_ttl_ns=10**12),
                          _Callbacks(), context)
    yield made
    made.close()
    store.close()


def _lead(replicator: RaftReplicator) -> float:
    """Tick the single voter through its election timeout until it leads; the time it did."""
    now = replicator._next_tick_at
    for _ in range(3 * replicator._config.election_ticks_max):
        replicator.run(now)
        if replicator.core.role == Role.LEADER and not replicator.driver.has_work():
            return now
        now += replicator._tick_seconds
    raise AssertionError("the single voter never became leader")


def test_a_leader_sleeps_until_its_heartbeat_tick_unless_it_committed(single_voter):
    replicator = single_voter
    heartbeat_ticks = replicator._config.heartbeat_ticks
    assert heartbeat_ticks >= 2, "the default config has ticks between heartbeats"
    now = _lead(replicator)
    tick_seconds = replicator._tick_seconds
    # Run up to a heartbeat tick: the next one is heartbeat_ticks ticks away, not one.
    while replicator.core.heartbeat_elapsed_ticks != 0 or replicator._measured_store.deferred:
        now += tick_seconds
        replicator.run(now)
    assert replicator._next_tick_at == pytest.approx(now + tick_seconds)
    assert replicator.seconds_until_tick(now) == pytest.approx(heartbeat_ticks * tick_seconds)
    # A write commits between heartbeats: the loop wakes on the next tick (its apply-only
    # batch waits to commit; a commit no APPEND carried goes to the followers a tick later).
    command = new_command("mkdir", {"path": "/a", "client": "c", "seq": 1}, 1, args_validated=True)
    replicator.replicate(command.encode(), command)
    replicator.run(now)
    assert replicator.core.status().commit > 1
    # (approx: `now` is the monotonic clock plus ticks added one by one, rounded at each step)
    assert replicator.seconds_until_tick(now) <= tick_seconds + 1e-9
