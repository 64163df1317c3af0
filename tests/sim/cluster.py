"""The simulated cluster: nodes with disks, each driven by the PRODUCTION driver
(node/replicator/driver.py), the network and the clock. Scenario tests script it directly;
chaos.py drives it randomly.

Each node is a RaftNode core inside a Driver wired to the simulator's doubles: its Disk (the
Store, which can lose what was not durable), the Disk's SimStateMachine, a SimTransport over
the simulated network and SimCallbacks (the "server" above the driver: it acknowledges client
writes once applied on the node that took them, and serves reads when the driver says they are
safe). The invariant checker watches every message sent, every batch committed and every entry
applied, and checks each served read against the acknowledged history.
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable, Iterable

from node.errors import SandStoreError
from node.raft.errors import RaftError
from node.raft.node import RaftNode
from node.raft.types import ConfChange, ConfState, Config, EntryKind, Message, NodeId, Ready, Role, Status
from node.replicator.driver import APPLY_HOLD_TICKS, Driver

from tests.sim.disk import Batch, Disk, SimulatedCrash
from tests.sim.invariants import Checker, InvariantViolation
from tests.sim.network import LinkFaults, Network
from tests.sim.simulator import EventQueue
from tests.sim.trace import Trace, describe_message

TICK_PERIOD_MS_DEFAULT = 10
INCARNATION_BITS = 64

# Small, quick settings: heartbeat every 5 ticks, election timeouts 15..30 ticks.
CONFIG_DEFAULTS = dict(heartbeat_ticks=5, election_ticks_min=15, election_ticks_max=30)


class CoreCrashed(InvariantViolation):
    """The core or the driver raised where it must not (step, tick, ready, advance): a bug."""


@dataclass
class Forward:
    """A client command a follower's driver forwards to the leader (Transport.send_forward)."""

    source: NodeId
    target: NodeId
    command: bytes


@dataclass
class SimNode:
    node_id: NodeId
    tick_period_ms: int
    bootstrap_peers: tuple[NodeId, ...]
    disk: Disk = field(default_factory=Disk)
    driver: Driver | None = None
    incarnation: int = 0
    # Client writes this incarnation took and has not seen applied yet (values are unique).
    pending_values: set[bytes] = field(default_factory=set)
    # Linearizable reads this incarnation registered: token -> read label.
    reads: dict[int, bytes] = field(default_factory=dict)

    @property
    def alive(self) -> bool:
        return self.driver is not None

    @property
    def raft(self) -> RaftNode | None:
        return self.driver.core if self.driver is not None else None

    @property
    def role(self) -> Role:
        return self.driver.core.role if self.driver is not None else Role.FOLLOWER

    @property
    def term(self) -> int:
        return self.driver.core.term if self.driver is not None else self.disk.hard_state().term

    @property
    def leader(self) -> NodeId:
        return self.driver.core.lead if self.driver is not None else ""

    @property
    def crash_during_next_write(self) -> bool:
        return self.disk.crash_on_next_batch

    @crash_during_next_write.setter
    def crash_during_next_write(self, value: bool) -> None:
        self.disk.crash_on_next_batch = value


class SimTransport:
    """The driver's Transport: every send goes through the checker, then the network."""

    def __init__(self, cluster: "Cluster", node: SimNode) -> None:
        self._cluster = cluster
        self._node = node

    def send(self, message: Message) -> None:
        self._cluster._send(self._node, message)

    def send_forward(self, leader: str, command: bytes) -> None:
        self._cluster._send_forward(self._node, leader, command)

    def set_peers(self, conf_state: ConfState) -> None:
        self._cluster.trace.record(self._cluster.now_ms, f"{self._node.node_id} peers {sorted(conf_state.all_nodes())}")


class SimCallbacks:
    """The service above the driver, as node/server.py is in production."""

    def __init__(self, cluster: "Cluster", node: SimNode) -> None:
        self._cluster = cluster
        self._node = node

    def results_fixed(self, results: list[tuple[int, object, dict]]) -> None:
        # The client's answer: the driver gives it before the applying batch commits.
        for index, decoded, _ in results:
            command = decoded  # the simulated state machine's commands decode to their own bytes
            if command in self._node.pending_values:
                self._node.pending_values.discard(command)
                self._cluster.checker.on_ack(command, index)

    def applied(self, index: int, decoded: object, result: dict) -> None:
        pass

    def conf_applied(self, index: int, term: int) -> None:
        pass

    def reads_ready(self, tokens: list[int]) -> None:
        for token in tokens:
            self._cluster._read_served(self._node, token)

    def reads_failed(self, tokens: list[int], error: Exception) -> None:
        assert isinstance(error, SandStoreError) and str(error), error
        for token in tokens:
            self._cluster._read_failed(self._node, token, error)

    def leader_changed(self, leader: str, term: int, is_self: bool) -> None:
        cluster = self._cluster
        cluster.trace.record(cluster.now_ms, f"{self._node.node_id} sees leader {leader} term {term}")
        if is_self:
            cluster.leader_history.append((cluster.now_ms, term, leader))
            for listener in list(cluster.leader_listeners):  # a listener may remove itself
                listener(leader, term)


