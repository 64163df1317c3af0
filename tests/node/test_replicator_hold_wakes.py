"""A follower that holds committed entries back (Driver, APPLY_HOLD_ENTRIES_MAX) wakes when
the hold ends, not for the ticks before it, and applies in the turn in which the hold ended.
No timing is asserted: each test reads the replicator's own answers for given `now` values."""

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
    store = NodeStore(tmp_path / "n1", 1 << 26)
    made = RaftReplicator(ClusterConfig(nodes=nodes), "n1", store, Namespace(store.env, session_ttl_ns=10**12),
                          _Callbacks(), context)
    yield made
    made.close()
    store.close()


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


def _append(replicator: RaftReplicator, context: zmq.Context, index: int, log_term: int, entries: tuple,
            commit: int) -> float:
    _deliver(replicator, context, Message(kind=MessageKind.APPEND, source=LEADER, target="n1", term=LEADER_TERM,
                                          index=index, log_term=log_term, entries=entries, commit=commit))
    heard_at = replicator.driver.last_contact[LEADER]
    replicator.run(heard_at)
    return heard_at


def _holding_follower(replicator: RaftReplicator, context: zmq.Context) -> float:
    """n1 follows n2, and holds entry 2 back, committed: when the hold began."""
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
