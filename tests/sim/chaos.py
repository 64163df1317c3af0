"""One random run: a cluster shape, a fault schedule and a liveness check, all from one seed.

A run has two phases. During the fault phase, clients propose and read while the schedule
crashes nodes (also in the middle of a disk write), partitions the network (symmetric and
one-way), makes links lossy, snapshots, transfers leadership and, in some runs, changes the
membership. Then the faults stop, the network heals and every node restarts: within 10
election timeouts there must be exactly one leader, and a new value must reach every voter.

A share of the runs (LEADER_HUNT_SHARE) hunts leaders, to reach the Raft paper's figure 8.
Every APPEND carries one entry (message_bytes_max=1), so a new leader ships entries of earlier
terms one at a time ahead of its own no-op, and a follower acks such an entry alone. Elections
are quicker, the other faults rarer, and leaders are crashed right after their election (most
often cut off first, so that their APPENDs in flight are lost too), then restarted soon:
  (b) a leader elected without entries that others hold is crashed at once: its no-op, kept
      to itself, conflicts with them;
  (c) a leader that holds uncommitted entries older than such a conflicting one is left to
      ship them, and crashed as soon as a follower acks one of them, before its no-op follows;
  (d) the holder of the conflicting entry can then win.
A core that commits on those acks alone (without checking that the entry is of the leader's
term) is caught by the leader completeness check, and by state machine safety once the entry
was applied. Other leaders are crashed at random moments shortly after their election.
"""

from __future__ import annotations

import random
import traceback
from dataclasses import dataclass, field

from node.raft.errors import RaftError
from node.raft.types import ConfChange, ConfChangeKind, ConfChangeStep, Message, MessageKind, NodeId, Role

from tests.sim.cluster import Cluster
from tests.sim.disk import MALFORMED_COMMAND_PREFIX
from tests.sim.invariants import InvariantViolation, LivenessViolation
from tests.sim.network import LinkFaults

NODES_PER_RUN_MAX = 7  # bound on the nodes a churning run may add
LIVENESS_ELECTION_TIMEOUTS = 10

# Clients (see Chaos._client).
CLIENT_WRITE_SHARE = 0.4  # writes sent to any node (forwarded by followers), not the leader
MALFORMED_FORWARD_PROBABILITY = 0.02  # a follower's client sends garbage: it must not reach a log
READ_PROBABILITY = 0.35
READ_FAN_OUT_MAX = 4  # reads asked on this many nodes at once, followers and stale leaders included
READ_AFTER_ELECTION_PROBABILITY = 0.5  # a read asked of a new leader before its no-op commits
CRASH_AFTER_ACK_PROBABILITY = 0.03  # a leader dies right after acknowledging a write
LEARNERS_SHARE = 0.3  # runs that keep LEARNERS_KEPT learners beside the voters
LEARNERS_KEPT = 2
POWER_LOSE_ALL_PROBABILITY = 0.5  # a power loss undoes every non-durable batch, not just the last
CUT_WITH_LEARNERS_PROBABILITY = 0.2  # per check once the learners stand: the leader cut off with them
LEARNER_CHECK_INTERVAL_MS = 50  # how often a learners run tops its learners up
READ_RETRY_MS = 20  # a client whose read failed asks again after this long

# Leader-hunting runs (see the module doc).
LEADER_HUNT_SHARE = 0.3
HUNT_PROBABILITY = 0.8  # a new leader is hunted with this probability
HUNT_DELAYS_MS = (0, 0, 0, 0, 0, 1, 2, 4, 8)  # from its election to its crash
HUNT_CUT_OFF_PROBABILITY = 0.9  # cut it off first: its messages in flight are lost
HUNT_CONFLICTING_PROBABILITY = 0.9  # hunted at once when elected without others' entries
HUNT_OLD_ACK_PROBABILITY = 0.9  # hunted when a follower acks an entry of an earlier term
HUNT_RESTART_MS = (50, 800)  # the hunted node restarts (and reconnects) after this long
HUNT_NODE_COUNTS = (3, 3, 5)
# Quicker elections (60..120 ms at 10 ms ticks): more of them in a run for the same events.
HUNT_TIMING = dict(heartbeat_ticks=2, election_ticks_min=6, election_ticks_max=12)
HUNT_ACTION_INTERVALS_MS = (160, 320)  # the other faults, rarer: elections must complete
HUNT_PROPOSAL_INTERVALS_MS = (30, 60)


