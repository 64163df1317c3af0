"""Driver: carries out the Raft core's Readys. Production and the simulator run this code.

It depends only on the seams in contracts.py (Store, StateMachine, Transport, Callbacks) and is
given the time as `now_seconds` arguments: no clock, no thread, no socket here. One `process`
is one turn of DESIGN.md's loop: ask the ReadIndex for new reads; for each Ready, send the
messages that promise nothing, persist and apply in ONE batch (durable only when it holds a
promise: entries, a new term or vote, a snapshot), then send the messages that promise the
persisted state, tell the callbacks what was applied, serve the reads that became safe, and
advance; finally expire reads nobody will answer.

Read contexts are `node id / incarnation / counter`: unique across nodes (two followers' reads
never collide at the leader) and across restarts (an answer meant for a previous incarnation
matches no read of this one). The incarnation is random bytes chosen by whoever builds the
driver.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from node.errors import BadRequest, NoLeader, NotLeader, SandStoreError, Unavailable
from node.raft import errors as raft_errors
from node.raft.node import RaftNode
from node.raft.progress import PROGRESS_STATE
from node.raft.quorum import has_quorum
from node.raft.types import ENTRY_KIND, MESSAGE_KIND, ROLE, ConfChange, HardState, Message, Ready, entries_data_bytes
from node.replicator.contracts import DriverCallbacks, StateMachine, Store, Transport
from node.stats import LatencySamples

log = logging.getLogger("sandstore.raft")

# A core that keeps producing Readys without settling is handed back to the loop after this
# many; the loop comes back at once (has_ready), so a busy node cannot starve its clients.
READY_ROUNDS_PER_PROCESS_MAX = 64
REJECTED_LOG_INTERVAL_SECONDS = 5.0  # one log line per kind of rejected peer message
# A new cluster's nodes start from an identical snapshot at this index (README, Bootstrap).
BOOTSTRAP_INDEX = 1
# A follower holds committed entries back for up to apply_hold_seconds (APPLY_HOLD_TICKS in
# production), and applies them in one batch, instead of applying after every
# acknowledgement. At one write outstanding each APPEND carried the commit of the write before
# it: the follower acknowledged, applied that entry, and the apply batch (deferred by
# NodeStore) rode in the next durable log batch, so the fsync on the next write's critical path
# flushed the state machine's pages as well as the log's (an LMDB commit costs about what it
# writes: ~80 us for a log entry, ~300 us with five tables touched, on the benchmark machine),
# and the apply's CPU competed with the delivery of the acknowledgement it had just sent.
# Held, most durable batches carry the log alone, and one apply batch writes each page once
# for many entries. Whatever waits for the follower's applied state releases the hold at once:
# its own confirmed reads, a stale read of its state (release_hold), a client write it
# forwarded (answered after it applies here), a membership change (it takes effect when
# applied); so do more than APPLY_HOLD_ENTRIES_MAX entries and any role but follower.
APPLY_HOLD_ENTRIES_MAX = 256
# A follower applies committed entries at most this many ticks after it learned them (or at
# once when anything waits for them, above). Each apply batch rides in the follower's next
# durable log commit, so a one-tick hold put the state machine's pages into the fsync of one
# write in three at one write outstanding; the follower's log commit with
# them wrote 10-16 scattered pages against about 5 without. Write at 1 outstanding, two
# clusters measured in alternating 0.25 s bursts on one machine (p50): 1 tick 4.20 ms,
# 5 ticks 3.99; 1 tick 3.59, 10 ticks 3.22; 10 ticks 2.78, 25 ticks 2.65.
APPLY_HOLD_TICKS = 25
# Client writes a follower forwarded and has not applied yet (its client waits for that): kept
# until applied here, or for read_timeout_seconds at most (a forward may be lost), and at most
# this many (the oldest is forgotten first: its client then waits at most one hold).
FORWARDS_PENDING_MAX = 1024


class DiskLost(Exception):
    """A peer's message proves that this node lost state it had acknowledged: its log holds
    only the bootstrap snapshot, yet the leader commits beyond it on the strength of this node's
    earlier acks; or the peer saw this node hold a later term than it holds now
    (promised_term > held_term: a wiped leader, or a follower whose vote made the new leader).
    Serving on would break Raft's promises: the node must stop (fail-stop)."""

    def __init__(self, node_id: str, leader: str, commit_index: int, *, promised_term: int = 0,
                 held_term: int = 0) -> None:
        if promised_term:
            super().__init__(f"node {node_id} holds term {held_term} but {leader} saw it hold term {promised_term}")
        else:
            super().__init__(f"node {node_id} holds no entries but leader {leader} commits up to {commit_index}")
        self.node_id = node_id
        self.leader = leader  # the peer whose message proved it
        self.commit_index = commit_index
        self.promised_term = promised_term
        self.held_term = held_term