class CommitObserver:
    """Hands each batch a node's driver commits to the checker (the Disk's observer)."""

    def __init__(self, cluster: "Cluster", node: SimNode) -> None:
        self._cluster = cluster
        self._node = node

    def _as_ready(self, batch: Batch) -> Ready:
        return Ready(hard_state=batch.hard_state, entries=batch.entries, snapshot=batch.snapshot)

    def before_commit(self, batch: Batch, disk: Disk) -> None:
        node = self._node
        if batch.snapshot is not None:
            self._cluster.trace.record(self._cluster.now_ms, f"{node.node_id} restores snapshot {batch.snapshot.meta.index}")
        self._cluster.checker.before_persist(node.node_id, node.role, node.term, self._as_ready(batch), disk)

    def on_apply(self, entry, disk: Disk) -> None:
        self._cluster.checker.on_apply(self._node.node_id, entry, disk)

    def after_commit(self, batch: Batch, disk: Disk) -> None:
        node = self._node
        self._cluster.checker.after_persist(node.node_id, node.role, node.term, self._as_ready(batch), disk)


class Cluster:
    def __init__(
        self,
        node_count: int | Iterable[NodeId] = 3,
        seed: int = 0,
        config: dict | None = None,
        tick_periods_ms: dict[NodeId, int] | None = None,
        verbose: bool = False,
        rng: random.Random | None = None,
        own_entries_unflushed: bool | None = None,
    ) -> None:
        self.seed = seed
        self.rng = rng or random.Random(seed)
        self._crash_rng = random.Random(f"crash-{seed}")
        # Whether followers hold committed entries back (APPLY_HOLD_TICKS) to apply them in a batch, as
        # production does (Driver, APPLY_HOLD_ENTRIES_MAX): drawn apart from the main RNG so that
        # seeds keep their schedules whichever way it falls; half the seeds run each way.
        self.apply_hold = random.Random(f"apply-hold-{seed}").random() < 0.5
        # Whether a leader writes its own entries without a flush while its followers can
        # commit them (Driver, OWN ENTRIES), as production does: half the seeds, drawn apart.
        self.own_entries_unflushed = (random.Random(f"own-entries-{seed}").random() < 0.5
                                      if own_entries_unflushed is None else own_entries_unflushed)
        # Whether a crash closes the dead node's connections where its peers see it, as in
        # production (a socket monitor's report: RaftReplicator.run), and the survivors then
        # campaign early (campaign_on_leader_unreachable): half the seeds, drawn apart.
        self._link_rng = random.Random(f"link-loss-{seed}")
        self.connection_loss_reports = self._link_rng.random() < 0.5
        self.clock = EventQueue()
        self.network = Network(self.rng)
        self.checker = Checker(self.clock)
        self.trace = Trace(verbose=verbose)
        self.config = dict(CONFIG_DEFAULTS, **(config or {}))
        if self.connection_loss_reports and self.config.get("pre_vote", True) and self.config.get("check_quorum", True):
            self.config.setdefault("campaign_on_leader_unreachable", True)  # needs both (Config)
        self.nodes: dict[NodeId, SimNode] = {}
        self.sent_counts: Counter = Counter()  # MessageKind -> messages handed to the network
        self.read_results: dict[bytes, tuple[NodeId, int]] = {}  # label -> (node, applied index served at)
        self.read_failures: dict[bytes, str] = {}  # label -> the error the driver answered with
        self.reads_issued: dict[bytes, tuple[NodeId, int]] = {}  # label -> (node, incarnation)
        self.forwards_sent = 0
        self.power_losses = 0
        self.leader_history: list[tuple[int, int, NodeId]] = []  # (time ms, term, leader)
        # Called as (leader, term) when a node's driver learns it became leader, in the middle
        # of carrying out that Ready: a listener may only schedule() actions, not act at once.
        self.leader_listeners: list[Callable[[NodeId, int], None]] = []
        # Called with each message once its target has stepped it and carried out the Readys.
        self.delivery_listeners: list[Callable[[Message], None]] = []
        self.value_counter = 0
        self._next_read_token = 1
        # Scenario tests hold back chosen messages (a slow path through the network) and hand
        # them in later with deliver_held().
        self.hold_when: Callable[[Message], bool] | None = None
        self.held: list[Message] = []
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

    @property
    def now_seconds(self) -> float:
        return self.clock.now_ms / 1000.0

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
        elif kind == "forward":
            self._on_forward(payload)
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
        node.disk.observer = CommitObserver(self, node)
        self.nodes[node_id] = node
        self._start(node)
        # Random phase, so that nodes do not tick in lockstep.
        self.clock.schedule(self.rng.randint(1, node.tick_period_ms), "tick", node_id)
        return node

    def read_timeout_seconds(self, node: SimNode) -> float:
        return 2 * self.config["election_ticks_max"] * node.tick_period_ms / 1000.0

    def _start(self, node: SimNode) -> None:
        assert node.driver is None
        config = Config(node_id=node.node_id, applied=node.disk.applied_index, **self.config)
        core_rng = random.Random(self.rng.getrandbits(64))
        incarnation = self.rng.getrandbits(INCARNATION_BITS).to_bytes(INCARNATION_BITS // 8, "big")
        node.incarnation += 1
        node.crash_during_next_write = False
        node.pending_values = set()
        node.reads = {}

        def start() -> None:
            core = RaftNode(config, node.disk.storage, core_rng, node.bootstrap_peers)
            node.driver = Driver(
                core, node.disk, node.disk.state_machine, SimTransport(self, node), SimCallbacks(self, node),
                node_id=node.node_id, incarnation=incarnation, applied_index=node.disk.applied_index,
                read_timeout_seconds=self.read_timeout_seconds(node),
                apply_hold_seconds=APPLY_HOLD_TICKS * node.tick_period_ms / 1000.0 if self.apply_hold else 0.0,
                own_entries_flush_seconds=node.tick_period_ms / 1000.0 if self.own_entries_unflushed else 0.0,
                peer_fresh_seconds=2 * self.config["heartbeat_ticks"] * node.tick_period_ms / 1000.0,
            )

        self._core(node, "start", start)
        self._drive(node, "process", lambda: node.driver.process(self.now_seconds))

    def crash(self, node_id: NodeId, why: str = "", lose_deferred: bool | None = None) -> None:
        """The node's process dies. Production defers the commit of non-durable batches to the
        next durable one (NodeStore), so a process crash may lose every non-durable batch since
        the last durable batch: whether it does (lose_deferred) is drawn from the crash RNG,
        apart from the main one so that scenarios keep their schedules."""
        node = self.nodes[node_id]
        assert node.alive, f"{node_id} is already down"
        self.trace.record(self.now_ms, f"crash {node_id} {why}".rstrip())
        node.driver = None
        node.pending_values = set()
        node.reads = {}
        if self.connection_loss_reports:
            for observer in self.live_nodes():
                if self.network.connected(node_id, observer):  # a partition hides the closing
                    self.schedule(self._link_rng.randint(0, 3), lambda observer=observer: self._link_closed(observer, node_id))
        if lose_deferred is None:
            lose_deferred = self._crash_rng.random() < 0.5
        if lose_deferred:
            lost = node.disk.power_loss(lose_all=True)
            if lost:
                self.trace.record(self.now_ms, f"{node_id} lost {lost} deferred batches with its process")

    def _link_closed(self, observer: NodeId, lost: NodeId) -> None:
        """`observer` sees its connection to the crashed `lost` close (unless either restarted
        meanwhile: a new connection is up), as RaftReplicator.run reports it to the core."""
        node = self.nodes[observer]
        if not node.alive or self.nodes[lost].alive:
            return
        self.trace.record(self.now_ms, f"{observer} sees its link to {lost} close")

        def report() -> bool:
            node.raft.leader_unreachable(lost)
            return node.driver.process(self.now_seconds)

        self._drive(node, "leader_unreachable", report)

    def power_loss(self, node_id: NodeId, lose_all: bool) -> int:
        """The machine of `node_id` loses power: a crash that also undoes the non-durable
        batches LMDB may lose (disk.py). Returns how many batches were lost."""
        self.crash(node_id, "by a power loss", lose_deferred=False)
        lost = self.nodes[node_id].disk.power_loss(lose_all)
        self.power_losses += 1
        self.trace.record(self.now_ms, f"power loss {node_id}: {lost} non-durable batches lost")
        return lost

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

    # -- the core and the driver, called safely ---------------------------------------------

    def _core(self, node: SimNode, what: str, call: Callable):
        try:
            return call()
        except InvariantViolation:
            raise
        except Exception as error:  # any exception from these calls is a bug of the core or driver
            raise CoreCrashed(f"at {self.now_ms}ms: {node.node_id} raised in {what}: {error!r}") from error

    def _drive(self, node: SimNode, what: str, call: Callable) -> None:
        """Run a driver call; a SimulatedCrash from the disk crashes the node there."""
        try:
            settled = self._core(node, what, call)
        except CoreCrashed as crashed:
            if isinstance(crashed.__cause__, SimulatedCrash):
                self.crash(node.node_id, "during its disk write")
                return
            raise
        if settled is False:
            raise CoreCrashed(f"at {self.now_ms}ms: {node.node_id} kept producing Readys")

    def _on_tick(self, node_id: NodeId) -> None:
        node = self.nodes[node_id]
        self.clock.schedule(node.tick_period_ms, "tick", node_id)
        if not node.alive:
            return
        self.trace.record(self.now_ms, f"tick {node_id}")
        self._drive(node, "tick", lambda: node.driver.tick(self.now_seconds))

    def deliver_held(self) -> None:
        """Deliver every held message now, whatever the partitions (it took another path)."""
        held, self.held = self.held, []
        for message in held:
            node = self.nodes.get(message.target)
            if node is None or not node.alive:
                continue
            self.trace.record(self.now_ms, f"deliver held {describe_message(message)}")

            def step(node=node, message=message) -> bool:
                node.driver.step(message, self.now_seconds)
                return node.driver.process(self.now_seconds)

            self._drive(node, f"step({message.kind.name})", step)

    def _on_deliver(self, message: Message) -> None:
        node = self.nodes.get(message.target)
        if node is None or not node.alive or not self.network.connected(message.source, message.target):
            self.trace.record(self.now_ms, f"lost {describe_message(message)}")
            return
        self.trace.record(self.now_ms, f"deliver {describe_message(message)}")

        def step() -> bool:
            node.driver.step(message, self.now_seconds)
            return node.driver.process(self.now_seconds)

        self._drive(node, f"step({message.kind.name})", step)
        for listener in self.delivery_listeners:
            listener(message)

    def _on_forward(self, forward: Forward) -> None:
        node = self.nodes.get(forward.target)
        if node is None or not node.alive or not self.network.connected(forward.source, forward.target):
            self.trace.record(self.now_ms, f"lost forward {forward.source}->{forward.target} {forward.command!r}")
            return
        self.trace.record(self.now_ms, f"deliver forward {forward.source}->{forward.target} {forward.command!r}")

        def receive() -> bool:
            node.driver.receive_forward(forward.source, forward.command, self.now_seconds)
            return node.driver.process(self.now_seconds)

        self._drive(node, "receive_forward", receive)

    def _send(self, node: SimNode, message: Message) -> None:
        self.checker.on_send(node.node_id, message, node.disk, self._leader_term_at_index)
        self.sent_counts[message.kind] += 1
        if self.hold_when is not None and self.hold_when(message):
            self.held.append(message)
            return
        if not self.network.connected(message.source, message.target):
            return  # cut off already: save the event
        for delay_ms in self.network.delivery_delays_ms(message.source, message.target):
            self.clock.schedule(delay_ms, "deliver", message)

    def _send_forward(self, node: SimNode, leader: NodeId, command: bytes) -> None:
        self.forwards_sent += 1
        self.checker.values_forwarded.add(command)
        self.forge_forward(node.node_id, leader, command)

    def forge_forward(self, source: NodeId, leader: NodeId, command: bytes) -> None:
        """A forward from `source` to `leader`, delayed or dropped like any message but never
        duplicated: a client's retry is a new request, which the sessions of the real state
        machine answer (the simulated one holds every value once)."""
        if leader not in self.nodes or not self.network.connected(source, leader):
            return
        delays_ms = self.network.delivery_delays_ms(source, leader)
        if delays_ms:
            self.clock.schedule(delays_ms[0], "forward", Forward(source, leader, command))

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
        """Propose on `node_id`'s core directly; raises the core's NotLeader / ProposalDropped.
        Acknowledged once `node_id` applies it."""
        node = self.nodes[node_id]
        assert node.alive, node_id
        self.trace.record(self.now_ms, f"propose {value!r} to {node_id}")
        try:
            term, index = node.raft.propose(value)
        except RaftError as error:
            self.trace.note(self.now_ms, f"refused: {error!r}")
            raise
        node.pending_values.add(value)
        self._drive(node, "process", lambda: node.driver.process(self.now_seconds))
        return term, index

    def client_write(self, node_id: NodeId, value: bytes) -> bool:
        """A client's write sent to any node, as the server hands it to its driver: proposed if
        that node leads, forwarded to the leader otherwise. Acknowledged once `node_id` applies
        it. False if the driver refused it (no leader known)."""
        node = self.nodes[node_id]
        assert node.alive, node_id
        self.trace.record(self.now_ms, f"client write {value!r} to {node_id}")
        decoded = node.disk.state_machine.decode(value)  # as the server validates what its clients send
        try:
            node.driver.propose(value, self.now_seconds, decoded)
        except SandStoreError as error:
            self.trace.note(self.now_ms, f"refused: {error!r}")
            return False
        node.pending_values.add(value)
        self._drive(node, "process", lambda: node.driver.process(self.now_seconds))
        return True

    def read_index(self, node_id: NodeId, label: bytes) -> None:
        """A linearizable read on `node_id`, as the server registers it with its driver. It is
        answered by read_results[label] (served at that node's applied index, checked against
        every write acknowledged before it was asked) or read_failures[label]."""
        node = self.nodes[node_id]
        assert node.alive, node_id
        assert label not in self.reads_issued, f"read label {label!r} used twice"
        self.trace.record(self.now_ms, f"read {label!r} on {node_id}")
        self.checker.on_read_request(label)
        token = self._next_read_token
        self._next_read_token += 1
        node.reads[token] = label
        self.reads_issued[label] = (node_id, node.incarnation)
        node.driver.read_barrier(token)
        self._drive(node, "process", lambda: node.driver.process(self.now_seconds))

    def _read_served(self, node: SimNode, token: int) -> None:
        label = node.reads.pop(token, None)
        if label is None:
            raise InvariantViolation(f"at {self.now_ms}ms: {node.node_id}'s driver answered unknown read token {token}")
        self.trace.record(self.now_ms, f"read {label!r} served on {node.node_id} at {node.disk.applied_index}")
        self.checker.on_read_served(node.node_id, label, node.disk)
        self.read_results[label] = (node.node_id, node.disk.applied_index)

    def _read_failed(self, node: SimNode, token: int, error: Exception) -> None:
        label = node.reads.pop(token, None)
        if label is None:
            raise InvariantViolation(f"at {self.now_ms}ms: {node.node_id}'s driver failed unknown read token {token}")
        self.trace.record(self.now_ms, f"read {label!r} failed on {node.node_id}: {error}")
        self.read_failures[label] = str(error)

    def reads_unanswered(self) -> list[bytes]:
        """Reads registered by a live incarnation that got neither an answer nor an error."""
        return [label for node in self.nodes.values() if node.alive for label in node.reads.values()]

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
        self._drive(node, "process", lambda: node.driver.process(self.now_seconds))
        return result

    def transfer_leadership(self, node_id: NodeId, target: NodeId) -> None:
        node = self.nodes[node_id]
        assert node.alive, node_id
        self.trace.record(self.now_ms, f"transfer leadership {node_id} -> {target}")
        try:
            node.raft.transfer_leadership(target)
        except RaftError as error:
            self.trace.note(self.now_ms, f"refused: {error!r}")
            raise
        self._drive(node, "process", lambda: node.driver.process(self.now_seconds))

    def take_snapshot(self, node_id: NodeId, keep_entries: int = 0) -> int | None:
        """Snapshot `node_id`'s state machine at its applied index and compact its log."""
        node = self.nodes[node_id]
        assert node.alive, node_id
        compacted_index = node.disk.take_snapshot(keep_entries)
        self.trace.record(self.now_ms, f"snapshot {node_id} at {node.disk.applied_index} compacted to {compacted_index}")
        if compacted_index is not None:
            self._core(node, "compacted", lambda: node.raft.compacted(compacted_index))
            self._drive(node, "process", lambda: node.driver.process(self.now_seconds))
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