@dataclass(frozen=True)
class Plan:
    node_count: int
    tick_periods_ms: dict
    config: dict
    fault_duration_ms: int
    action_interval_ms_max: int
    proposal_interval_ms_max: int
    churn: bool
    leader_hunt: bool = False
    learners: bool = False  # keep LEARNERS_KEPT learners in the cluster

    def describe(self) -> str:
        return (
            f"nodes={self.node_count} ticks_ms={sorted(self.tick_periods_ms.values())} config={self.config}"
            f" faults_ms={self.fault_duration_ms} churn={self.churn} leader_hunt={self.leader_hunt}"
            f" learners={self.learners}"
        )


def make_plan(rng: random.Random, fault_duration_ms: int | None = None, churn: bool | None = None) -> Plan:
    """`fault_duration_ms` / `churn` override the drawn values (the draws still happen, so the
    rest of the run stays what the seed says)."""
    leader_hunt = rng.random() < LEADER_HUNT_SHARE
    node_count = rng.choice(HUNT_NODE_COUNTS) if leader_hunt else rng.choice([3, 3, 4, 5, 5])
    node_ids = [f"n{number}" for number in range(1, node_count + 1)]
    config = {}
    if leader_hunt:
        config.update(HUNT_TIMING, message_bytes_max=1)  # one entry per APPEND
    elif rng.random() < 0.3:
        config["message_bytes_max"] = rng.choice([64, 200])
    if rng.random() < 0.3:
        config["inflight_messages_max"] = rng.choice([1, 2, 4])
    if rng.random() < 0.3:
        config["snapshot_chunk_bytes"] = rng.choice([50, 300])
    if rng.random() < 0.15:
        config["pre_vote"] = False
    if rng.random() < 0.15:
        config["check_quorum"] = False
    learners = rng.random() < LEARNERS_SHARE
    return Plan(
        learners=learners,
        node_count=node_count,
        tick_periods_ms={node_id: rng.randint(8, 12) for node_id in node_ids},
        config=config,
        fault_duration_ms=rng.randint(1500, 3500) if fault_duration_ms is None else fault_duration_ms,
        action_interval_ms_max=rng.choice(HUNT_ACTION_INTERVALS_MS if leader_hunt else [40, 80, 160]),
        proposal_interval_ms_max=rng.choice(HUNT_PROPOSAL_INTERVALS_MS if leader_hunt else [10, 30, 60]),
        churn=(rng.random() < 0.35) if churn is None else churn,
        leader_hunt=leader_hunt,
    )


def random_faults(rng: random.Random) -> LinkFaults:
    profile = rng.random()
    if profile < 0.3:
        return LinkFaults(delay_ms_min=1, delay_ms_max=rng.randint(1, 5))
    return LinkFaults(
        drop_probability=rng.choice([0.0, 0.05, 0.2, 0.4]),
        duplicate_probability=rng.choice([0.0, 0.05, 0.2]),
        delay_ms_min=1,
        delay_ms_max=rng.randint(2, 30),
        reorder_probability=rng.choice([0.0, 0.1, 0.3]),
        reorder_delay_ms_max=rng.randint(10, 80),
    )


SETTLED_FAULTS = LinkFaults(delay_ms_min=1, delay_ms_max=3)


@dataclass
class RunResult:
    seed: int
    plan: str
    trace_digest: str = ""
    event_count: int = 0
    end_ms: int = 0
    proposals: int = 0
    acked: int = 0
    leaders: int = 0
    violation: str | None = None
    traceback: str = ""
    counts: dict = field(default_factory=dict)

    def summary(self) -> str:
        outcome = f"VIOLATION: {self.violation}" if self.violation else "ok"
        return (
            f"seed {self.seed}: {outcome} | {self.plan} | events={self.event_count} virtual_ms={self.end_ms}"
            f" proposals={self.proposals} acked={self.acked} terms_with_leader={self.leaders} {self.counts}"
        )


