"""A tiny hand-driven network of RaftNodes for transcript-style tests.

Each node's Ready is carried out in the documented order: persist to its MemoryStorage
(snapshot, entries, hard state), collect the messages, apply committed entries, advance.
Messages are delivered only when a test says so, so every test is a deterministic transcript.
"""

from __future__ import annotations

import random
from typing import Callable, Iterable

from node.raft.memory_storage import MemoryStorage
from node.raft.node import RaftNode
from node.raft.types import Config, Entry, Message, MessageKind, ReadState

FAST = dict(heartbeat_ticks=1, election_ticks_min=10, election_ticks_max=20)


class Cluster:
    def __init__(self, node_ids: Iterable[str], seed: int = 7, voters: Iterable[str] | None = None, **config) -> None:
        node_ids = list(node_ids)
        voters = node_ids if voters is None else list(voters)
        self.settings = {**FAST, **config}
        self.storages: dict[str, MemoryStorage] = {}
        self.nodes: dict[str, RaftNode] = {}
        self.applied: dict[str, list[Entry]] = {}
        self.read_states: dict[str, list[ReadState]] = {}
        for position, node_id in enumerate(node_ids):
            self.add_node(node_id, seed + position, peers=voters)
        self.process_all()  # persist the bootstrap snapshot

    def add_node(self, node_id: str, seed: int, peers: Iterable[str] = ()) -> RaftNode:
        self.storages[node_id] = MemoryStorage()
        config = Config(node_id=node_id, **self.settings)
        self.nodes[node_id] = RaftNode(config, self.storages[node_id], random.Random(seed), peers=peers)
        self.applied[node_id] = []
        self.read_states[node_id] = []
        return self.nodes[node_id]

    def restart(self, node_id: str, seed: int = 99) -> RaftNode:
        """A crash and restart: only what was persisted survives."""
        applied_index = self.applied[node_id][-1].index if self.applied[node_id] else 0
        applied_index = max(applied_index, self.storages[node_id].snapshot().meta.index)
        config = Config(node_id=node_id, applied=applied_index, **self.settings)
        self.nodes[node_id] = RaftNode(config, self.storages[node_id], random.Random(seed))
        return self.nodes[node_id]

    def process(self, node_id: str) -> list[Message]:
        """Carry out every pending Ready of one node; the messages it wants sent."""
        node = self.nodes[node_id]
        storage = self.storages[node_id]
        outgoing: list[Message] = []
        while node.has_ready():
            ready = node.ready()
            if ready.snapshot is not None:
                storage.apply_snapshot(ready.snapshot)
            storage.append(ready.entries)
            if ready.hard_state is not None:
                storage.set_hard_state(ready.hard_state)
            outgoing += ready.messages
            outgoing += ready.messages_after_persist
            self.applied[node_id] += ready.committed_entries
            if ready.conf_state is not None:
                storage.set_conf_state(ready.conf_state)
            self.read_states[node_id] += ready.read_states
            node.advance(ready)
        return outgoing

    def process_all(self) -> list[Message]:
        outgoing: list[Message] = []
        for node_id in sorted(self.nodes):
            outgoing += self.process(node_id)
        return outgoing

    def deliver(self, messages: Iterable[Message], drop: Callable[[Message], bool] = lambda m: False) -> list[Message]:
        """Step each message into its target, then process every node: the replies."""
        for message in messages:
            if message.target in self.nodes and not drop(message):
                self.nodes[message.target].step(message)
        return self.process_all()

    def stabilize(self, messages: Iterable[Message] = (), drop: Callable[[Message], bool] = lambda m: False,
                  rounds_max: int = 100) -> None:
        pending = list(messages) + self.process_all()
        for _ in range(rounds_max):
            if not pending:
                return
            pending = self.deliver(pending, drop)
        raise AssertionError("the cluster did not settle")

    def tick(self, node_id: str, ticks: int = 1) -> list[Message]:
        for _ in range(ticks):
            self.nodes[node_id].tick()
        return self.process(node_id)

    def elect(self, node_id: str) -> None:
        """Make node_id campaign now and deliver everything until the cluster settles."""
        node = self.nodes[node_id]
        self.stabilize(self.tick(node_id, node.randomized_election_ticks - node.election_elapsed_ticks))

    def propose(self, node_id: str, data: bytes) -> tuple[int, int]:
        result = self.nodes[node_id].propose(data)
        self.stabilize()
        return result


def kinds(messages: Iterable[Message]) -> list[tuple[str, str, str]]:
    """A compact transcript line per message: (kind, source, target)."""
    return [(message.kind.name, message.source, message.target) for message in messages]


def only(messages: Iterable[Message], kind: MessageKind) -> list[Message]:
    return [message for message in messages if message.kind == kind]
