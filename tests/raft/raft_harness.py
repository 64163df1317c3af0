"""A tiny hand-driven network of RaftNodes for transcript-style tests.

Each node's Readys are carried out by the production driver (node/replicator/driver.py) over
the simulator's in-memory disk (tests/sim/disk.py), whose MemoryStorage the core reads. The
adapter below adds only what a transcript needs: the messages the driver sends are collected
instead of delivered (a test delivers them when it says so), the driver's clock stands still,
and every entry applied and every raw ReadState is recorded for the test to look at. Tests may
also call a core (`nodes[id]`) directly; a node or storage a test replaces gets a new driver.
"""

from __future__ import annotations

import math
import random
from typing import Callable, Iterable

from node.raft.memory_storage import MemoryStorage
from node.raft.node import RaftNode
from node.raft.types import Config, Entry, Message, MessageKind, ReadState, Role
from node.replicator.driver import Driver

from tests.sim.disk import Disk, SimStateMachine

FAST = dict(heartbeat_ticks=1, election_ticks_min=10, election_ticks_max=20)
NOW_SECONDS = 0.0  # transcripts have no clock


class _Outbox:
    """Transport and callbacks of one node's driver: sends are collected, callbacks ignored
    (the transcripts look at read_states and applied directly)."""

    def __init__(self) -> None:
        self.messages: list[Message] = []

    def send(self, message: Message) -> None:
        self.messages.append(message)

    def send_forward(self, leader: str, command: bytes) -> None:
        raise AssertionError("transcripts propose on the core directly")

    def set_peers(self, conf_state) -> None:
        pass

    def results_fixed(self, results) -> None:
        pass

    def applied(self, index, command, result) -> None:
        pass

    def conf_applied(self, index, term) -> None:
        pass

    def reads_ready(self, tokens) -> None:
        pass

    def reads_failed(self, tokens, error) -> None:
        pass

    def leader_changed(self, leader, term, is_self) -> None:
        pass


class _Recorder:
    """The disk's observer: every entry the driver applies, as the core handed it out."""

    def __init__(self, applied: list[Entry]) -> None:
        self._applied = applied

    def before_commit(self, batch, disk) -> None:
        pass

    def on_apply(self, entry: Entry, disk) -> None:
        self._applied.append(entry)

    def after_commit(self, batch, disk) -> None:
        pass


class _TranscriptMachine(SimStateMachine):
    """Transcripts snapshot whatever bytes they like: restore keeps no image."""

    def restore(self, batch, data: bytes) -> None:
        batch.restored = []


class _TranscriptDriver(Driver):
    """The driver, with the raw ReadStates of each Ready kept for the transcript (the driver
    itself only answers reads it registered)."""

    read_states: list[ReadState]

    def _handle_ready(self, ready, now_seconds):
        self.read_states.extend(ready.read_states)
        super()._handle_ready(ready, now_seconds)


class Cluster:
    def __init__(self, node_ids: Iterable[str], seed: int = 7, voters: Iterable[str] | None = None, **config) -> None:
        node_ids = list(node_ids)
        voters = node_ids if voters is None else list(voters)
        self.settings = {**FAST, **config}
        self.storages: dict[str, MemoryStorage] = {}
        self.disks: dict[str, Disk] = {}
        self.nodes: dict[str, RaftNode] = {}
        self.drivers: dict[str, _TranscriptDriver] = {}
        self.applied: dict[str, list[Entry]] = {}
        self.read_states: dict[str, list[ReadState]] = {}
        for position, node_id in enumerate(node_ids):
            self.add_node(node_id, seed + position, peers=voters)
        self.process_all()  # persist the bootstrap snapshot

    def add_node(self, node_id: str, seed: int, peers: Iterable[str] = ()) -> RaftNode:
        self.applied[node_id] = []
        self.read_states[node_id] = []
        self.disks[node_id] = disk = Disk()
        disk.observer = _Recorder(self.applied[node_id])
        self.storages[node_id] = disk.storage
        config = Config(node_id=node_id, **self.settings)
        self.nodes[node_id] = RaftNode(config, disk.storage, random.Random(seed), peers=peers)
        return self.nodes[node_id]

    def restart(self, node_id: str, seed: int = 99) -> RaftNode:
        """A crash and restart: only what was persisted survives."""
        disk = self.disks[node_id]
        config = Config(node_id=node_id, applied=disk.applied_index, **self.settings)
        self.nodes[node_id] = RaftNode(config, disk.storage, random.Random(seed))
        return self.nodes[node_id]

    def driver(self, node_id: str) -> _TranscriptDriver:
        """The node's driver, made anew when a test replaced its core (restart) or storage."""
        node, driver = self.nodes[node_id], self.drivers.get(node_id)
        if driver is not None and driver.core is node:
            return driver
        disk = self.disks[node_id]
        if disk.storage is not self.storages[node_id]:  # a test swapped the storage
            disk = self.disks[node_id] = Disk()
            disk.storage = self.storages[node_id]
            disk.observer = _Recorder(self.applied[node_id])
        outbox = _Outbox()
        driver = _TranscriptDriver(node, disk, _TranscriptMachine(), outbox, outbox, node_id=node_id,
                                   incarnation=b"transcript", applied_index=node.log.applied,
                                   read_timeout_seconds=math.inf)
        driver.read_states = self.read_states[node_id]
        driver.outbox = outbox
        self.drivers[node_id] = driver
        return driver

    def process(self, node_id: str) -> list[Message]:
        """Carry out every pending Ready of one node; the messages it wants sent."""
        driver = self.driver(node_id)
        while not driver.process(NOW_SECONDS):
            pass
        outgoing, driver.outbox.messages = driver.outbox.messages, []
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
                self.driver(message.target).step(message, NOW_SECONDS)
        return self.process_all()

    def stabilize(self, messages: Iterable[Message] = (), drop: Callable[[Message], bool] = lambda m: False,
                  rounds_max: int = 100) -> None:
        """Deliver until no message is left. A leader that committed more than its APPENDs
        told the followers sends it within two ticks: those ticks are part of settling (the
        first may send nothing: a heartbeat tick skips the followers whose APPENDs flow)."""
        pending = list(messages) + self.process_all()
        for _ in range(rounds_max):
            if not pending:
                committing = [node_id for node_id, node in sorted(self.nodes.items())
                              if node.role == Role.LEADER and node._outbox.commit_unsent]
                if not committing:
                    return
                pending = [message for node_id in committing for message in self.tick(node_id)]
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


def led_with_one_entry_committed() -> Cluster:
    """a leads b and c in term 2, with entries 2 (no-op) and 3 committed everywhere: the
    starting point of the tests that feed a follower crafted peer messages."""
    cluster = Cluster("abc")
    cluster.elect("a")
    cluster.propose("a", b"x")
    assert [cluster.nodes[n].log.committed for n in "abc"] == [3, 3, 3]
    return cluster


def kinds(messages: Iterable[Message]) -> list[tuple[str, str, str]]:
    """A compact transcript line per message: (kind, source, target)."""
    return [(message.kind.name, message.source, message.target) for message in messages]


def only(messages: Iterable[Message], kind: MessageKind) -> list[Message]:
    return [message for message in messages if message.kind == kind]