class Chaos:
    """The random fault schedule for one run."""

    def __init__(self, cluster: Cluster, plan: Plan, rng: random.Random) -> None:
        self.cluster = cluster
        self.plan = plan
        self.rng = rng
        self.active = False
        self.proposal_count = 0
        self.read_count = 0
        self.counts: dict[str, int] = {}
        self._next_node_number = plan.node_count + 1
        self._episode_ends_ms = 0

    def start(self) -> None:
        self.active = True
        self.cluster.leader_listeners.append(self._read_on_new_leader)
        self.cluster.checker.ack_listeners.append(self._on_ack)
        if self.plan.leader_hunt:
            self.cluster.leader_listeners.append(self._on_new_leader)
            self.cluster.delivery_listeners.append(self._on_delivery)
        self._schedule(self._propose, self.plan.proposal_interval_ms_max)
        self._schedule(self._act, self.plan.action_interval_ms_max)
        if self.plan.learners:
            self._schedule(self._keep_learners, LEARNER_CHECK_INTERVAL_MS)

    def _schedule(self, action, interval_ms_max: int) -> None:
        def fire() -> None:
            if not self.active:
                return
            action()
            self._schedule(action, interval_ms_max)

        self.cluster.schedule(self.rng.randint(1, interval_ms_max), fire)

    def _count(self, name: str) -> None:
        self.counts[name] = self.counts.get(name, 0) + 1

    # -- clients ----------------------------------------------------------------------------

    def _propose(self) -> None:
        """One client write: to a node that claims to lead, or to any node (a follower's driver
        forwards it to its leader); now and then a read on several nodes at once."""
        cluster = self.cluster
        live = cluster.live_nodes()
        if not live:
            return
        self.proposal_count += 1
        value = cluster.new_value()
        claimed = cluster.claimed_leaders()
        if self.rng.random() < CLIENT_WRITE_SHARE:
            target = self.rng.choice(live)
            self._count("client_write")
            cluster.client_write(target, value)
            if self.rng.random() < MALFORMED_FORWARD_PROBABILITY:
                self._forge_forward()
        else:
            target = self.rng.choice(claimed) if claimed else self.rng.choice(live)
            try:
                cluster.propose(target, value)
            except RaftError:
                pass
        if self.rng.random() < READ_PROBABILITY:
            self._read_on_several()

    def _forge_forward(self) -> None:
        """A peer (buggy, or not one of ours) forwards garbage to whoever leads: the leader's
        driver must drop it, not propose it."""
        live, leaders = self.cluster.live_nodes(), self.cluster.claimed_leaders()
        if not leaders:
            return
        leader = self.rng.choice(leaders)
        source = self.rng.choice([n for n in self.cluster.nodes if n != leader])
        self._count("forged_forward")
        self.cluster.forge_forward(source, leader, MALFORMED_COMMAND_PREFIX + self.cluster.new_value())

    def _read_on_several(self) -> None:
        """Reads asked at the same moment on several nodes: followers' ReadIndex requests meet
        at the leader together, and a leader that does not know it was deposed is asked too."""
        live = self.cluster.live_nodes()  # a write may have crashed its node mid-write
        if not live:
            return
        targets = set(self.rng.sample(live, self.rng.randint(1, min(READ_FAN_OUT_MAX, len(live)))))
        targets.update(self.cluster.claimed_leaders())
        for node_id in sorted(targets):
            self._read(node_id)

    def _read(self, node_id: NodeId) -> None:
        if not self.cluster.nodes[node_id].alive:
            return
        self.read_count += 1
        self._count("read")
        self.cluster.read_index(node_id, f"read{self.read_count}".encode())

    def _read_on_new_leader(self, leader: NodeId, term: int) -> None:
        # Before its own-term no-op commits, a new leader's commit index may lag what the
        # previous leader acknowledged: a read it confirms then must wait for the no-op.
        if self.active and self.rng.random() < READ_AFTER_ELECTION_PROBABILITY:
            self.cluster.schedule(self.rng.choice((0, 0, 1, 2)), lambda: self._read(leader))

    def _on_ack(self, value: bytes, index: int) -> None:
        # A leader that dies right after acknowledging: the next leader may not know the write
        # committed yet (reads right after its election must still see it).
        if not self.active or self.rng.random() >= CRASH_AFTER_ACK_PROBABILITY:
            return
        leaders = self.cluster.claimed_leaders()
        if leaders:
            leader = max(leaders, key=lambda n: self.cluster.nodes[n].term)
            self._count("crash_after_ack")
            self.cluster.schedule(0, lambda: self._crash_if_alive(leader, "right after an acknowledgement"))

    def _crash_if_alive(self, node_id: NodeId, why: str) -> None:
        if self.cluster.nodes[node_id].alive:
            self.cluster.crash(node_id, why)

    # -- faults -----------------------------------------------------------------------------

    def _act(self) -> None:
        if self.cluster.now_ms < self._episode_ends_ms:
            return  # an episode (a scenario that needs time to unfold) is under way
        actions = [
            (self._crash, 3),
            (self._restart, 4),
            (self._crash_during_write, 2),
            (self._partition, 2),
            (self._one_way, 2),
            (self._isolate, 2),
            (self._heal, 3),
            (self._faults, 2),
            (self._snapshot, 3),
            (self._transfer, 1),
            (self._power_loss, 2),
            (self._bounce, 2),
            (self._election_storm, 1),
            (self._long_delays, 1),
            (self._stale_leader, 2),
            (self._bounce_with_reads, 2),
        ]
        if self.plan.churn:
            actions.append((self._churn, 3))
        if self.plan.learners:
            actions.append((self._cut_leader_from_voters, 4))
        total = sum(weight for _, weight in actions)
        pick = self.rng.uniform(0, total)
        for action, weight in actions:
            pick -= weight
            if pick <= 0:
                action()
                return
        actions[-1][0]()

    def _live_node(self, prefer_leader: float) -> NodeId | None:
        live = self.cluster.live_nodes()
        if not live:
            return None
        leaders = self.cluster.claimed_leaders()
        if leaders and self.rng.random() < prefer_leader:
            return self.rng.choice(leaders)
        return self.rng.choice(live)

    def _crash(self) -> None:
        node_id = self._live_node(prefer_leader=0.4)
        if node_id is not None:
            self._count("crash")
            self.cluster.crash(node_id)

    def _restart(self) -> None:
        down = [node_id for node_id, node in self.cluster.nodes.items() if not node.alive]
        if down:
            self._count("restart")
            self.cluster.restart(self.rng.choice(down))

    def _crash_during_write(self) -> None:
        node_id = self._live_node(prefer_leader=0.5)
        if node_id is not None:
            self._count("crash_during_write")
            self.cluster.crash_during_next_write(node_id)

    def _power_loss(self) -> None:
        node_id = self._live_node(prefer_leader=0.3)
        if node_id is not None:
            self._count("power_loss")
            lost = self.cluster.power_loss(node_id, lose_all=self.rng.random() < POWER_LOSE_ALL_PROBABILITY)
            if lost:
                self._count("batches_lost")

    def _bounce(self) -> None:
        """Crash and restart at once: messages in flight to the old incarnation (answers to its
        reads, acks of its appends) reach the new one."""
        node_id = self._live_node(prefer_leader=0.3)
        if node_id is not None:
            self._count("bounce")
            self.cluster.crash(node_id, "to restart at once")
            self.cluster.restart(node_id)

    def _election_storm(self) -> None:
        """The leader goes, and several followers will crash in their next disk write: the one
        that persists a vote they grant in the election that follows."""
        leaders = self.cluster.claimed_leaders()
        if not leaders:
            return
        self._count("election_storm")
        self._episode(3 * self.cluster.election_timeout_ms())
        for node_id in self.cluster.live_nodes():
            if node_id not in leaders and self.rng.random() < 0.5:
                self.cluster.crash_during_next_write(node_id)
        self.cluster.isolate(self.rng.choice(leaders))

    def _stale_leader(self) -> None:
        """A leader hears from nobody, and what it sends is held back for two to three election
        timeouts; it keeps taking proposals. The others elect a new leader, which is cut off
        from one follower right after that follower acked its first entry (before it learns
        that it committed). Then the old leader's appends arrive at that follower (held until
        that moment): they are of an older term and must change nothing."""
        leaders = self.cluster.claimed_leaders()
        if not leaders:
            return
        leader = self.rng.choice(leaders)
        others = [n for n in self.cluster.nodes if n != leader]
        if len(others) < 2:
            return
        self._count("stale_leader")
        timeout_ms = self.cluster.election_timeout_ms()
        self._episode(5 * timeout_ms)
        self.cluster.set_faults(SETTLED_FAULTS)
        held = LinkFaults(delay_ms_min=2 * timeout_ms, delay_ms_max=3 * timeout_ms)
        for node_id in others:
            self.cluster.block(node_id, leader)
            self.cluster.network.set_link_faults(leader, node_id, held)
        for delay_ms in sorted(self.rng.sample(range(1, timeout_ms), 4)):
            self.cluster.schedule(delay_ms, lambda: self._propose_to(leader))
        old_term = self.cluster.nodes[leader].term
        follower = self.rng.choice(others)
        if self.cluster.hold_when is None:
            # The follower's share is held back until it acked the new leader's first entry
            # (released below), so that it arrives while the follower is still in that term.
            self.cluster.hold_when = lambda m: m.source == leader and m.target == follower and m.term == old_term

        def release_held() -> None:
            self.cluster.hold_when = None
            self.cluster.schedule(1, self.cluster.deliver_held)

        def on_new_leader(new_leader: NodeId, term: int) -> None:
            if term <= old_term or not self.active:
                return
            self.cluster.leader_listeners.remove(on_new_leader)
            if new_leader == follower:
                release_held()
                return

            def on_delivery(message: Message) -> None:
                # Cut off the moment the follower holds (and has acked) an entry of the new
                # term: whatever the new leader sends next, the commit included, is lost. (A
                # fixed delay raced the network's: the no-op was often cut off on its way.)
                node = self.cluster.nodes[follower]
                if (message.source == new_leader and message.target == follower and self.active
                        and node.alive and node.driver.core.log.last_term() == term):
                    self.cluster.delivery_listeners.remove(on_delivery)
                    self.cluster.block(new_leader, follower)
                    release_held()

            self.cluster.delivery_listeners.append(on_delivery)

        self.cluster.leader_listeners.append(on_new_leader)

    def _episode(self, duration_ms: int) -> None:
        """No other fault for `duration_ms`: the scenario just set up must get to unfold."""
        self._episode_ends_ms = self.cluster.now_ms + duration_ms

    def _propose_to(self, node_id: NodeId) -> None:
        if self.active and self.cluster.nodes[node_id].alive:
            self.proposal_count += 1
            try:
                self.cluster.propose(node_id, self.cluster.new_value())
            except RaftError:
                pass

    def _bounce_with_reads(self) -> None:
        """A node with reads outstanding restarts at once and reads again: answers meant for its
        previous life are still in flight."""
        waiting = [node_id for node_id, node in self.cluster.nodes.items() if node.alive and node.reads]
        if not waiting:
            return
        node_id = self.rng.choice(waiting)
        self._count("bounce_with_reads")
        self.cluster.crash(node_id, "with reads outstanding, to restart at once")
        self.cluster.restart(node_id)
        for delay_ms in sorted(self.rng.sample(range(0, 30), 3)):
            self.cluster.schedule(delay_ms, lambda: self._read(node_id))

    def _long_delays(self) -> None:
        """Messages held back for up to two election timeouts: stale-term leaders' appends and
        heartbeats arrive long after a new leader took over."""
        self._count("long_delays")
        hold_ms = 2 * self.cluster.election_timeout_ms()
        self.cluster.set_faults(LinkFaults(delay_ms_min=1, delay_ms_max=5, reorder_probability=0.3,
                                           reorder_delay_ms_max=hold_ms))

    def _keep_learners(self) -> None:
        """Add learners until LEARNERS_KEPT of them stand beside the voters."""
        leaders = self.cluster.claimed_leaders()
        if not leaders:
            return
        leader = max(leaders, key=lambda n: self.cluster.nodes[n].term)
        if len(self.cluster.nodes[leader].disk.conf_state.learners) >= LEARNERS_KEPT:
            if self.cluster.now_ms >= self._episode_ends_ms and self.rng.random() < CUT_WITH_LEARNERS_PROBABILITY:
                self._cut_leader_from_voters()
            return
        if len(self.cluster.nodes) >= NODES_PER_RUN_MAX:
            return
        self._count("add_learner")
        try:
            self.cluster.change_membership(
                leader, ConfChange(steps=(ConfChangeStep(ConfChangeKind.ADD_LEARNER, self._new_node()),)))
        except RaftError:
            pass

    def _cut_leader_from_voters(self) -> None:
        """The leader keeps its learners and a minority of the voters: it must commit nothing,
        and the majority elects a leader of its own."""
        leaders = self.cluster.claimed_leaders()
        if not leaders:
            return
        leader = self.rng.choice(leaders)
        conf = self.cluster.nodes[leader].disk.conf_state
        if not conf.learners:
            return
        self._count("cut_leader_from_voters")
        self._episode(3 * self.cluster.election_timeout_ms())
        # Short of a voter majority by one, with every learner: a quorum only if learners count.
        voters = sorted(conf.voters - {leader})
        kept_voters = self.rng.sample(voters, max(0, len(conf.voters) // 2 - 1))
        with_leader = {leader} | set(conf.learners) | set(kept_voters)
        self.cluster.partition(sorted(with_leader), sorted(set(self.cluster.nodes) - with_leader))

    def _partition(self) -> None:
        node_ids = list(self.cluster.nodes)
        self.rng.shuffle(node_ids)
        cut = self.rng.randint(1, len(node_ids) - 1)
        self._count("partition")
        self.cluster.partition(node_ids[:cut], node_ids[cut:])

    def _one_way(self) -> None:
        node_ids = list(self.cluster.nodes)
        source = self._live_node(prefer_leader=0.5) or self.rng.choice(node_ids)
        self._count("one_way")
        for target in node_ids:
            if target != source and self.rng.random() < 0.6:
                self.cluster.block(source, target)

    def _isolate(self) -> None:
        node_id = self._live_node(prefer_leader=0.5)
        if node_id is not None:
            self._count("isolate")
            self.cluster.isolate(node_id)

    def _heal(self) -> None:
        self._count("heal")
        self.cluster.heal()

    def _faults(self) -> None:
        self._count("faults")
        self.cluster.set_faults(random_faults(self.rng))

    def _snapshot(self) -> None:
        node_id = self._live_node(prefer_leader=0.5)
        if node_id is not None:
            self._count("snapshot")
            self.cluster.take_snapshot(node_id, keep_entries=self.rng.choice([0, 0, 2, 10]))

    def _transfer(self) -> None:
        leaders = self.cluster.claimed_leaders()
        if not leaders:
            return
        leader = self.rng.choice(leaders)
        voters = sorted(self.cluster.nodes[leader].disk.conf_state.voters - {leader})
        if not voters:
            return
        self._count("transfer")
        try:
            self.cluster.transfer_leadership(leader, self.rng.choice(voters))
        except RaftError:
            pass

    def _on_new_leader(self, leader: NodeId, term: int) -> None:
        if not self.active:
            return
        situation = self._figure_8_situation(leader)
        if situation == "overwrites":
            # Figure 8 (b): a leader elected without entries that others hold. Its no-op,
            # kept to itself, conflicts with them: hunted at once, before it leaves.
            if self.rng.random() < HUNT_CONFLICTING_PROBABILITY:
                self._count("hunt_conflicting")
                self.cluster.schedule(0, lambda: self._hunt(leader, term, cut_off=True))
            return
        if situation == "outdated":
            return  # figure 8 (c): left to ship its old entries (see _on_delivery)
        if self.rng.random() >= HUNT_PROBABILITY:
            return
        delay_ms = self.rng.choice(HUNT_DELAYS_MS)
        cut_off = self.rng.random() < HUNT_CUT_OFF_PROBABILITY
        self.cluster.schedule(delay_ms, lambda: self._hunt(leader, term, cut_off))

    def _figure_8_situation(self, leader: NodeId) -> str | None:
        """"overwrites": another node holds an entry at the new leader's no-op index.
        "outdated": another node holds an entry of a newer term where the leader has an
        uncommitted one. (The leader's disk is its log without the no-op, not yet written.)"""
        own = self.cluster.nodes[leader].disk
        own_storage = own.storage
        noop_index = own_storage.last_index() + 1
        low = max(own.hard_state().commit + 1, own_storage.first_index())
        outdated = False
        for node_id, node in self.cluster.nodes.items():
            if node_id == leader:
                continue
            storage = node.disk.storage
            if storage.last_index() >= noop_index:
                return "overwrites"
            for index in range(max(low, storage.first_index()), storage.last_index() + 1):
                if storage.term(index) > own_storage.term(index):
                    outdated = True
                    break
        return "outdated" if outdated else None

    def _on_delivery(self, message: Message) -> None:
        """A leader that was just acked an entry of an earlier term (sent alone, ahead of its
        no-op) is hunted at once: figure 8's moment."""
        if not self.active or message.kind != MessageKind.APPEND_RESPONSE or message.reject:
            return
        entry_term = self.cluster._leader_term_at_index(message.target, message.term, message.index)
        if entry_term is None or entry_term >= message.term:
            return
        if self.rng.random() < HUNT_OLD_ACK_PROBABILITY:
            self._count("hunt_old_ack")
            self.cluster.schedule(0, lambda: self._hunt(message.target, message.term, cut_off=True))

    def _hunt(self, leader: NodeId, term: int, cut_off: bool) -> None:
        node = self.cluster.nodes[leader]
        if not self.active or not node.alive or node.role != Role.LEADER or node.term != term:
            return
        self._count("hunt")
        if cut_off:
            self.cluster.isolate(leader)
        self.cluster.crash(leader, "right after its election")
        self.cluster.schedule(self.rng.randint(*HUNT_RESTART_MS), lambda: self._revive(leader, cut_off))

    def _revive(self, node_id: NodeId, cut_off: bool) -> None:
        if not self.active:
            return
        if cut_off:
            self.cluster.reconnect(node_id)
        if not self.cluster.nodes[node_id].alive:
            self.cluster.restart(node_id)

    def _churn(self) -> None:
        leaders = self.cluster.claimed_leaders()
        if not leaders:
            return
        leader = self.rng.choice(leaders)
        conf = self.cluster.nodes[leader].disk.conf_state
        options = []
        if len(self.cluster.nodes) < NODES_PER_RUN_MAX:
            options.append("add_learner")
            if len(conf.voters) >= 3:
                options.append("replace")
        if conf.learners:
            options.append("promote")
        if len(conf.voters) >= 4:
            options.append("remove")
        if not options:
            return
        option = self.rng.choice(options)
        if option == "add_learner":
            steps = (ConfChangeStep(ConfChangeKind.ADD_LEARNER, self._new_node()),)
        elif option == "replace":
            old = self.rng.choice(sorted(conf.voters))
            steps = (ConfChangeStep(ConfChangeKind.ADD_VOTER, self._new_node()), ConfChangeStep(ConfChangeKind.REMOVE_NODE, old))
        elif option == "promote":
            steps = (ConfChangeStep(ConfChangeKind.ADD_VOTER, self.rng.choice(sorted(conf.learners))),)
        else:
            steps = (ConfChangeStep(ConfChangeKind.REMOVE_NODE, self.rng.choice(sorted(conf.voters))),)
        self._count(option)
        try:
            self.cluster.change_membership(leader, ConfChange(steps=steps))
        except RaftError:
            pass

    def _new_node(self) -> NodeId:
        node_id = f"n{self._next_node_number}"
        self._next_node_number += 1
        self.cluster.add_node(node_id, peers=(), tick_period_ms=self.rng.randint(8, 12))
        return node_id

    # -- the end of the run -----------------------------------------------------------------

    def settle_and_check_liveness(self) -> None:
        """Stop the faults, heal, restart every node (the live ones too, so that every driver
        starts afresh while answers to its previous life may still be in flight); then one
        leader and one new value applied on every voter within the bound."""
        cluster = self.cluster
        self.active = False
        cluster.heal()
        cluster.network.clear_link_faults()
        cluster.set_faults(SETTLED_FAULTS)
        for node_id, node in cluster.nodes.items():
            node.crash_during_next_write = False
            if node.alive:
                cluster.crash(node_id, "to restart with the others")
            cluster.restart(node_id)
        bound_ms = LIVENESS_ELECTION_TIMEOUTS * cluster.election_timeout_ms()
        started_ms = cluster.now_ms
        down = self._one_voter_down() if self.plan.learners else None
        leader = cluster.wait_for_leader(timeout_ms=bound_ms)
        if down is not None:
            cluster.restart(down)
        if leader is None:
            claims = {n: (cluster.nodes[n].role.name, cluster.nodes[n].term) for n in cluster.live_nodes()}
            raise LivenessViolation(
                f"at {cluster.now_ms}ms: no single leader {bound_ms}ms ({LIVENESS_ELECTION_TIMEOUTS} election"
                f" timeouts) after the faults stopped; roles and terms: {claims}"
            )
        value = b"final-" + cluster.new_value()
        attempts: list[bytes] = []
        deadline_ms = started_ms + 2 * bound_ms

        def done() -> bool:
            for attempt in attempts:
                index = cluster.checker.value_index.get(attempt)
                if index is None:
                    continue
                leader_now = cluster.single_leader()
                if leader_now is None:
                    return False
                conf = cluster.nodes[leader_now].disk.conf_state
                if all(cluster.has_applied(voter, index) for voter in conf.voters | conf.voters_outgoing):
                    return True
            return False

        while cluster.now_ms < deadline_ms and not done():
            attempt = value + f"#{len(attempts)}".encode()
            if cluster.propose_to_leader(attempt) is not None:
                attempts.append(attempt)
            cluster.run_until(done, min(cluster.election_timeout_ms(), deadline_ms - cluster.now_ms))
        if not done():
            states = {
                n: (cluster.nodes[n].role.name, cluster.nodes[n].term, cluster.nodes[n].disk.applied_index)
                for n in cluster.live_nodes()
            }
            raise LivenessViolation(
                f"at {cluster.now_ms}ms: a new value was not applied on every voter within"
                f" {2 * bound_ms}ms of healing; role, term, applied: {states}"
            )

    def _one_voter_down(self) -> NodeId | None:
        """Learners runs elect their settled leader with one voter down: a majority of the
        voters must suffice, however many learners there are."""
        cluster = self.cluster
        newest = max(cluster.nodes.values(), key=lambda node: (node.disk.hard_state().term, node.disk.storage.last_index()))
        conf = newest.disk.conf_state
        if conf.voters_outgoing or len(conf.voters) < 3 or not conf.learners:
            return None
        down = self.rng.choice(sorted(conf.voters))
        cluster.crash(down, "to settle with a voter down")
        return down

    def check_reads_answered(self) -> None:
        """In the settled cluster, reads asked on every node at once are all served (no two
        requesters' contexts collide at the leader, none is forgotten), and no read of a
        running node is left without an answer or an error."""
        cluster = self.cluster
        bound_ms = LIVENESS_ELECTION_TIMEOUTS * cluster.election_timeout_ms()

        def members_caught_up() -> bool:
            leader = cluster.single_leader()
            if leader is None:
                return False
            conf = cluster.nodes[leader].disk.conf_state
            commit = cluster.nodes[leader].disk.hard_state().commit
            return all(cluster.nodes[n].leader == leader and cluster.has_applied(n, commit)
                       for n in conf.all_nodes())

        if not cluster.run_until(members_caught_up, bound_ms):
            raise LivenessViolation(f"at {cluster.now_ms}ms: the members did not catch up with the leader")
        # Each node's client retries a read that failed (a leader change can lose it) until it
        # is served or the bound is up, as sandctl does.
        nodes = sorted(cluster.nodes[cluster.single_leader()].disk.conf_state.all_nodes())
        attempts = {node_id: 0 for node_id in nodes}

        def label(node_id: str) -> bytes:
            return f"settled-read-{node_id}-{attempts[node_id]}".encode()

        def members() -> list[str]:
            # A member removed meanwhile (its removal committing now) never hears of it.
            leader = cluster.single_leader()
            conf = cluster.nodes[leader].disk.conf_state.all_nodes() if leader else nodes
            return [node_id for node_id in nodes if node_id in conf]

        leader_when_asked = (cluster.single_leader(), len(cluster.leader_history))

        def all_served() -> bool:
            for node_id in members():
                if label(node_id) in cluster.read_failures and leader_when_asked == (
                        cluster.single_leader(), len(cluster.leader_history)):
                    raise LivenessViolation(
                        f"at {cluster.now_ms}ms: a read on {node_id} failed ({cluster.read_failures[label(node_id)]})"
                        f" although {leader_when_asked[0]} led throughout: a requester went unanswered")
                if label(node_id) in cluster.read_failures and cluster.nodes[node_id].alive:
                    attempts[node_id] += 1
                    cluster.schedule(READ_RETRY_MS, lambda node_id=node_id: cluster.read_index(node_id, label(node_id)))
            return all(label(node_id) in cluster.read_results for node_id in members())

        for node_id in nodes:
            cluster.read_index(node_id, label(node_id))
        if not cluster.run_until(all_served, bound_ms):
            missing = {label(n): cluster.read_failures.get(label(n), "no answer") for n in members()
                       if label(n) not in cluster.read_results}
            raise LivenessViolation(
                f"at {cluster.now_ms}ms: reads asked at once on every member of the settled cluster were not all"
                f" served within {bound_ms}ms (with retries): {missing}")
        longest_read_ms = max(int(cluster.read_timeout_seconds(node) * 1000) for node in cluster.nodes.values())
        cluster.run_for(longest_read_ms + 1)
        unanswered = cluster.reads_unanswered()
        if unanswered:
            raise LivenessViolation(f"at {cluster.now_ms}ms: reads never answered: {unanswered}")

    def check_acknowledged_writes(self) -> None:
        """Every acknowledged value is at its index on every voter (durability after crashes)."""
        cluster = self.cluster
        bound_ms = LIVENESS_ELECTION_TIMEOUTS * cluster.election_timeout_ms()
        # Without pre-vote, a node that restarted late may have called an election meanwhile.
        leader = cluster.wait_for_leader(timeout_ms=bound_ms)
        if leader is None:
            raise LivenessViolation(f"at {cluster.now_ms}ms: no single leader {bound_ms}ms after the reads")
        conf = cluster.nodes[leader].disk.conf_state
        # A retried final value may have been acknowledged after the first one settled: let
        # every voter catch up with the newest acknowledged index first.
        newest = cluster.checker.acked_index_max
        if not cluster.run_until(lambda: all(cluster.has_applied(v, newest) for v in conf.voters), bound_ms):
            raise LivenessViolation(f"at {cluster.now_ms}ms: voters did not apply up to acknowledged index {newest}")
        for voter in sorted(conf.voters):
            applied = {a.index: a.data for a in cluster.nodes[voter].disk.applied}
            for value, index in cluster.checker.acked.items():
                if applied.get(index) != value:
                    raise InvariantViolation(
                        f"acknowledged write {value!r} at index {index} is missing on voter {voter}"
                        f" (found {applied.get(index)!r})"
                    )


def run_seed(seed: int, verbose: bool = False, fault_duration_ms: int | None = None, churn: bool | None = None) -> RunResult:
    rng = random.Random(seed)
    plan = make_plan(rng, fault_duration_ms, churn)
    result = RunResult(seed=seed, plan=plan.describe())
    cluster = Cluster(
        node_count=plan.node_count,
        seed=seed,
        config=plan.config,
        tick_periods_ms=plan.tick_periods_ms,
        verbose=verbose,
        rng=rng,
    )
    chaos = Chaos(cluster, plan, rng)
    try:
        chaos.start()
        cluster.run_for(plan.fault_duration_ms)
        chaos.settle_and_check_liveness()
        chaos.check_reads_answered()
        chaos.check_acknowledged_writes()
    except Exception as violation:  # noqa: BLE001 -- a harness error is reported with its seed too
        kind = type(violation).__name__
        if not isinstance(violation, (InvariantViolation, LivenessViolation)):
            kind = f"harness or core error {kind}"
        result.violation = f"{kind}: {violation}"
        result.traceback = traceback.format_exc()
    result.trace_digest = cluster.trace.digest()
    result.event_count = cluster.trace.event_count
    result.end_ms = cluster.now_ms
    result.proposals = chaos.proposal_count
    result.acked = len(cluster.checker.acked)
    result.leaders = len(cluster.checker.leader_of_term)
    result.counts = chaos.counts
    return result
