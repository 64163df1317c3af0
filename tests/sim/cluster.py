"""The simulated cluster: nodes with disks, the driver that carries out each Ready, the
network and the clock. Scenario tests script it directly; chaos.py drives it randomly.

Driver model (one Ready at a time, as node/server.py does it):
  1. send Ready.messages (the contract allows them to leave before the disk write);
  2. persist snapshot, entries and hard state, and apply the committed entries with the
     applied index and conf state -- all in one write, so a crash sees all of it or none;
  3. send Ready.messages_after_persist; answer read states; advance().
A crash "during the disk write" (crash_during_next_write) happens between 1 and 2.
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable, Iterable

from node.raft.errors import RaftError
from node.raft.node import RaftNode
from node.raft.types import ConfChange, Config, EntryKind, Message, NodeId, Ready, Role, Status

from tests.sim.disk import Disk
from tests.sim.invariants import Checker, InvariantViolation
from tests.sim.network import LinkFaults, Network
from tests.sim.simulator import EventQueue
from tests.sim.trace import Trace, describe_message

# A core that keeps producing Readys for one event without settling is a bug.
READY_ROUNDS_PER_EVENT_MAX = 64
TICK_PERIOD_MS_DEFAULT = 10

# Small, quick settings: heartbeat every 5 ticks, election timeouts 15..30 ticks.
CONFIG_DEFAULTS = dict(heartbeat_ticks=5, election_ticks_min=15, election_ticks_max=30)


class CoreCrashed(InvariantViolation):
    """The core raised where it must not (step, tick, ready, advance): a bug in the core."""


@dataclass
class SimNode:
    node_id: NodeId
    tick_period_ms: int
    bootstrap_peers: tuple[NodeId, ...]
    disk: Disk = field(default_factory=Disk)
    raft: RaftNode | None = None
    incarnation: int = 0
    # The driver's view of the core, from Ready.soft_state / Ready.hard_state.
    role: Role = Role.FOLLOWER
    term: int = 0
    leader: NodeId = ""
    crash_during_next_write: bool = False
    # Proposals this incarnation made as leader and waits to see applied: index -> (term, value).
    pending: dict[int, tuple[int, bytes]] = field(default_factory=dict)

    @property
    def alive(self) -> bool:
        return self.raft is not None


class Cluster:
    # Mutation switch for the harness's own tests: a broken driver that sends the promised
    # messages before its disk write. The checker must catch it (test_checker.py).
    broken_driver_sends_promises_early = False

    def __init__(
        self,
        node_count: int | Iterable[NodeId] = 3,
        seed: int = 0,
        config: dict | None = None,
        tick_periods_ms: dict[NodeId, int] | None = None,
        verbose: bool = False,
        rng: random.Random | None = None,
    ) -> None:
        self.seed = seed
        self.rng = rng or random.Random(seed)
        self.clock = EventQueue()
        self.network = Network(self.rng)
        self.checker = Checker(self.clock)
        self.trace = Trace(verbose=verbose)
        self.config = dict(CONFIG_DEFAULTS, **(config or {}))
        self.nodes: dict[NodeId, SimNode] = {}
        self.sent_counts: Counter = Counter()  # MessageKind -> messages handed to the network
        self.read_results: dict[bytes, tuple[NodeId, int]] = {}
        self.leader_history: list[tuple[int, int, NodeId]] = []  # (time ms, term, leader)
        # Called as (leader, term) when a node's driver learns it became leader, in the middle
        # of carrying out that Ready: a listener may only schedule() actions, not act at once.
        self.leader_listeners: list[Callable[[NodeId, int], None]] = []
        # Called with each message once its target has stepped it and carried out the Readys.
        self.delivery_listeners: list[Callable[[Message], None]] = []
        self.value_counter = 0
        if isinstance(node_count, int):
            node_ids = [f"n{number}" for number in range(1, node_count + 1)]
        else:
            node_ids = list(node_count)
        periods = tick_periods_ms or {}
        for node_id in node_ids:
            self.add_node(node_id, peers=node_ids, tick_period_ms=periods.get(node_id, TICK_PERIOD_MS_DEFAULT))

    # -- time -------------------------------------------------------------------------------

    @property
    def now_ms(self) -> int:
        return self.clock.now_ms

    def election_timeout_ms(self) -> int:
        """The longest election timeout of any node: the unit liveness bounds are counted in."""
        period_ms = max(node.tick_period_ms for node in self.nodes.values())
        return self.config["election_ticks_max"] * period_ms

    def run_for(self, duration_ms: int) -> None:
        self.run_until(lambda: False, duration_ms)

    def run_until(self, predicate: Callable[[], bool], timeout_ms: int) -> bool:
        """Process events until `predicate()` holds (checked after every event) or the time is up."""
        deadline_ms = self.clock.now_ms + timeout_ms
        if predicate():
            return True
        while True:
            next_ms = self.clock.next_time_ms()
            if next_ms is None or next_ms > deadline_ms:
                self.clock.now_ms = deadline_ms
                return predicate()
            self._process(*self.clock.pop())
            if predicate():
                return True

    def _process(self, kind: str, payload) -> None:
        if kind == "tick":
            self._on_tick(payload)
        elif kind == "deliver":
            self._on_deliver(payload)
        elif kind == "call":
            payload()
        else:
            raise AssertionError(f"unknown event kind {kind}")

    def schedule(self, delay_ms: int, action: Callable[[], None]) -> None:
        """Run `action` at now + delay_ms (used by the random fault schedule)."""
        self.clock.schedule(delay_ms, "call", action)

    # -- nodes ------------------------------------------------------------------------------

    def add_node(self, node_id: NodeId, peers: Iterable[NodeId] = (), tick_period_ms: int | None = None) -> SimNode:
        """A new node with an empty disk, started at once. Without peers it waits to be added
        to the cluster by a membership change (it must not campaign on its own)."""
        assert node_id not in self.nodes, node_id
        node = SimNode(node_id, tick_period_ms or TICK_PERIOD_MS_DEFAULT, tuple(peers))
        self.nodes[node_id] = node
        self._start(node)
        # Random phase, so that nodes do not tick in lockstep.
        self.clock.schedule(self.rng.randint(1, node.tick_period_ms), "tick", node_id)
        return node

    def _start(self, node: SimNode) -> None:
        assert node.raft is None
        config = Config(node_id=node.node_id, applied=node.disk.applied_index, **self.config)
        core_rng = random.Random(self.rng.getrandbits(64))
        node.incarnation += 1
        node.role, node.term, node.leader = Role.FOLLOWER, node.disk.hard_state.term, ""
        node.crash_during_next_write = False
        node.pending = {}
        self._core(node, "start", lambda: setattr(node, "raft", RaftNode(config, node.disk.storage, core_rng, node.bootstrap_peers)))
        self._drain(node)

    def crash(self, node_id: NodeId, why: str = "") -> None:
        node = self.nodes[node_id]
        assert node.alive, f"{node_id} is already down"
        self.trace.record(self.now_ms, f"crash {node_id} {why}".rstrip())
        node.raft = None
        node.pending = {}
        node.role, node.leader = Role.FOLLOWER, ""

    def restart(self, node_id: NodeId) -> None:
        node = self.nodes[node_id]
        assert not node.alive, f"{node_id} is running"
        self.trace.record(self.now_ms, f"restart {node_id} applied={node.disk.applied_index}")
        self._start(node)

    def crash_during_next_write(self, node_id: NodeId) -> None:
        """Crash `node_id` in its next Ready, after Ready.messages left but before the write."""
        self.trace.record(self.now_ms, f"arm crash-during-write {node_id}")
        self.nodes[node_id].crash_during_next_write = True

    def live_nodes(self) -> list[NodeId]:
        return [node_id for node_id, node in self.nodes.items() if node.alive]

    def status(self, node_id: NodeId) -> Status:
        node = self.nodes[node_id]
        assert node.alive, node_id
        return self._core(node, "status", node.raft.status)

    # -- the core, called safely ------------------------------------------------------------

    def _core(self, node: SimNode, what: str, call: Callable):
        try:
            return call()
        except InvariantViolation:
            raise
        except Exception as error:  # any exception from these calls is a core bug
            raise CoreCrashed(f"at {self.now_ms}ms: core of {node.node_id} raised in {what}: {error!r}") from error

    def _on_tick(self, node_id: NodeId) -> None:
        node = self.nodes[node_id]
        self.clock.schedule(node.tick_period_ms, "tick", node_id)
        if not node.alive:
            return
        self.trace.record(self.now_ms, f"tick {node_id}")
        self._core(node, "tick", node.raft.tick)
        self._drain(node)

    def _on_deliver(self, message: Message) -> None:
        node = self.nodes.get(message.target)
        if node is None or not node.alive or not self.network.connected(message.source, message.target):
            self.trace.record(self.now_ms, f"lost {describe_message(message)}")
            return
        self.trace.record(self.now_ms, f"deliver {describe_message(message)}")
        self._core(node, f"step({message.kind.name})", lambda: node.raft.step(message))
        self._drain(node)
        for listener in self.delivery_listeners:
            listener(message)

    def _drain(self, node: SimNode) -> None:
        for _ in range(READY_ROUNDS_PER_EVENT_MAX):
            if node.raft is None or not self._core(node, "has_ready", node.raft.has_ready):
                return
            ready = self._core(node, "ready", node.raft.ready)
            self._carry_out(node, ready)
        raise CoreCrashed(f"at {self.now_ms}ms: {node.node_id} kept producing Readys ({READY_ROUNDS_PER_EVENT_MAX})")

    # -- the driver -------------------------------------------------------------------------

    def _carry_out(self, node: SimNode, ready: Ready) -> None:
        raft, disk, checker = node.raft, node.disk, self.checker
        if ready.hard_state is not None:
            node.term = ready.hard_state.term
        if ready.soft_state is not None:
            became_leader = ready.soft_state.role == Role.LEADER and node.role != Role.LEADER
            node.role, node.leader = ready.soft_state.role, ready.soft_state.leader
            self.trace.record(self.now_ms, f"{node.node_id} is {node.role.name} term {node.term} leader {node.leader!r}")
            if became_leader:
                self.leader_history.append((self.now_ms, node.term, node.node_id))
                for listener in self.leader_listeners:
                    listener(node.node_id, node.term)
        # 1. Messages without a promise may leave before the disk write.
        for message in ready.messages:
            self._send(node, message, promised=False)
        if self.broken_driver_sends_promises_early:
            for message in ready.messages_after_persist:
                self._send(node, message, promised=False)
        if node.crash_during_next_write:
            self.crash(node.node_id, "during its disk write")
            return
        # 2. One write: snapshot, entries, hard state, applied entries, applied index, conf state.
        checker.before_persist(node.node_id, node.role, node.term, ready, disk)
        if ready.snapshot is not None:
            self.trace.record(self.now_ms, f"{node.node_id} restores snapshot {ready.snapshot.meta.index}")
            disk.restore(ready.snapshot)
        disk.storage.append(ready.entries)
        if ready.hard_state is not None:
            disk.storage.set_hard_state(ready.hard_state)
        for entry in ready.committed_entries:
            checker.on_apply(node.node_id, entry, disk)
            disk.apply(entry)
            self._acknowledge(node, entry)
        if ready.conf_state is not None:
            disk.storage.set_conf_state(ready.conf_state)
        checker.after_persist(node.node_id, node.role, node.term, ready, disk)
        # 3. Messages that promise the persisted state, read answers, advance.
        for message in () if self.broken_driver_sends_promises_early else ready.messages_after_persist:
            self._send(node, message, promised=True)
        for read_state in ready.read_states:
            checker.on_read_state(node.node_id, read_state)
            self.read_results[read_state.context] = (node.node_id, read_state.index)
        self._core(node, "advance", lambda: raft.advance(ready))

    def _acknowledge(self, node: SimNode, entry) -> None:
        proposed = node.pending.pop(entry.index, None)
        if proposed is None:
            return
        term, value = proposed
        if entry.term == term and entry.kind == EntryKind.NORMAL and entry.data == value:
            self.checker.on_ack(value, entry.index)

    def _send(self, node: SimNode, message: Message, promised: bool) -> None:
        self.checker.on_send(node.node_id, message, node.disk, promised, self._leader_term_at_index)
        self.sent_counts[message.kind] += 1
        if not self.network.connected(message.source, message.target):
            return  # cut off already: save the event
        for delay_ms in self.network.delivery_delays_ms(message.source, message.target):
            self.clock.schedule(delay_ms, "deliver", message)

    def _leader_term_at_index(self, leader_id: NodeId, term: int, index: int) -> int | None:
        """The term the leader of `term` has at `index`, if it still leads and has it on disk."""
        leader = self.nodes.get(leader_id)
        if leader is None or not leader.alive or leader.role != Role.LEADER or leader.term != term:
            return None
        storage = leader.disk.storage
        if index < storage.first_index() or index > storage.last_index():
            return None
        return storage.term(index)

    # -- clients ----------------------------------------------------------------------------

    def new_value(self, prefix: str = "v") -> bytes:
        self.value_counter += 1
        return f"{prefix}{self.value_counter}".encode()

    def propose(self, node_id: NodeId, value: bytes) -> tuple[int, int]:
        """Propose on `node_id`; raises the core's NotLeader / ProposalDropped."""
        node = self.nodes[node_id]
        assert node.alive, node_id
        self.trace.record(self.now_ms, f"propose {value!r} to {node_id}")
        try:
            term, index = node.raft.propose(value)
        except RaftError as error:
            self.trace.note(self.now_ms, f"refused: {error!r}")
            raise
        node.pending[index] = (term, value)
        self._drain(node)
        return term, index

    def claimed_leaders(self) -> list[NodeId]:
        return [node_id for node_id, node in self.nodes.items() if node.alive and node.role == Role.LEADER]

    def propose_to_leader(self, value: bytes) -> tuple[NodeId, int, int] | None:
        """Propose to whoever claims to lead (the newest term first); None if none accepts."""
        for node_id in sorted(self.claimed_leaders(), key=lambda n: -self.nodes[n].term):
            try:
                term, index = self.propose(node_id, value)
            except RaftError:
                continue
            return node_id, term, index
        return None

    def is_acked(self, value: bytes) -> bool:
        return value in self.checker.acked

    def change_membership(self, node_id: NodeId, change: ConfChange) -> tuple[int, int]:
        node = self.nodes[node_id]
        assert node.alive, node_id
        steps = " ".join(f"{step.kind.name}:{step.node}" for step in change.steps)
        self.trace.record(self.now_ms, f"membership change {steps} on {node_id}")
        try:
            result = node.raft.propose_membership_change(change)
        except RaftError as error:
            self.trace.note(self.now_ms, f"refused: {error!r}")
            raise
        self._drain(node)
        return result

    def read_index(self, node_id: NodeId, context: bytes) -> None:
        node = self.nodes[node_id]
        assert node.alive, node_id
        self.trace.record(self.now_ms, f"read_index {context!r} on {node_id}")
        self.checker.on_read_request(context)
        try:
            node.raft.read_index(context)
        except RaftError as error:
            self.trace.note(self.now_ms, f"refused: {error!r}")
            raise
        self._drain(node)

    def transfer_leadership(self, node_id: NodeId, target: NodeId) -> None:
        node = self.nodes[node_id]
        assert node.alive, node_id
        self.trace.record(self.now_ms, f"transfer leadership {node_id} -> {target}")
        try:
            node.raft.transfer_leadership(target)
        except RaftError as error:
            self.trace.note(self.now_ms, f"refused: {error!r}")
            raise
        self._drain(node)

    def take_snapshot(self, node_id: NodeId, keep_entries: int = 0) -> int | None:
        """Snapshot `node_id`'s state machine at its applied index and compact its log."""
        node = self.nodes[node_id]
        assert node.alive, node_id
        compacted_index = node.disk.take_snapshot(keep_entries)
        self.trace.record(self.now_ms, f"snapshot {node_id} at {node.disk.applied_index} compacted to {compacted_index}")
        if compacted_index is not None:
            self._core(node, "compacted", lambda: node.raft.compacted(compacted_index))
            self._drain(node)
        return compacted_index

    # -- network (recorded in the trace) ----------------------------------------------------

    def isolate(self, node_id: NodeId) -> None:
        self.trace.record(self.now_ms, f"isolate {node_id}")
        self.network.isolate(node_id)

    def reconnect(self, node_id: NodeId) -> None:
        self.trace.record(self.now_ms, f"reconnect {node_id}")
        self.network.reconnect(node_id)

    def partition(self, *groups: Iterable[NodeId]) -> None:
        sets = [set(group) for group in groups]
        self.trace.record(self.now_ms, f"partition {[sorted(group) for group in sets]}")
        self.network.partition(sets)

    def block(self, source: NodeId, target: NodeId) -> None:
        self.trace.record(self.now_ms, f"block {source}->{target}")
        self.network.block(source, target)

    def heal(self) -> None:
        self.trace.record(self.now_ms, "heal")
        self.network.heal()

    def set_faults(self, faults: LinkFaults) -> None:
        self.trace.record(self.now_ms, f"faults {faults}")
        self.network.set_default_faults(faults)

    # -- observations for tests -------------------------------------------------------------

    def applied_values(self, node_id: NodeId) -> list[bytes]:
        """The NORMAL values `node_id` has applied, in order."""
        return [a.data for a in self.nodes[node_id].disk.applied if a.kind == EntryKind.NORMAL]

    def applied_at(self, node_id: NodeId, index: int):
        for applied in reversed(self.nodes[node_id].disk.applied):
            if applied.index == index:
                return applied
            if applied.index < index:
                return None
        return None

    def has_applied(self, node_id: NodeId, index: int) -> bool:
        return self.nodes[node_id].disk.applied_index >= index

    def single_leader(self, among: Iterable[NodeId] | None = None, min_term: int = 0) -> NodeId | None:
        """The one live node in `among` that claims to lead (in a term >= min_term), None if
        there are zero or several."""
        candidates = set(self.live_nodes() if among is None else among)
        leaders = [
            node_id
            for node_id in self.claimed_leaders()
            if node_id in candidates and self.nodes[node_id].term >= min_term
        ]
        return leaders[0] if len(leaders) == 1 else None

    def wait_for_leader(
        self, among: Iterable[NodeId] | None = None, timeout_ms: int | None = None, min_term: int = 0
    ) -> NodeId | None:
        """Run until exactly one node of `among` (default: live nodes) leads; a deposed leader
        that has not noticed yet can be skipped with min_term."""
        members = list(self.live_nodes() if among is None else among)
        timeout_ms = timeout_ms or 10 * self.election_timeout_ms()
        self.run_until(lambda: self.single_leader(members, min_term) is not None, timeout_ms)
        return self.single_leader(members, min_term)

    def commit_value(self, value: bytes | None = None, nodes: Iterable[NodeId] | None = None, timeout_ms: int | None = None) -> int | None:
        """Like 6.824's one(): propose to the leader until the value is applied on every node
        in `nodes` (default: live nodes); returns its index, None on timeout. A retry carries a
        fresh value (`value` + "#retryN") so that "no value is applied twice" stays strict."""
        value = value or self.new_value()
        members = list(self.live_nodes() if nodes is None else nodes)
        timeout_ms = timeout_ms or 10 * self.election_timeout_ms()
        deadline_ms = self.now_ms + timeout_ms
        attempts: list[tuple[int, int, bytes]] = []  # (index, term, value)

        def applied_everywhere() -> int | None:
            for index, term, attempt_value in attempts:
                if all(self._applied_entry_is(node_id, index, term, attempt_value) for node_id in members):
                    return index
            return None

        while self.now_ms < deadline_ms:
            attempt_value = value if not attempts else value + f"#retry{len(attempts)}".encode()
            proposed = self.propose_to_leader(attempt_value)
            if proposed is None:
                self.run_for(min(self.config["heartbeat_ticks"] * TICK_PERIOD_MS_DEFAULT, deadline_ms - self.now_ms))
                continue
            _, term, index = proposed
            attempts.append((index, term, attempt_value))
            wait_ms = min(2 * self.election_timeout_ms(), deadline_ms - self.now_ms)
            if self.run_until(lambda: applied_everywhere() is not None, wait_ms):
                return applied_everywhere()
        return None

    def _applied_entry_is(self, node_id: NodeId, index: int, term: int, value: bytes) -> bool:
        if not self.has_applied(node_id, index):
            return False
        applied = self.applied_at(node_id, index)
        return applied is not None and applied.term == term and applied.data == value
