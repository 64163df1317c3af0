"""has_ready() and ready() agree: has_ready() is True exactly when ready() hands something out."""

import random

import pytest

from node.raft.errors import RaftError
from node.raft.node import RaftNode
from node.raft.types import Ready
from raft_harness import Cluster

EMPTY = Ready()


def check_agreement(node: RaftNode) -> None:
    """With nothing pending, ready() must come back empty (that nothing is left behind after
    ready() is asserted inside ready() itself)."""
    if node.has_ready():
        return
    ready = RaftNode.ready(node)  # not the wrapper below: this call is not after a True
    assert ready == EMPTY
    node.advance(ready)


def never_empty_when_pending(node: RaftNode) -> None:
    """Wrap node.ready (the driver calls it after has_ready() said True): never empty."""
    ready = node.ready

    def checked() -> Ready:
        result = ready()
        assert result != EMPTY, "has_ready() was True but ready() had nothing"
        return result

    node.ready = checked


@pytest.mark.parametrize("seed", range(8))
def test_has_ready_is_true_exactly_when_ready_hands_something_out(seed):
    rng = random.Random(seed)
    print(f"seed {seed}")
    cluster = Cluster("abcd"[: rng.choice([1, 3, 4])], seed=seed, message_bytes_max=rng.choice([1, 100, 1 << 20]),
                      inflight_messages_max=rng.choice([1, 2, 64]))
    for each in cluster.nodes.values():
        never_empty_when_pending(each)
    in_flight = []
    nonempty_when_pending = 0
    for step in range(300):
        node_id = rng.choice(sorted(cluster.nodes))
        node = cluster.nodes[node_id]
        action = rng.random()
        try:
            if action < 0.4:
                node.tick()
            elif action < 0.55:
                node.propose(b"value %d" % step)
            elif action < 0.6:
                node.read_index(b"read %d" % step)
        except RaftError:
            pass  # not the leader, or no leader known
        if action >= 0.6 and in_flight:
            message = in_flight.pop(rng.randrange(len(in_flight)))
            if rng.random() < 0.9:  # a few are lost
                cluster.nodes[message.target].step(message)
        for each in cluster.nodes.values():
            check_agreement(each)
        pending = cluster.nodes[node_id].has_ready()
        sent = cluster.process(node_id)
        nonempty_when_pending += pending
        in_flight += sent
    assert nonempty_when_pending > 20  # the check above was not vacuous
    assert any(each.role.name == "LEADER" for each in cluster.nodes.values())