@dataclass(slots=True)
class _Proposal:
    """A command this node proposed as leader, kept until it is applied: the value it was
    decoded to (so that it is not decoded again) and when, for the commit latency."""

    term: int
    decoded: object | None  # None: the proposer kept no decoded value (decode on apply)
    proposed_at: float
    forwarded_by: str = ""  # the follower whose client sent it, which answers once it applies it


@dataclass
class DriverCounters:
    elections_seen: int = 0
    snapshots_installed: int = 0
    snapshots_sent: int = 0
    peer_messages_rejected: int = 0
    forwards_dropped: int = 0


class Driver:
    def __init__(self, core: RaftNode, store: Store, state_machine: StateMachine, transport: Transport,
                 callbacks: DriverCallbacks, *, node_id: str, incarnation: bytes, applied_index: int,
                 read_timeout_seconds: float, apply_hold_seconds: float = 0.0,
                 own_entries_flush_seconds: float = 0.0, peer_fresh_seconds: float = 0.0,
                 own_entries_unflushed_from: int = 1) -> None:
        """apply_hold_seconds: how long a follower may hold committed entries back to apply
        them in one batch (APPLY_HOLD_ENTRIES_MAX); 0 applies them as soon as they are known.
        own_entries_flush_seconds: how long a leader may leave its own new entries unflushed
        while its followers can commit them without it (see OWN ENTRIES below); 0 flushes them
        in the batch that writes them. peer_fresh_seconds: a follower heard from within this
        long counts as able to acknowledge promptly. own_entries_unflushed_from: a Ready needs
        at least this many entries for the leader to leave them unflushed (a lightly loaded
        leader flushes in the batch: see OWN ENTRIES)."""
        assert incarnation, "an incarnation makes read contexts unique across restarts"
        assert apply_hold_seconds >= 0, apply_hold_seconds
        assert own_entries_flush_seconds >= 0 and peer_fresh_seconds >= 0, (own_entries_flush_seconds, peer_fresh_seconds)
        self.core = core
        self._store = store
        self._state_machine = state_machine
        self._transport = transport
        self._callbacks = callbacks
        self.node_id = node_id
        self.applied_index = applied_index
        self._read_timeout_seconds = read_timeout_seconds
        self._read_context_prefix = node_id.encode() + b"/" + incarnation + b"/"
        self._read_counter = 0
        self._reads_to_ask: list[int] = []  # tokens registered, ReadIndex not yet asked
        self._read_contexts: dict[bytes, tuple[list[int], float]] = {}  # context -> (tokens, asked at)
        self._reads_confirmed: list[tuple[int, list[int], float]] = []  # (read index, tokens, asked at)
        hard_state = store.hard_state()
        self._durable_term_and_vote = (hard_state.term, hard_state.vote)
        # HARD STATE. The commit index is volatile in Raft: a restarted node learns it again from
        # the leader (and a leader commits again by its quorum). So a hard state that moved only
        # its commit is not written by the log batch that carries it: at one write outstanding
        # nearly every follower Ready is one, and writing it put the meta table's page (and its
        # share of the tree above it) into the follower's log fsync of every write. It waits
        # here, the newest one, and is written with the next batch that applies entries (whose
        # applied index sits in the same page, so it costs no page there): the stored commit
        # stays >= the stored applied index, as the core requires on restart. A new term or vote
        # is a promise and is written, with everything else in its hard state, at once.
        self._hard_state_unwritten: HardState | None = None
        self._last_leader = ""
        self._proposals: dict[int, _Proposal] = {}  # index -> own proposal not applied yet
        self.commit_latency = LatencySamples()
        self.counters = DriverCounters()
        self.last_contact: dict[str, float] = {}  # peer -> when last heard from
        self._rejected_logged_at: dict[str, float] = {}  # kind of rejection -> when last logged
        self._snapshot_sends: dict[tuple[str, int], float] = {}  # (peer, index) -> started
        self._snapshot_receive_started: float | None = None
        self._apply_hold_seconds = apply_hold_seconds
        self._held_since: float | None = None  # since when committed entries have waited to apply
        self._held_normal_through = 0  # index up to which the waiting entries are all NORMAL
        self._hold_released = False  # release_hold(): what waits now is applied without a hold
        self._forwards_pending: dict[bytes, float] = {}  # command forwarded -> when, until applied here
        # The leader the pending forwards were last sent to ("" while none is reachable: they wait
        # here, parked, until one is: _forwards_follow_leader).
        self._forwards_sent_to = ""
        assert own_entries_unflushed_from >= 1, own_entries_unflushed_from
        self._own_entries_flush_seconds = own_entries_flush_seconds
        self._own_entries_unflushed_from = own_entries_unflushed_from
        self._peer_fresh_seconds = peer_fresh_seconds
        # (index, term) of the last own entry written without a flush, and since when: None
        # while everything this node wrote is durable.
        self._own_entries_unflushed: tuple[int, int] | None = None
        self._own_entries_unflushed_since = 0.0
        self._flushed_in_ready = False  # the Ready being carried out had a durable batch
        self._ready_entries_unflushed = False  # ... and wrote its entries without a flush

    # ----- input from peers

    def step(self, message: Message, now_seconds: float) -> None:
        """A validated message from a peer. One that contradicts this node's state is dropped,
        counted and logged; one that proves this node lost its disk raises DiskLost."""
        self.last_contact[message.source] = now_seconds
        kind = message.kind
        if kind is MESSAGE_KIND.HEARTBEAT:
            if message.commit > BOOTSTRAP_INDEX and self.applied_index <= BOOTSTRAP_INDEX:  # else decided here
                self._check_disk_not_lost(message)
        elif kind is MESSAGE_KIND.INSTALL_SNAPSHOT and self._snapshot_receive_started is None:
            self._snapshot_receive_started = now_seconds
        elif kind is MESSAGE_KIND.INSTALL_SNAPSHOT_RESPONSE and message.snapshot_done:
            self._note_snapshot_sent(message.source, message.index, now_seconds)
        try:
            self.core.step(message)
        except raft_errors.RejectedMessage as error:
            if getattr(error, "lost_state", False):  # the core's own proof (StateLost)
                raise DiskLost(self.node_id, message.source, message.commit, promised_term=error.promised_term,
                               held_term=error.held_term) from None
            self._rejected(message, error, now_seconds)

    def _check_disk_not_lost(self, message: Message) -> None:
        # A leader's heartbeat commits at most what this node acknowledged (min(match, commit)):
        # a commit beyond a log that holds only the bootstrap snapshot means the acks came from
        # a previous life of this node's disk.
        if message.commit <= BOOTSTRAP_INDEX or self.applied_index > BOOTSTRAP_INDEX:
            return  # the common case, decided without asking the core
        status = self.core.status()
        if message.term >= status.term and message.commit > status.last_index <= BOOTSTRAP_INDEX:
            raise DiskLost(self.node_id, message.source, message.commit)

    def _rejected(self, message: Message, error: Exception, now_seconds: float) -> None:
        self.counters.peer_messages_rejected += 1
        kind = f"{message.kind.name}:{type(error).__name__}"
        logged_at = self._rejected_logged_at.get(kind)
        if logged_at is None or now_seconds - logged_at >= REJECTED_LOG_INTERVAL_SECONDS:
            self._rejected_logged_at[kind] = now_seconds
            log.warning("dropped a %s from %s that contradicts this node's state: %s (%d rejected so far)",
                        message.kind.name, message.source, error, self.counters.peer_messages_rejected)

    def receive_forward(self, source: str, command: object, now_seconds: float) -> None:
        """A follower's client command, for this node to propose if it leads. A peer is not
        trusted: only a command the state machine accepts enters the log."""
        self.last_contact[source] = now_seconds
        try:
            if not isinstance(command, bytes):
                raise BadRequest("the forward holds no command")
            decoded = self._state_machine.decode(command)
        except SandStoreError as error:
            self.counters.forwards_dropped += 1
            log.warning("dropped a malformed forward from %s: %s", source, error)
            return
        try:
            self._propose(command, decoded, now_seconds, forwarded_by=source)
        except (NotLeader, NoLeader):
            pass  # the follower's client times out and retries; its session makes that safe

    # ----- requests from this node's clients

    def propose(self, command: bytes, now_seconds: float, decoded: object | None = None) -> None:
        """Start replicating `command`: proposed here if this node leads, else forwarded to the
        leader. Raises NotLeader / NoLeader when neither is possible. decoded: what
        StateMachine.decode(command) returns, if the caller has it (it built the command), so
        that this node does not decode its own proposal again to apply it."""
        if self.core.role == ROLE.LEADER:
            self._propose(command, decoded, now_seconds)
            return
        leader = self.core.lead
        if not leader:
            raise NoLeader("no leader is known right now (election in progress?); retry shortly")
        if self.core.election_elapsed_ticks * 2 >= self.core.config.election_ticks_min:
            # Silent for half an election timeout (a partition, most likely): a forward would
            # vanish and cost the client a whole attempt timeout; "nothing changed" lets it try
            # another node at once, and the next leader as soon as there is one.
            raise NoLeader(f"the leader {leader} has not been heard from for a while; retry shortly")
        # The connection to the leader closed (its process died, most likely) and nothing came
        # from it since: a forward would vanish with it. The command then waits here, parked,
        # and goes to the next leader as soon as one is known (_forwards_follow_leader), tens of
        # milliseconds later, instead of costing its client an attempt timeout.
        parked = self.core.early_campaign_ticks is not None
        if not parked:
            self._transport.send_forward(leader, command)
            if not self._forwards_pending:
                self._forwards_sent_to = leader  # else process() decides: some may wait parked
        # Its client waits for this node to apply it: no hold until then. (The leader proposes
        # the very bytes forwarded, so the applied entry is recognised by its data.)
        # Popped first so the map stays in forwarding order (oldest first: _forwards_wait).
        self._forwards_pending.pop(command, None)
        self._forwards_pending[command] = now_seconds
        if len(self._forwards_pending) > FORWARDS_PENDING_MAX:
            del self._forwards_pending[next(iter(self._forwards_pending))]
        if parked:
            self._forwards_sent_to = ""  # all pending go to the next reachable leader

    def _propose(self, command: bytes, decoded: object | None, now_seconds: float, forwarded_by: str = "") -> None:
        try:
            term, index = self.core.propose(command)
        except raft_errors.NotLeader as error:
            if error.leader_hint:
                raise NotLeader("not the leader", error.leader_hint) from None
            raise NoLeader("no leader is known right now; retry shortly") from None
        except raft_errors.ProposalDropped as error:
            raise NoLeader(f"proposal dropped: {error}; retry shortly") from None
        self._proposals[index] = _Proposal(term, decoded, now_seconds, forwarded_by)

    def read_barrier(self, token: int) -> None:
        """Register a linearizable read; answered by Callbacks.reads_ready / reads_failed."""
        self._reads_to_ask.append(token)

    def has_work(self) -> bool:
        return bool(self._reads_to_ask) or self.core.has_ready()

    # ----- the loop body

    def tick(self, now_seconds: float) -> bool:
        self.core.tick()
        return self.process(now_seconds)

    def process(self, now_seconds: float) -> bool:
        """Carry out what the core has ready; False if it still has more (come back at once)."""
        if self._own_entries_unflushed is not None and not self._followers_commit_alone(now_seconds):
            self.flush_own_entries()  # nothing they hold commits without it: at once
        if self._reads_to_ask:
            self._ask_read_index(now_seconds)
        applied_bytes = 0
        idle = False  # the core said it had nothing ready: it is not asked again below
        log = self.core.log
        for _ in range(READY_ROUNDS_PER_PROCESS_MAX):
            if log.committed > log.applying or log.committed_held or self._held_since is not None:
                # Else nothing committed waits and no hold is on: _hold_committed would find
                # nothing to decide (most turns of a node that is not applying).
                self._hold_committed(now_seconds)
            if not self.core.has_ready():
                idle = True
                break
            ready = self.core.ready()
            self._handle_ready(ready, now_seconds)
            if ready.committed_entries:
                applied_bytes += entries_data_bytes(ready.committed_entries)  # (summed in C)
                if applied_bytes >= self.core.config.committed_bytes_per_ready_max and self.core.log.has_next_committed():
                    # A long committed tail (a node catching up after a partition) is applied
                    # one full batch (committed_bytes_per_ready_max) per turn of the loop, which
                    # serves the node's clients in between: thousands of entries take a second.
                    break
        if self._read_contexts or self._reads_confirmed:
            self._expire_reads(now_seconds)  # answers clients only: leaves the core as it was
        if self._own_entries_unflushed is not None and now_seconds >= self.own_entries_flush_due_at():
            # Due by time alone: after this turn's replies, so the flush delays none of them.
            self.flush_own_entries()
        if self._forwards_pending:
            self._forwards_follow_leader(now_seconds)
        return idle or not self.core.has_ready()

    def _forwards_follow_leader(self, now_seconds: float) -> None:
        """The client writes this node forwarded and has not applied yet go to the leader it
        can reach now, if that is not the one they were sent to (proposed here if this node
        leads): a new leader, or the old one heard from again after its link closed (parked
        forwards). The old leader may have died with them (a forward it had not proposed dies
        with its process), and their clients, who wait for this node to apply them, would
        otherwise wait a whole attempt timeout and then try elsewhere. Sending a command again
        is safe: one that also reached the log is applied once, its copy answered from the
        client's session (exactly-once)."""
        core = self.core
        if core.role == ROLE.LEADER:
            leader = self.node_id
        elif core.role == ROLE.FOLLOWER and core.lead and core.early_campaign_ticks is None:
            leader = core.lead
        else:
            return  # none reachable yet (an election, a closed link): they stay parked
        if leader == self._forwards_sent_to:
            return  # the usual case: sent there already
        self._forwards_sent_to = leader
        if not self._forwards_wait(now_seconds):
            return  # all forgotten (older than read_timeout_seconds)
        for command in list(self._forwards_pending):
            try:
                if leader == self.node_id:
                    self._propose(command, None, now_seconds)
                else:
                    self._transport.send_forward(leader, command)
            except (NotLeader, NoLeader):
                self._forwards_sent_to = ""  # no longer leading, or no address yet: try again later
                return

    def _hold_committed(self, now_seconds: float) -> None:
        """Whether the core hands out the committed entries that wait (see
        APPLY_HOLD_ENTRIES_MAX): an input to the core, decided before each Ready."""
        log = self.core.log
        waiting = log.committed_waiting() if self.core.role == ROLE.FOLLOWER else 0
        if not waiting:
            self._held_since = None
            self._hold_released = False
            log.committed_held = False
            return
        if self._held_since is None:
            self._held_since = now_seconds
        log.committed_held = (
            not self._hold_released
            and now_seconds - self._held_since < self._apply_hold_seconds
            and waiting < APPLY_HOLD_ENTRIES_MAX
            and not self._reads_confirmed
            and not self._forwards_wait(now_seconds)
            and self._waiting_entries_are_normal(log.applying + waiting)
        )

    def release_hold(self) -> bool:
        """Apply the committed entries held back now in the next process(), without waiting
        for the hold to end: a stale read on this follower waits for them (it is served what
        this node knows to be committed, as without a hold). False if none are held."""
        if not self.core.log.committed_held:
            return False
        self._hold_released = True
        self.core.log.committed_held = False  # has_ready(): the loop does not sleep first
        return True

    def _forwards_wait(self, now_seconds: float) -> bool:
        """Whether a client write this follower forwarded may still be waiting to apply here
        (forgetting those forwarded more than read_timeout_seconds ago: lost, or long answered)."""
        pending = self._forwards_pending
        if not pending:
            return False
        # Oldest first (forward): only the expired front is looked at, not every forward on
        # every Ready of a follower that forwards a busy client's writes.
        oldest_kept = now_seconds - self._read_timeout_seconds
        while pending:
            command = next(iter(pending))
            if pending[command] >= oldest_kept:
                return True
            del pending[command]
        return False

    def _waiting_entries_are_normal(self, high: int) -> bool:
        """Whether the committed entries up to `high` that wait are all NORMAL (or NOOP): a
        membership change must take effect without delay (the core counts votes and quorums
        with the configuration it has applied)."""
        low = max(self.core.log.applying, self._held_normal_through) + 1
        if low <= high:
            for entry in self.core.log.slice(low, high + 1):
                if entry.kind == ENTRY_KIND.CONF_CHANGE:
                    return False
            self._held_normal_through = high
        return True

    # ----- OWN ENTRIES: a leader's log write off the critical path
    #
    # A leader's own entries promise nothing to anyone: it sends them in its appends before
    # writing them, and no node relies on the leader's copy. Raft commits what a majority holds
    # durably, and followers acknowledge only durable entries, so with enough live followers
    # (two of a 3-node cluster) their acks alone commit an entry. The leader then writes its
    # entries in a deferred batch (no flush) and tells the core that they are not durable:
    # the core does not count the leader for them until flush_own_entries(). Its fsync leaves
    # the write's critical path (on one shared disk, three nodes' concurrent flushes slowed
    # each follower's flush by half) and one flush covers many writes. It flushes at once
    # when the followers cannot make a quorum without it (one down or lagging: the write then
    # waits for the leader's flush, as before), when anything it sends promises its log (a
    # vote, an ack), when it stops leading, and at the latest own_entries_flush_seconds after
    # the oldest unflushed entry. A crash before the flush loses only entries no quorum
    # counted it for: it restarts as a follower that lacks them.
    #
    # Not flushing costs something too: the commit then waits for enough followers (both of
    # three) instead of the fastest one and the leader. A lightly loaded leader (a Ready of
    # fewer than own_entries_unflushed_from entries) flushes in the batch, as Raft's leader
    # does: its loop would only wait for the acks meanwhile, and its own durable copy lets
    # the first ack commit. A loaded one defers, where its loop time is what limits.

    def flush_own_entries(self) -> None:
        """Make every own entry written without a flush durable, and tell the core. Outside
        a Ready only."""
        if self._own_entries_unflushed is None:
            return
        self._flush_store()
        self._own_entries_flushed()

    def _flush_store(self) -> None:
        with self._store.write_batch(durable=True):
            pass  # a durable batch flushes every batch before it

    def _own_entries_flushed(self) -> None:
        index, term = self._own_entries_unflushed
        self._own_entries_unflushed = None
        self.core.entries_durable(index, term)

    def own_entries_flush_due_at(self) -> float | None:
        """When unflushed own entries must be flushed at the latest (None: there are none):
        the loop must come back by then even if nothing arrives."""
        if self._own_entries_unflushed is None:
            return None
        return self._own_entries_unflushed_since + self._own_entries_flush_seconds

    def _followers_commit_alone(self, now_seconds: float) -> bool:
        """Whether this node still leads with followers that can commit its unflushed entries
        without it (as they could when it wrote them)."""
        return self.core.role == ROLE.LEADER and self._followers_make_quorum(now_seconds)

    def _may_leave_own_entries_unflushed(self, ready: Ready, now_seconds: float) -> bool:
        """Whether this leader's Ready may write its entries without a flush: nothing in it
        promises this node's log (no vote, no ack, no snapshot, no new term or vote) and the
        followers can commit the entries without the leader."""
        return (self._own_entries_flush_seconds > 0.0
                and len(ready.entries) >= self._own_entries_unflushed_from
                and self.core.role == ROLE.LEADER
                and ready.snapshot is None
                and not ready.messages_after_persist
                and not self._term_or_vote_changed(ready)
                and self._followers_make_quorum(now_seconds))

    def _followers_make_quorum(self, now_seconds: float) -> bool:
        """Whether the voters other than this node that are replicating and were heard from
        within peer_fresh_seconds are a quorum by themselves (of both halves of a joint
        configuration)."""
        tracker = self.core.tracker
        conf_state = tracker.conf_state
        fresh_since = now_seconds - self._peer_fresh_seconds
        last_contact = self.last_contact
        able = {peer for peer in conf_state.voters | conf_state.voters_outgoing
                if peer != self.node_id and tracker.progress[peer].state == PROGRESS_STATE.REPLICATE
                and last_contact.get(peer, -1.0) >= fresh_since}
        return has_quorum(conf_state.voters, able, conf_state.voters_outgoing)

    def committed_held_until(self) -> float | None:
        """When the committed entries held back now are due to be applied (None: none are
        held): the loop must come back by then even if nothing arrives."""
        if not self.core.log.committed_held or self._held_since is None:
            return None
        return self._held_since + self._apply_hold_seconds

    def _new_read_context(self) -> bytes:
        self._read_counter += 1
        return self._read_context_prefix + self._read_counter.to_bytes(8, "big")

    def _ask_read_index(self, now_seconds: float) -> None:
        tokens, self._reads_to_ask = self._reads_to_ask, []
        context = self._new_read_context()
        try:
            self.core.read_index(context)
        except raft_errors.NotLeader:
            self._callbacks.reads_failed(tokens, NoLeader("no leader is known right now; retry shortly"))
            return
        self._read_contexts[context] = (tokens, now_seconds)

    def _expire_reads(self, now_seconds: float) -> None:
        limit_seconds = self._read_timeout_seconds
        # A ReadIndex request lost with a leader change is never answered: fail it so the client
        # retries instead of waiting for its whole deadline.
        # Asked in time order (the map keeps it): while the oldest is young no read expired, the
        # answer of nearly every turn with a read outstanding, without a scan.
        contexts = self._read_contexts
        oldest_young = not contexts or now_seconds - next(iter(contexts.values()))[1] <= limit_seconds
        expired = [] if oldest_young else [
            context for context, (_, asked) in contexts.items() if now_seconds - asked > limit_seconds]
        for context in expired:
            tokens, _ = self._read_contexts.pop(context)
            self._callbacks.reads_failed(tokens, NoLeader("the read could not be confirmed by a leader; retry"))
        if not self._reads_confirmed:
            return
        waiting = []
        for read_index, tokens, asked in self._reads_confirmed:
            if now_seconds - asked <= limit_seconds:
                waiting.append((read_index, tokens, asked))
                continue
            self._callbacks.reads_failed(tokens, Unavailable(
                f"node {self.node_id} has applied up to index {self.applied_index} but the read needs index"
                f" {read_index}: it is not catching up with the leader; retry (or read from another node)"))
        self._reads_confirmed = waiting

    def _handle_ready(self, ready: Ready, now_seconds: float) -> None:
        self._flushed_in_ready = False
        self._ready_entries_unflushed = False
        if ready.messages_after_persist and self._own_entries_unflushed is not None:
            # They promise this node's log (a vote, an ack): all of it durable before they leave.
            self._flush_store()
            self._flushed_in_ready = True
        if ready.messages:
            self._send(ready.messages, now_seconds)
        if ready.messages_after_persist and ready.committed_entries:
            # A follower's acknowledgement waits for its log write, not for applying what was
            # committed before: the entries and hard state are one batch, the promises go out,
            # then the apply is a second batch (which the store commits with the next durable
            # one). The leader commits sooner, and every stage of the pipeline is shorter.
            self._persist(ready, now_seconds, apply=False)
            self._send(ready.messages_after_persist, now_seconds)
            applied, applied_conf = self._persist(ready, now_seconds, log=False)
        else:
            applied, applied_conf = self._persist(ready, now_seconds)  # no batch for messages only
            if ready.messages_after_persist:
                self._send(ready.messages_after_persist, now_seconds)
        if ready.conf_state is not None:  # a snapshot or a membership change took effect
            self._transport.set_peers(ready.conf_state)
        forwarders: set[str] | None = None  # followers whose forwarded writes this Ready applied
        for index, decoded, result in applied:
            proposal = self._proposals.pop(index, None)
            if proposal is not None:
                self.commit_latency.add_seconds(max(0.0, now_seconds - proposal.proposed_at))
                if proposal.forwarded_by:
                    forwarders = forwarders or set()
                    forwarders.add(proposal.forwarded_by)
            self._callbacks.applied(index, decoded, result)
        for index, term in applied_conf:
            self._callbacks.conf_applied(index, term)
        if ready.soft_state is not None:
            self._note_soft_state(ready)
        self._confirm_reads(ready)
        self.core.advance(ready, entries_durable=not self._ready_entries_unflushed)
        if forwarders:
            # A forwarding follower answers its client once it applies the write, so it must
            # learn the commit now: the next APPEND could be two ticks away (a client that waits
            # for its one write sends nothing meanwhile). Failover sends every client to a
            # follower first, and a kill measured ~10 ms longer to its first ack without this.
            for node in sorted(forwarders):
                self.core.send_commit(node)
        if self._flushed_in_ready and self._own_entries_unflushed is not None:
            self._own_entries_flushed()  # written by an earlier Ready, flushed in this one

    def _confirm_reads(self, ready: Ready) -> None:
        """The Ready's read states confirm reads this node asked; serve those now applied."""
        for read_state in ready.read_states:
            waiting = self._read_contexts.pop(read_state.context, None)
            if waiting is not None:
                self._reads_confirmed.append((read_state.index, waiting[0], waiting[1]))
        if self._reads_confirmed:
            self._serve_confirmed_reads()

    def _persist(self, ready: Ready, now_seconds: float, *, log: bool = True, apply: bool = True) -> tuple[list, list]:
        """The Ready's batch: its log part (snapshot, entries, hard state) and its apply part
        (committed entries, applied index, membership), unless one is left out (it then goes
        in a batch of its own); what it applied: [(index, decoded, result)], [(index, term)]."""
        applied: list[tuple[int, object, dict]] = []
        applied_conf: list[tuple[int, int]] = []
        # A new term or vote is a promise, written in this batch (with the newest commit); a
        # hard state that moved only its commit index waits (HARD STATE, above).
        term_or_vote_changed = self._term_or_vote_changed(ready)
        if log and ready.hard_state is not None:
            self._hard_state_unwritten = None if term_or_vote_changed else ready.hard_state
        # Most Readys of an idle or read-heavy node carry only messages (heartbeats, ReadIndex
        # rounds) or a commit index alone: they need no batch at all.
        has_log = log and (ready.snapshot is not None or bool(ready.entries) or term_or_vote_changed)
        has_apply = apply and (bool(ready.committed_entries) or ready.conf_state is not None)
        if not (has_log or has_apply):
            return applied, applied_conf
        # The log part (entries, a new term or vote, snapshots) is a promise to other nodes:
        # durable before any message that depends on it. A batch that only applies committed
        # entries (and moves the commit index) can be redone from the log, so it may skip the
        # full flush.
        unflushed = has_log and self._may_leave_own_entries_unflushed(ready, now_seconds)
        with self._store.write_batch(durable=has_log and not unflushed) as batch:
            if has_log:
                self._write_log(batch, ready, now_seconds, term_or_vote_changed)
            if has_apply:
                applied, applied_conf = self._apply_committed(batch, ready)
        if unflushed:
            if self._own_entries_unflushed is None:
                self._own_entries_unflushed_since = now_seconds
            last = ready.entries[-1]
            self._own_entries_unflushed = (last.index, last.term)
            self._ready_entries_unflushed = True
        elif has_log:
            self._flushed_in_ready = True
        if has_log and term_or_vote_changed:
            self._durable_term_and_vote = (ready.hard_state.term, ready.hard_state.vote)
        return applied, applied_conf

    def _write_log(self, batch, ready: Ready, now_seconds: float, term_or_vote_changed: bool) -> None:
        if ready.snapshot is not None:
            self._install_snapshot(batch, ready, now_seconds)
        if ready.entries:
            batch.append_entries(ready.entries)
        if term_or_vote_changed:
            batch.set_hard_state(ready.hard_state)

    def _apply_committed(self, batch, ready: Ready) -> tuple[list, list]:
        applied: list[tuple[int, object, dict]] = []
        applied_conf: list[tuple[int, int]] = []
        for entry in ready.committed_entries:
            assert entry.index == self.applied_index + 1, (entry.index, self.applied_index)
            if entry.kind == ENTRY_KIND.NORMAL:
                if self._forwards_pending:
                    self._forwards_pending.pop(entry.data, None)
                decoded = self._decoded(entry)
                applied.append((entry.index, decoded, self._state_machine.apply(batch, entry, decoded)))
            elif entry.kind == ENTRY_KIND.CONF_CHANGE:
                self._state_machine.apply_membership(batch, entry, ConfChange.decode(entry.data))
                applied_conf.append((entry.index, entry.term))
            self.applied_index = entry.index
        if ready.committed_entries:
            if self._hard_state_unwritten is not None:
                # The commit index goes to disk with what it lets apply, so that the stored
                # commit never falls behind the stored applied index (a restart reads both).
                batch.set_hard_state(self._hard_state_unwritten)
                self._hard_state_unwritten = None
            batch.set_applied_index(self.applied_index)
        if ready.conf_state is not None:
            batch.set_conf_state(ready.conf_state)
        if applied:
            # Answered before this batch commits (and before its fsync): every entry applied
            # here is committed, so a majority holds it durably and a crash before the commit
            # only means applying it again, deterministically, to the same result. Read-your-
            # writes holds: reads are served from committed state only, after this batch (they
            # wait for applied_index, and the store commits a deferred batch before a read).
            self._callbacks.results_fixed(applied)
        return applied, applied_conf

    def _decoded(self, entry) -> object:
        """The entry's command decoded, once: this node's own proposal as the proposer decoded
        it (the same index and term is the same entry, by Raft's log matching), else decoded
        here; a malformed command is the SandStoreError it raised (apply makes it an error
        result on every node)."""
        proposal = self._proposals.get(entry.index)
        if proposal is not None and proposal.term == entry.term and proposal.decoded is not None:
            return proposal.decoded
        try:
            return self._state_machine.decode(entry.data)
        except SandStoreError as error:
            return error

    def _term_or_vote_changed(self, ready: Ready) -> bool:
        hard_state = ready.hard_state
        return hard_state is not None and (hard_state.term, hard_state.vote) != self._durable_term_and_vote

    def _install_snapshot(self, batch, ready: Ready, now_seconds: float) -> None:
        """A snapshot from the leader replaces the log and the state machine at once."""
        snapshot = ready.snapshot
        batch.install_snapshot(snapshot)
        # The core bootstraps a new cluster from an empty snapshot at index 1 (its voters come
        # from the config): there is no state-machine image to restore.
        if snapshot.data:
            self._state_machine.restore(batch, snapshot.data)
            self.counters.snapshots_installed += 1
        self.applied_index = snapshot.meta.index
        received_in_ms = 0.0
        if self._snapshot_receive_started is not None:
            received_in_ms = (now_seconds - self._snapshot_receive_started) * 1000
            self._snapshot_receive_started = None
        if snapshot.data:
            log.info("installed snapshot at index %d (%d bytes), received and restored in %.1f ms",
                     snapshot.meta.index, len(snapshot.data), received_in_ms)

    def _send(self, messages: tuple[Message, ...], now_seconds: float) -> None:
        for message in messages:
            if message.kind == MESSAGE_KIND.INSTALL_SNAPSHOT and message.snapshot_offset == 0:
                key = (message.target, message.snapshot_meta.index)
                if key not in self._snapshot_sends:
                    self._snapshot_sends[key] = now_seconds
                    log.info("sending snapshot at index %d (%d bytes) to %s", message.snapshot_meta.index,
                             message.snapshot_meta.size_bytes, message.target)
            self._transport.send(message)

    def _note_snapshot_sent(self, peer: str, index: int, now_seconds: float) -> None:
        started = self._snapshot_sends.pop((peer, index), None)
        if started is not None:
            self.counters.snapshots_sent += 1
            log.info("sent snapshot at index %d to %s in %.1f ms", index, peer, (now_seconds - started) * 1000)

    def _serve_confirmed_reads(self) -> None:
        ready_tokens: list[int] = []
        waiting = []
        for read in self._reads_confirmed:
            if read[0] <= self.applied_index:
                ready_tokens.extend(read[1])
            else:
                waiting.append(read)
        self._reads_confirmed = waiting
        if ready_tokens:
            self._callbacks.reads_ready(ready_tokens)

    def _note_soft_state(self, ready: Ready) -> None:
        leader = ready.soft_state.leader
        if leader and leader != self._last_leader:
            self.counters.elections_seen += 1
            term = self.core.term
            log.info("leader is now %s (term %d)", leader, term)
            self._callbacks.leader_changed(leader, term, leader == self.node_id)
        if ready.soft_state.role != ROLE.LEADER:
            # Proposals of a deposed leader may never commit (another entry may take their
            # index): their latency would mislead, and the entry applied there is decoded anew.
            self._proposals.clear()
        self._last_leader = leader

    # ----- what the loop and the status need to know

    def reads_pending(self) -> int:
        return len(self._reads_to_ask) + len(self._read_contexts) + len(self._reads_confirmed)
