"""RaftNode: the consensus state machine. Input is a tick, a message or a request; output is
a Ready batch (see types.Ready for what the driver must do with it, and in which order).

Structure after etcd-io/raft: terms are handled once at the top of step(); each role has its
own step function and tick function, swapped in by become_follower / become_pre_candidate /
become_candidate / become_leader.

Durability promises: a message that reveals state which must survive a crash goes into
Ready.messages_after_persist (vote requests and answers, append answers, the answer to a
completed snapshot). A leader counts its own log towards a quorum only for entries the driver
confirmed durable (advance(), or entries_durable() later), so nothing is committed on the
strength of an unwritten disk; its followers' durable acks may commit them first.
"""

from __future__ import annotations

import enum
import operator
import random
from typing import Callable, Iterable

from node.raft import membership, message_checks
from node.raft.errors import (
    Compacted,
    ConfChangeInProgress,
    InvalidConfChange,
    NotLeader,
    ProposalDropped,
    RejectedMessage,
    StateLost,
    TransferRefused,
)
from node.raft.log import RaftLog
from node.raft.progress import PROGRESS_STATE, Progress
from node.raft.quorum import VoteResult, has_quorum
from node.raft.read_only import ReadOnly, ReadRequest
from node.raft.snapshot_receiver import SnapshotReceiver
from node.raft.snapshot_sender import SnapshotSender
from node.raft.storage import Storage
from node.raft.tracker import ProgressTracker
from node.raft.types import (
    ENTRY_KIND,
    MESSAGE_KIND,
    ROLE,
    NO_INDEX,
    NO_NODE,
    NO_TERM,
    ConfChange,
    ConfChangeKind,
    ConfChangeStep,
    ConfState,
    Config,
    Entry,
    EntryKind,
    HardState,
    Message,
    MessageKind,
    NodeId,
    ReadState,
    Ready,
    Snapshot,
    SnapshotMeta,
    SoftState,
    Status,
    entries_data_bytes,
    entries_size_bytes,
)

_entry_kind = operator.itemgetter(2)  # Entry.kind, callable from C (map)
assert Entry._fields[2] == "kind"

# Context of the VOTE a TIMEOUT_NOW triggers: it bypasses leader stickiness.
TRANSFER_CONTEXT = b"transfer"

# leader_unreachable(): the leader must also have been silent this many heartbeat intervals
# (a connection can drop and come back while the leader lives) before a follower grants
# pre-votes. The followers then campaign one after another, in the order of their ids, a tick
# and then EARLY_CAMPAIGN_STAGGER_HEARTBEATS apart: with a random share instead, two followers
# picked the same 10 ms tick about one crash in four (both passed their pre-votes, split the
# vote and waited out a candidate timeout, 250-500 ms), and the others' campaign waited for the
# slowest random draw. The first in line wins unless its log is behind; then a follower that
# refuses its pre-vote for that campaigns at once (_handle_vote_request).
LEADER_SILENCE_HEARTBEATS_MIN = 1
EARLY_CAMPAIGN_STAGGER_HEARTBEATS = 2

# The snapshot every node of a brand-new cluster starts from (see __init__).
BOOTSTRAP_INDEX = 1
BOOTSTRAP_TERM = 1

_AFTER_PERSIST_KINDS = frozenset(
    {MESSAGE_KIND.VOTE, MESSAGE_KIND.VOTE_RESPONSE, MESSAGE_KIND.PRE_VOTE_RESPONSE, MESSAGE_KIND.APPEND_RESPONSE}
)
_LEADER_KINDS = frozenset({MESSAGE_KIND.APPEND, MESSAGE_KIND.HEARTBEAT, MESSAGE_KIND.INSTALL_SNAPSHOT})
_VOTE_REQUEST_KINDS = frozenset({MESSAGE_KIND.VOTE, MESSAGE_KIND.PRE_VOTE})
# Sent only by the leader of the term (with _LEADER_KINDS), and only to a node of the sender's term.
_LEADER_ANSWER_KINDS = frozenset({MESSAGE_KIND.TIMEOUT_NOW, MESSAGE_KIND.READ_INDEX_RESPONSE})
_SAME_TERM_KINDS = frozenset({MESSAGE_KIND.TIMEOUT_NOW, MESSAGE_KIND.READ_INDEX})
_REPLICATION_RESPONSE_KINDS = frozenset(
    {MESSAGE_KIND.APPEND_RESPONSE, MESSAGE_KIND.HEARTBEAT_RESPONSE, MESSAGE_KIND.INSTALL_SNAPSHOT_RESPONSE}
)
# Messages sent only once the sender's term was on its disk (they leave after the Ready that
# persisted it): their term is a promise the sender must keep (Message.promised_term). Not the
# pre-vote kinds: their term is the one proposed, which nobody has adopted.
_TERM_PROMISE_KINDS = frozenset({MESSAGE_KIND.VOTE, MESSAGE_KIND.VOTE_RESPONSE, MESSAGE_KIND.APPEND_RESPONSE})


class _Campaign(enum.Enum):
    PRE_ELECTION = 1
    ELECTION = 2


class RaftNode:
    def __init__(self, config: Config, storage: Storage, rng: random.Random, peers: Iterable[NodeId] = ()) -> None:
        self.config = config
        self.id = config.node_id
        self._rng = rng
        self.log = RaftLog(storage, config.applied)
        hard_state, conf_state = storage.initial_state()
        peers = frozenset(peers)
        brand_new = (
            hard_state == HardState()
            and not conf_state.all_nodes()
            and storage.last_index() == NO_INDEX
            and storage.snapshot().meta.index == NO_INDEX
        )
        self.term = hard_state.term
        self.vote = hard_state.vote
        self.log.commit_to(hard_state.commit)
        if peers and brand_new:
            # Bootstrap: every node of a new cluster starts from the same snapshot at index 1
            # holding the initial configuration and the empty state machine (data b"").
            # A node added later receives that snapshot (or a later one) from the leader, so it
            # always knows the configuration its log's membership changes apply to.
            conf_state = ConfState(voters=peers)
            bootstrap = Snapshot(meta=SnapshotMeta(index=BOOTSTRAP_INDEX, term=BOOTSTRAP_TERM, conf_state=conf_state))
            self.term = BOOTSTRAP_TERM
            self.log.restore(bootstrap)
        assert self.log.applied <= self.log.committed, "applied beyond the persisted commit index"
        self.tracker = ProgressTracker(config.inflight_messages_max, config.inflight_bytes_max)
        self.tracker.set_conf_state(conf_state, self.log.last_index() + 1)

        self.role = ROLE.FOLLOWER
        self.lead: NodeId = NO_NODE
        self.lead_transferee: NodeId = NO_NODE
        self.election_elapsed_ticks = 0
        self.heartbeat_elapsed_ticks = 0
        self.randomized_election_ticks = config.election_ticks_min
        self.pending_conf_index = NO_INDEX  # the last CONF_CHANGE a leader appended
        self.uncommitted_bytes = 0
        self.read_only = ReadOnly()
        self.pending_read_requests: list[tuple[bytes, NodeId]] = []  # until the term's no-op commits
        # Whether a leader saw an entry of its term committed (for ReadIndex). Once true it stays
        # true for the term: the commit index only grows, and every entry from the leader's no-op
        # on is of its term. Reset with the term (_reset); saves a log term lookup per read.
        self.term_entry_committed = False
        self.snapshot_receiver: SnapshotReceiver | None = None
        # Set by leader_unreachable(): campaign once the leader has been silent this long.
        self.early_campaign_ticks: int | None = None
        # Per member: the highest term it showed us it holds on disk (see _note_term_promise).
        # Sent back to it as Message.promised_term, so that a member restarted on a wiped disk
        # learns from the first message it gets that it forgot a term, and stops. Kept in
        # memory only: a restart of ours forgets them, which is safe (nothing is claimed).
        self.promised_terms: dict[NodeId, int] = {}

        self._outbox = _Outbox()
        self._previous_soft_state = SoftState()
        self._previous_hard_state = hard_state
        self._ready_in_flight: Ready | None = None

        self._step_role: Callable[[Message], None] = self._step_follower
        self._tick_role: Callable[[], None] = self._tick_election
        self.become_follower(self.term, NO_NODE)

    # == public API ===========================================================================

    def tick(self) -> None:
        self._tick_role()

    def step(self, message: Message) -> None:
        """Take in one message from a peer. Raises RejectedMessage (changing nothing) for a
        message that is malformed or contradicts this node's state; the driver drops it."""
        if message.target != self.id or message.source == self.id or message.source == NO_NODE:
            return
        message_checks.check_shape(message)
        if message.promised_term > self.term and message.source in self.tracker.conf_state.all_nodes():
            # Our term only grows, on disk and here: the sender saw us at a term we no longer
            # hold. (A member's claim only: a node removed before we joined may remember a
            # previous incarnation of ours; and once we heard from the current leader, our term
            # is above anything an earlier incarnation of ours promised.)
            raise StateLost(message, f"{message.source} saw this node hold term {message.promised_term} but it "
                                     f"holds term {self.term}", promised_term=message.promised_term,
                            held_term=self.term)
        if message.term >= self.term:
            self._check_against_state(message)
        self._note_term_promise(message)
        if message.term > self.term:
            if message.kind in _VOTE_REQUEST_KINDS and self._in_lease(message):
                return  # leader stickiness: we heard from a live leader very recently
            if message.kind == MESSAGE_KIND.PRE_VOTE:
                pass  # a pre-vote never changes our term
            elif message.kind == MESSAGE_KIND.PRE_VOTE_RESPONSE and not message.reject:
                pass  # granted pre-votes carry the proposed term; ours bumps when we win
            elif message.kind in _LEADER_KINDS:
                self.become_follower(message.term, message.source)
            elif message.kind == MESSAGE_KIND.VOTE:
                # Adopt the term but keep the election timer running: only granting the vote
                # (in _handle_vote_request) or hearing from a leader resets it (Raft, Figure 2).
                # Otherwise candidates whose logs can never win, campaigning in turn with ever
                # higher terms, keep the up-to-date nodes from ever timing out (a livelock the
                # simulator found with pre-vote off: seed 2949).
                self.become_follower(message.term, NO_NODE, keep_election_timer=True)
            else:
                self.become_follower(message.term, NO_NODE)
        elif message.term < self.term:
            self._answer_stale(message)
            return

        if message.kind in _VOTE_REQUEST_KINDS:
            self._handle_vote_request(message)
        else:
            self._step_role(message)

    def _note_term_promise(self, message: Message) -> None:
        promises = message.kind in _TERM_PROMISE_KINDS or (
            message.kind == MESSAGE_KIND.INSTALL_SNAPSHOT_RESPONSE and message.snapshot_done
        )
        if promises and message.term > self.promised_terms.get(message.source, NO_TERM):
            if message.source in self.tracker.conf_state.all_nodes():
                self.promised_terms[message.source] = message.term

    def _note_leader_promise(self, message: Message) -> None:
        """Once an entry of its term is committed, the leader holds its term on disk: it won
        votes asked for after persisting it, or (a single voter) counted its own entries only
        once they were on disk with its term. (Before that, a single voter's first APPENDs may
        leave ahead of its disk write.) So every follower, not only the voters it asked, can
        tell a wiped leader what it forgot."""
        if self.log.term_or_zero(self.log.committed) == message.term:
            if message.source in self.tracker.conf_state.all_nodes():
                self.promised_terms[message.source] = message.term

    def propose(self, data: bytes) -> tuple[int, int]:
        self._check_can_propose()
        if self.uncommitted_bytes > 0 and self.uncommitted_bytes + len(data) > self.config.uncommitted_bytes_max:
            raise ProposalDropped(f"{self.uncommitted_bytes} bytes are uncommitted already")
        return self._append_entry(ENTRY_KIND.NORMAL, data)

    def propose_membership_change(self, change: ConfChange) -> tuple[int, int]:
        self._check_can_propose()
        if self.pending_conf_index > self.log.applying:
            raise ConfChangeInProgress(f"the change at index {self.pending_conf_index} is not applied yet")
        if self.tracker.conf_state.joint:
            raise ConfChangeInProgress("the configuration is joint; it is being left")
        membership.apply_change(self.tracker.conf_state, change)  # validation only
        term, index = self._append_entry(ENTRY_KIND.CONF_CHANGE, change.encode())
        self.pending_conf_index = index
        return term, index

    def read_index(self, context: bytes) -> None:
        assert context, "a read needs a non-empty, unique context"
        if self.role == ROLE.LEADER:
            self._handle_read_request(context, self.id)
        elif self.lead == NO_NODE:
            raise NotLeader(NO_NODE)
        else:
            self._send(MESSAGE_KIND.READ_INDEX, self.lead, context=context)

    def transfer_leadership(self, target: NodeId) -> None:
        if self.role != ROLE.LEADER:
            raise NotLeader(self.lead)
        if target == self.id:
            raise TransferRefused(f"{target} already leads")
        if target not in self.tracker.conf_state.voters:
            raise TransferRefused(f"{target} is not a voter of the configuration")
        if self.lead_transferee == target:
            return
        self.lead_transferee = target
        self.election_elapsed_ticks = 0  # the transfer is aborted after one election timeout
        if self.tracker.progress[target].match == self.log.last_index():
            self._send(MESSAGE_KIND.TIMEOUT_NOW, target)
        else:
            self._maybe_send_append(target, send_if_empty=True)

    def ticks_until_commit_broadcast(self) -> int | None:
        """For the driver's sleep: None when no commit waits to be told (or this node does not
        lead), else in how many ticks the one that sends it comes (_tick_heartbeat)."""
        if self.role != ROLE.LEADER or not self._outbox.commit_unsent:
            return None
        return 1 if self._outbox.commit_unsent_ticked else 2

    def send_commit(self, node: NodeId) -> None:
        """Tell follower `node` the commit index now, in an APPEND (empty when it holds the
        whole log), rather than with the next APPEND or on the tick that sends a commit no
        APPEND carried (_tick_heartbeat). For a follower whose client waits for it to apply a
        write it forwarded: nothing else may go to it for two ticks (one write outstanding).
        Ignored unless this node leads `node` and may send to it now, and when an APPEND
        broadcast has carried the newest commit since it moved (a busy leader's next entries
        did: one more message per forwarded batch would only double the APPENDs)."""
        if (self.role != ROLE.LEADER or not self._outbox.commit_unsent or node == self.id
                or node not in self.tracker.progress):
            return
        self._maybe_send_append(node, send_if_empty=True)

    def leader_unreachable(self, leader: NodeId) -> None:
        """The driver saw its connection to `leader` drop (a closed TCP connection: the
        leader's process most likely died). With Config.campaign_on_leader_unreachable, a
        follower of that leader grants pre-votes once the leader has been silent for
        LEADER_SILENCE_HEARTBEATS_MIN heartbeat intervals, and starts its own a tick later plus
        EARLY_CAMPAIGN_STAGGER_HEARTBEATS per voter before it in id order. Ignored otherwise, and when `leader` is not our leader; any
        message from the leader cancels it. A live leader is not disturbed: the pre-vote fails
        while a majority still hears from it (leader stickiness), and changes no term."""
        if not self.config.campaign_on_leader_unreachable or self.role != ROLE.FOLLOWER:
            return
        if leader == NO_NODE or leader != self.lead or self.early_campaign_ticks is not None:
            return
        in_line = sorted(self.tracker.voters() - {leader})
        if self.id not in in_line:
            return  # a learner never campaigns, nor grants a vote
        silence_ticks = LEADER_SILENCE_HEARTBEATS_MIN * self.config.heartbeat_ticks
        place = in_line.index(self.id)
        # One tick past the silence: the follower before us in line grants from the silence on.
        self.early_campaign_ticks = (silence_ticks + 1
                                     + place * EARLY_CAMPAIGN_STAGGER_HEARTBEATS * self.config.heartbeat_ticks)
        assert self.early_campaign_ticks > silence_ticks

    def has_ready(self) -> bool:
        """Whether ready() has anything to hand out. A cheap look (asked on every turn of the
        driver loop) at exactly the pending state ready() drains: the outbox's messages and
        read states, and _state_pending. ready() asserts that it leaves none of it behind."""
        outbox = self._outbox
        return bool(outbox.messages or outbox.messages_after_persist or outbox.read_states) or self._state_pending()

    def _state_pending(self) -> bool:
        """Whether the next Ready carries more than messages and read states: a due broadcast,
        a soft or hard state change, unstable log entries or snapshot, committed entries to
        hand out. The one test has_ready and ready() both make. (Spelled out rather than
        through _soft_state_if_changed, _hard_state_if_changed and RaftLog.has_next_unstable:
        asked several times per turn of the loop, mostly to hear "no", where each method
        call cost more than its test.)"""
        if self._outbox.broadcast_due:
            return True
        soft, hard, log = self._previous_soft_state, self._previous_hard_state, self.log
        if self.lead != soft.leader or self.role != soft.role:
            return True
        if self.term != hard.term or self.vote != hard.vote or log.committed != hard.commit:
            return True
        unstable = log.unstable
        if unstable.offset_in_progress < unstable.offset + len(unstable.entries):
            return True
        if unstable.snapshot is not None and not unstable.snapshot_in_progress:
            return True
        # (committed <= applying: nothing committed waits, the usual answer, without a call)
        return log.committed > log.applying and log.has_next_committed()

    def ready(self) -> Ready:
        assert self._ready_in_flight is None, "advance() the previous Ready first"
        if self._state_pending():
            ready = self._ready_with_state()
        else:
            # Messages and read states only (heartbeats and their answers, read rounds, acks of
            # duplicates): most Readys of a node. Nothing to persist, apply or compare.
            messages, messages_after_persist, read_states = self._outbox.drain()
            ready = Ready(messages=messages, messages_after_persist=messages_after_persist, read_states=read_states)
        # Only committed entries beyond committed_bytes_per_ready_max may wait for the next one.
        assert not self.has_ready() or self.log.has_next_committed(), "ready() left pending state behind"
        self._ready_in_flight = ready
        return ready

    def _ready_with_state(self) -> Ready:
        entries = tuple(self.log.unstable.next_entries())
        snapshot = self.log.unstable.next_snapshot()
        self.log.unstable.accept_in_progress()
        conf_state = snapshot.meta.conf_state if snapshot is not None else None
        committed_entries = tuple(self.log.next_committed(self.config.committed_bytes_per_ready_max))
        if committed_entries:
            self.log.accept_applying(committed_entries[-1].index)
        if ENTRY_KIND.CONF_CHANGE in map(_entry_kind, committed_entries):  # (a search in C: rarely one)
            for entry in committed_entries:
                if entry.kind == ENTRY_KIND.CONF_CHANGE:
                    conf_state = self._apply_conf_change(ConfChange.decode(entry.data))
        if self.role == ROLE.LEADER:
            released_bytes = entries_data_bytes(committed_entries)
            self.uncommitted_bytes = max(0, self.uncommitted_bytes - released_bytes)
        if self._outbox.broadcast_due:
            self._outbox.broadcast_due = False
            if self.role == ROLE.LEADER:
                self._broadcast_append()
                self._outbox.commit_unsent = False  # every follower that takes appends got it
                self._outbox.commit_unsent_ticked = False

        soft_state = self._soft_state_if_changed()
        hard_state = self._hard_state_if_changed()
        messages, messages_after_persist, read_states = self._outbox.drain()
        ready = Ready(
            soft_state=soft_state,
            hard_state=hard_state,
            entries=entries,
            snapshot=snapshot,
            committed_entries=committed_entries,
            conf_state=conf_state,
            messages=messages,
            messages_after_persist=messages_after_persist,
            read_states=read_states,
        )
        self._previous_soft_state = soft_state or self._previous_soft_state
        self._previous_hard_state = hard_state or self._previous_hard_state
        return ready

    def advance(self, ready: Ready, *, entries_durable: bool = True) -> None:
        """The driver carried out `ready`. entries_durable=False (a leader only): its entries
        were written but are not durable yet; they stay in progress, and this node does not
        count them towards a quorum, until entries_durable() says they are."""
        assert ready is self._ready_in_flight, "advance() takes the Ready that ready() returned"
        assert entries_durable or (self.role == ROLE.LEADER and ready.snapshot is None), \
            "only a leader's own entries may wait to be durable: every other write is a promise"
        self._ready_in_flight = None
        if ready.snapshot is not None:
            self.log.snapshot_applied(ready.snapshot.meta.index)
        if ready.entries and entries_durable:
            self.log.unstable.stable_to(ready.entries[-1].index, ready.entries[-1].term)
        if ready.committed_entries:
            self.log.applied_to(ready.committed_entries[-1].index)
        if self.role != ROLE.LEADER:
            return
        if not ready.entries and not ready.committed_entries:
            # Nothing was persisted or applied (a leader's Ready of heartbeats or read states):
            # its persisted log end and applied index are what the last advance saw, so its own
            # progress and the joint configuration's exit need no new look.
            return
        own_progress = self.tracker.progress[self.id]
        if own_progress.maybe_update(self.log.persisted_last_index()):
            self._maybe_commit()
        if self.tracker.conf_state.joint and self.log.applied >= self.pending_conf_index:
            # The joint configuration is in force: leave it automatically.
            leave = ConfChange(steps=(ConfChangeStep(ConfChangeKind.LEAVE_JOINT),))
            _, self.pending_conf_index = self._append_entry(ENTRY_KIND.CONF_CHANGE, leave.encode())

    def entries_durable(self, index: int, term: int) -> None:
        """Entries up to `index` (of `term`), advanced earlier with entries_durable=False, are
        now durable. Entries replaced since (this node lost leadership and a new leader
        overwrote them) are not affected. A leader now counts them towards a quorum: Raft
        commits only what a majority holds durably, and with the followers' acks alone (they
        ack only durable entries) a majority may already hold them."""
        self.log.unstable.stable_to(index, term)
        if self.role == ROLE.LEADER and self.tracker.progress[self.id].maybe_update(self.log.persisted_last_index()):
            self._maybe_commit()

    def compacted(self, index: int) -> None:
        # The log reads compacted entries from storage only, and storage now starts after
        # `index`: there is no in-memory copy to drop. Followers that fall behind get a snapshot.
        assert index <= self.log.applied, "compacted beyond what was applied"
        assert self.log.storage.first_index() > index, "storage was not compacted"

    def status(self) -> Status:
        progress = {}
        if self.role == ROLE.LEADER:
            progress = {node: each.describe() for node, each in sorted(self.tracker.progress.items())}
        return Status(
            node_id=self.id,
            role=self.role,
            leader=self.lead,
            term=self.term,
            vote=self.vote,
            commit=self.log.committed,
            applied=self.log.applied,
            first_index=self.log.first_index(),
            last_index=self.log.last_index(),
            conf_state=self.tracker.conf_state,
            progress=progress,
            lead_transferee=self.lead_transferee,
        )

    # == roles ================================================================================

    def become_follower(self, term: int, lead: NodeId, keep_election_timer: bool = False) -> None:
        election_elapsed_ticks = self.election_elapsed_ticks
        self._reset(term)
        if keep_election_timer:
            self.election_elapsed_ticks = election_elapsed_ticks
        self.lead = lead
        self.role = ROLE.FOLLOWER
        self._step_role = self._step_follower
        self._tick_role = self._tick_election

    def become_pre_candidate(self) -> None:
        assert self.role != ROLE.LEADER, "a leader does not campaign"
        # Neither term nor vote change: a pre-election only asks whether we could win.
        self.tracker.reset_votes()
        self.lead = NO_NODE
        self.early_campaign_ticks = None  # reported once, acted on once
        self.role = ROLE.PRE_CANDIDATE
        self._step_role = self._step_candidate
        self._tick_role = self._tick_election

    def become_candidate(self) -> None:
        assert self.role != ROLE.LEADER, "a leader does not campaign"
        self._reset(self.term + 1)
        # A candidate that has not won within this many ticks campaigns again. Shorter than a
        # follower's timeout: that one is long so that a slow leader is not deposed, but here
        # no leader is known, and a split vote (two pre-candidates passed their pre-votes at
        # once) would otherwise keep the group leaderless for a whole second timeout. Still
        # randomized, so that the rivals' next attempts spread apart.
        self.randomized_election_ticks = self._rng.randrange(
            max(1, self.config.election_ticks_min // 2), self.config.election_ticks_min
        )
        self.vote = self.id
        self.role = ROLE.CANDIDATE
        self._step_role = self._step_candidate
        self._tick_role = self._tick_election

    def become_leader(self) -> None:
        assert self.role == ROLE.CANDIDATE, "only a candidate wins an election"
        self._reset(self.term)
        self.lead = self.id
        self.role = ROLE.LEADER
        self._step_role = self._step_leader
        self._tick_role = self._tick_heartbeat
        own_progress = self.tracker.progress[self.id]
        own_progress.become_replicate()
        own_progress.maybe_update(self.log.persisted_last_index())
        # No membership change until everything already in the log is applied: one of those
        # entries may be a change this leader does not know about yet.
        self.pending_conf_index = self.log.last_index()
        self._append_entry(ENTRY_KIND.NOOP, b"")

    def _reset(self, term: int) -> None:
        if term != self.term:
            self.term = term
            self.vote = NO_NODE
        self.lead = NO_NODE
        self.early_campaign_ticks = None
        self.election_elapsed_ticks = 0
        self.heartbeat_elapsed_ticks = 0
        self.randomized_election_ticks = self._rng.randrange(
            self.config.election_ticks_min, self.config.election_ticks_max
        )
        self.lead_transferee = NO_NODE
        self.tracker.reset_votes()
        self.tracker.reset_progress(self.log.last_index() + 1)
        self.pending_conf_index = NO_INDEX
        self.uncommitted_bytes = 0
        self.read_only = ReadOnly()
        self.pending_read_requests = []
        self.term_entry_committed = False
        self._outbox.broadcast_due = False
        self._outbox.commit_unsent = False
        self._outbox.commit_unsent_ticked = False

    def _promotable(self) -> bool:
        return self.tracker.is_voter(self.id) and self.log.unstable.snapshot is None

    def _in_lease(self, message: Message) -> bool:
        if message.context == TRANSFER_CONTEXT or self._leader_presumed_gone():
            return False
        return (
            self.config.check_quorum
            and self.lead != NO_NODE
            and self.election_elapsed_ticks < self.config.election_ticks_min
        )

    def _leader_presumed_gone(self) -> bool:
        """The driver reported the leader unreachable, and it has been silent long enough to
        grant another follower's pre-vote (our own campaign comes later: _early_campaign_due)."""
        silence_ticks = LEADER_SILENCE_HEARTBEATS_MIN * self.config.heartbeat_ticks
        return self.early_campaign_ticks is not None and self.election_elapsed_ticks >= silence_ticks

    def _early_campaign_due(self) -> bool:
        return self.early_campaign_ticks is not None and self.election_elapsed_ticks >= self.early_campaign_ticks

    # == ticks ================================================================================

    def _tick_election(self) -> None:
        self.election_elapsed_ticks += 1
        timed_out = self.election_elapsed_ticks >= self.randomized_election_ticks
        if (timed_out or self._early_campaign_due()) and self._promotable():  # pure tests, the cheap ones first
            self.election_elapsed_ticks = 0
            self._campaign(_Campaign.PRE_ELECTION if self.config.pre_vote else _Campaign.ELECTION)

    def _tick_heartbeat(self) -> None:
        self.heartbeat_elapsed_ticks += 1
        self.election_elapsed_ticks += 1
        if self.election_elapsed_ticks >= self.config.election_ticks_min:
            self.election_elapsed_ticks = 0
            if self.config.check_quorum:
                if not self.tracker.quorum_active(self.id):
                    self.become_follower(self.term, NO_NODE)  # lost touch with a quorum
                    return
                for node, progress in self.tracker.progress.items():
                    progress.recent_active = node == self.id
            self.lead_transferee = NO_NODE  # a transfer not done within a timeout is abandoned
        if self.heartbeat_elapsed_ticks >= self.config.heartbeat_ticks:
            self.heartbeat_elapsed_ticks = 0
            self._broadcast_heartbeat(interval_elapsed=True)
        if self._outbox.commit_unsent:  # a commit that no APPEND carried since
            if self._outbox.commit_unsent_ticked:
                # Unsent for a whole tick: no APPEND is about to carry it (a client that waits
                # for one write's answer sends the next within a round trip), so send it now.
                # Sending at the first tick sent two APPENDs, and got two answers, for about
                # every other write at one write outstanding, each a turn of three loops.
                self._outbox.commit_unsent = False
                self._outbox.commit_unsent_ticked = False
                self._broadcast_append()
            else:
                self._outbox.commit_unsent_ticked = True

    # == elections ============================================================================

    def _campaign(self, campaign: _Campaign, transfer: bool = False) -> None:
        if campaign == _Campaign.PRE_ELECTION:
            self.become_pre_candidate()
            request_kind, request_term = MESSAGE_KIND.PRE_VOTE, self.term + 1
        else:
            self.become_candidate()
            request_kind, request_term = MESSAGE_KIND.VOTE, self.term
        self.tracker.record_vote(self.id, True)
        if self.tracker.tally_votes() == VoteResult.WON:  # a single voter
            if campaign == _Campaign.PRE_ELECTION:
                self._campaign(_Campaign.ELECTION, transfer)
            else:
                self.become_leader()
            return
        context = TRANSFER_CONTEXT if transfer else b""
        for voter in sorted(self.tracker.voters() - {self.id}):
            self._send(
                request_kind,
                voter,
                term=request_term,
                index=self.log.last_index(),
                log_term=self.log.last_term(),
                context=context,
            )

    def _handle_vote_request(self, message: Message) -> None:
        response_kind = (
            MESSAGE_KIND.VOTE_RESPONSE if message.kind == MESSAGE_KIND.VOTE else MESSAGE_KIND.PRE_VOTE_RESPONSE
        )
        can_vote = (
            self.vote == message.source
            or (self.vote == NO_NODE and self.lead == NO_NODE)
            or (message.kind == MESSAGE_KIND.PRE_VOTE and message.term > self.term)
        )
        if can_vote and self.log.is_up_to_date(message.index, message.log_term):
            # A granted pre-vote carries the proposed term so the pre-candidate counts it.
            self._send(response_kind, message.source, term=message.term)
            if message.kind == MESSAGE_KIND.VOTE:
                self.election_elapsed_ticks = 0
                self.vote = message.source
        else:
            self._send(response_kind, message.source, reject=True)
            if (message.kind == MESSAGE_KIND.PRE_VOTE and can_vote and self.role == ROLE.FOLLOWER
                    and self._leader_presumed_gone() and self._promotable()):
                # An early campaign we refused because its log is behind ours cannot win, and
                # the leader is gone: campaign now rather than at our own place in line, two
                # heartbeats later (a crashed leader often leaves one follower an entry short,
                # and then its replacement came 40 ms later than when the first in line wins).
                self._campaign(_Campaign.PRE_ELECTION)

    def _answer_stale(self, message: Message) -> None:
        """A message from an older term: tell a stale leader or pre-candidate our term."""
        if message.kind in _LEADER_KINDS and (self.config.check_quorum or self.config.pre_vote):
            # Without this a leader cut off by a partition would never learn it was deposed
            # (pre-vote keeps our term from reaching it through a vote request).
            self._send(MESSAGE_KIND.APPEND_RESPONSE, message.source)
        elif message.kind == MESSAGE_KIND.PRE_VOTE:
            self._send(MESSAGE_KIND.PRE_VOTE_RESPONSE, message.source, reject=True)

    # == peer input ============================================================================

    def _check_against_state(self, message: Message) -> None:
        """Raise RejectedMessage for a current- or higher-term message that no honest peer can
        send to a node in our state. Reads state only: a rejected message changes nothing."""
        kind, same_term = message.kind, message.term == self.term
        if kind in _LEADER_KINDS or kind in _LEADER_ANSWER_KINDS:
            # Only the leader of a term sends these, and a term has at most one leader.
            if same_term and (self.role == ROLE.LEADER or (self.lead != NO_NODE and self.lead != message.source)):
                leader = self.id if self.role == ROLE.LEADER else self.lead
                raise RejectedMessage(message, f"two leaders in term {self.term}: {leader} and {message.source}")
        # (commit <= committed <= last_index: decided without the log's bounds, the usual case)
        if (kind is MESSAGE_KIND.HEARTBEAT and message.commit > self.log.committed
                and message.commit > self.log.last_index()):
            # The leader caps a heartbeat's commit at what we acknowledged in its term, and we
            # acknowledge only what is on our disk: our log lost entries it had.
            lost = StateLost if self.log.last_index() <= BOOTSTRAP_INDEX else RejectedMessage
            raise lost(message, f"commit {message.commit} is beyond the log end {self.log.last_index()}")
        elif kind == MESSAGE_KIND.INSTALL_SNAPSHOT:
            receiver = self.snapshot_receiver
            if receiver is not None and receiver.is_for(message.snapshot_meta, message.source, message.term):
                if message.snapshot_offset > receiver.received_bytes:
                    # The leader sends each chunk only after we asked for its offset. (A copy
                    # delayed from before a restart of ours may also land here: dropped too.)
                    raise RejectedMessage(message, f"offset {message.snapshot_offset} does not follow the "
                                                   f"{receiver.received_bytes} bytes received")
        elif kind == MESSAGE_KIND.APPEND:
            if message.index == self.log.committed and not self.log.match_term(message.index, message.log_term):
                # Every later leader holds our committed entries (Leader Completeness).
                raise RejectedMessage(message, f"entry {message.index} of term {message.log_term} contradicts the committed log")
        elif kind in _SAME_TERM_KINDS and not same_term:
            # Both go only to a node that already shares the sender's term: the leader sends
            # TIMEOUT_NOW after we acknowledged it in its term; READ_INDEX goes to our leader.
            raise RejectedMessage(message, f"{kind.name} from a later term {message.term}")
        elif kind == MESSAGE_KIND.READ_INDEX_RESPONSE and not same_term:
            raise RejectedMessage(message, "answers a read this node never asked in that term")
        elif kind in _REPLICATION_RESPONSE_KINDS and self.role == ROLE.LEADER and same_term:
            self._check_response(message)

    def _check_response(self, message: Message) -> None:
        """A follower's answer in our term: it can only speak of entries we have."""
        # (index <= committed <= last_index, as in every heartbeat's answer: no bounds lookup)
        if message.index > self.log.committed and message.index > self.log.last_index():
            raise RejectedMessage(message, f"index {message.index} is beyond the leader's last index {self.log.last_index()}")
        if message.kind == MESSAGE_KIND.INSTALL_SNAPSHOT_RESPONSE:
            progress = self.tracker.progress.get(message.source)
            sender = progress.snapshot_sender if progress is not None else None
            if sender is not None and sender.index == message.index and message.snapshot_offset > sender.size_bytes:
                raise RejectedMessage(message, f"offset {message.snapshot_offset} is beyond the snapshot's {sender.size_bytes} bytes")

    # == step functions =======================================================================

    def _step_follower(self, message: Message) -> None:
        if message.kind in _LEADER_KINDS:
            self.election_elapsed_ticks = 0
            self.early_campaign_ticks = None  # the leader is alive after all
            self.lead = message.source
            if message.kind == MESSAGE_KIND.APPEND:
                self._handle_append(message)
            elif message.kind == MESSAGE_KIND.HEARTBEAT:
                self._handle_heartbeat(message)
            else:
                self._handle_snapshot_chunk(message)
            if self.promised_terms.get(message.source, NO_TERM) < message.term:
                self._note_leader_promise(message)
        elif message.kind == MESSAGE_KIND.TIMEOUT_NOW:
            # From our leader only: a same-term TIMEOUT_NOW while we know no leader (a
            # pre-candidate stepped back) is ignored.
            if message.source == self.lead and self._promotable():
                self._campaign(_Campaign.ELECTION, transfer=True)
        elif message.kind == MESSAGE_KIND.READ_INDEX_RESPONSE:
            if not message.reject:
                self._outbox.read_states.append(ReadState(index=message.index, context=message.context))
        # READ_INDEX sent to a non-leader is dropped: its sender times out and retries.

    def _step_candidate(self, message: Message) -> None:
        expected_response = (
            MESSAGE_KIND.PRE_VOTE_RESPONSE if self.role == ROLE.PRE_CANDIDATE else MESSAGE_KIND.VOTE_RESPONSE
        )
        if message.kind in _LEADER_KINDS:
            self.become_follower(message.term, message.source)  # someone won this term
            self._step_follower(message)
        elif message.kind == expected_response:
            self.tracker.record_vote(message.source, not message.reject)
            result = self.tracker.tally_votes()
            if result == VoteResult.WON:
                if self.role == ROLE.PRE_CANDIDATE:
                    self._campaign(_Campaign.ELECTION)
                else:
                    self.become_leader()
            elif result == VoteResult.LOST:
                self.become_follower(self.term, NO_NODE)

    def _step_leader(self, message: Message) -> None:
        assert message.kind not in _LEADER_KINDS, "refused by _check_against_state"
        if message.kind == MESSAGE_KIND.READ_INDEX:
            self._handle_read_request(message.context, message.source)
            return
        progress = self.tracker.progress.get(message.source)
        if progress is None:
            return  # not (or no longer) a member
        progress.recent_active = True
        if message.kind == MESSAGE_KIND.APPEND_RESPONSE:
            self._handle_append_response(message, progress)
        elif message.kind == MESSAGE_KIND.HEARTBEAT_RESPONSE:
            self._handle_heartbeat_response(message, progress)
        elif message.kind == MESSAGE_KIND.INSTALL_SNAPSHOT_RESPONSE:
            self._handle_snapshot_response(message, progress)

    # == follower side of replication ===========================================================

    def _handle_append(self, message: Message) -> None:
        if message.index < self.log.committed:
            self._send(MESSAGE_KIND.APPEND_RESPONSE, message.source, index=self.log.committed)
            return
        last_new_index = self.log.maybe_append(message.index, message.log_term, message.commit, message.entries)
        if last_new_index is not None:
            self._send(MESSAGE_KIND.APPEND_RESPONSE, message.source, index=last_new_index)
            return
        # Hint: our last entry at or below the probed index whose term is at most the probed
        # term; the leader can skip every entry in between in one round trip.
        hint_index, hint_term = self.log.find_conflict_by_term(
            min(message.index, self.log.last_index()), message.log_term
        )
        self._send(
            MESSAGE_KIND.APPEND_RESPONSE,
            message.source,
            index=message.index,
            reject=True,
            reject_hint_index=hint_index,
            reject_hint_term=hint_term,
        )

    def _handle_heartbeat(self, message: Message) -> None:
        self.log.commit_to(message.commit)
        self._send(MESSAGE_KIND.HEARTBEAT_RESPONSE, message.source, context=message.context)

    def _handle_snapshot_chunk(self, message: Message) -> None:
        meta = message.snapshot_meta
        assert meta is not None, "INSTALL_SNAPSHOT without snapshot_meta"
        if meta.index <= self.log.committed:
            self.snapshot_receiver = None  # we have all of it already
            self._send(MESSAGE_KIND.APPEND_RESPONSE, message.source, index=self.log.committed)
            return
        receiver = self.snapshot_receiver
        if receiver is None or not receiver.is_for(meta, message.source, message.term):
            if message.snapshot_offset != 0:
                # A new snapshot (or leader) must start from its first byte.
                self._send(MESSAGE_KIND.INSTALL_SNAPSHOT_RESPONSE, message.source, index=meta.index, reject=True)
                return
            receiver = SnapshotReceiver(meta, message.source, message.term)
            self.snapshot_receiver = receiver
        if message.snapshot_offset != receiver.received_bytes:
            # A duplicate (a gap was refused in _check_against_state): say which offset we need.
            self._send(
                MESSAGE_KIND.INSTALL_SNAPSHOT_RESPONSE,
                message.source,
                index=meta.index,
                snapshot_offset=receiver.received_bytes,
            )
            return
        receiver.add_chunk(message.snapshot_offset, message.snapshot_data)
        if not message.snapshot_done:
            self._send(
                MESSAGE_KIND.INSTALL_SNAPSHOT_RESPONSE,
                message.source,
                index=meta.index,
                snapshot_offset=receiver.received_bytes,
            )
            return
        self.snapshot_receiver = None
        snapshot = receiver.snapshot()
        if self._restore(snapshot):
            # Sent after the snapshot is persisted (see _send): the leader probes after it.
            self._send(
                MESSAGE_KIND.INSTALL_SNAPSHOT_RESPONSE,
                message.source,
                index=meta.index,
                snapshot_offset=receiver.received_bytes,
                snapshot_done=True,
            )
        else:
            self._send(MESSAGE_KIND.APPEND_RESPONSE, message.source, index=self.log.committed)

    def _restore(self, snapshot: Snapshot) -> bool:
        """Reset the log to the snapshot; False if the log already holds its last entry (then
        only the commit index moves)."""
        meta = snapshot.meta
        if meta.index <= self.log.committed:
            return False
        if self.log.match_term(meta.index, meta.term):
            self.log.commit_to(meta.index)
            return False
        self.log.restore(snapshot)
        self.tracker.set_conf_state(meta.conf_state, self.log.last_index() + 1)
        # The membership may have changed in ways we never saw (a member removed and added back
        # with a new disk): forget what members promised, rather than hold a new one to it.
        self.promised_terms.clear()
        return True

    # == leader side of replication =============================================================

    def _check_can_propose(self) -> None:
        if self.role != ROLE.LEADER:
            raise NotLeader(self.lead)
        if self.lead_transferee != NO_NODE:
            raise ProposalDropped(f"leadership is being transferred to {self.lead_transferee}")

    def _append_entry(self, kind: EntryKind, data: bytes) -> tuple[int, int]:
        assert self.role == ROLE.LEADER
        index = self.log.append_own(self.term, kind, data)
        self.uncommitted_bytes += len(data)
        self._outbox.broadcast_due = True
        return self.term, index

    def _maybe_commit(self) -> bool:
        """Commit what a quorum holds, if it is of this term (Raft paper, figure 8).

        Followers learn the new commit index with the next APPEND, which a busy leader sends
        soon anyway, or at the latest on the next tick (_tick_heartbeat). A broadcast of empty
        APPENDs for every commit would double the messages per write at low load (and make
        every follower apply in a batch of its own) for no gain in safety: committing is the
        leader's decision, and its clients are answered from its own apply. A follower's
        linearizable read still learns the commit in time: the ReadIndex round's heartbeats
        carry it."""
        if not self.log.maybe_commit(self.tracker.committed_index(), self.term):
            return False
        self._outbox.commit_unsent = True
        self._release_pending_reads()
        return True

    def _broadcast_append(self) -> None:
        for node in sorted(self.tracker.progress):
            if node != self.id and self._maybe_send_append(node, send_if_empty=True):
                while self._maybe_send_append(node, send_if_empty=False):
                    pass  # pipeline: fill the in-flight window

    def _maybe_send_append(self, node: NodeId, send_if_empty: bool) -> bool:
        """Send the follower what it lacks (or a snapshot chunk); False when nothing was sent.
        Reads at most one message's worth of the log: message_bytes_max, and no more than the
        in-flight window has room for (one entry when the window is empty)."""
        progress = self.tracker.progress[node]
        if progress.is_paused():
            return False
        if not send_if_empty and progress.next > self.log.last_index():
            return False  # it has everything (the pipelining loops end here, without a log read)
        previous_index = progress.next - 1
        window_bytes = progress.inflights.bytes_available()
        assert window_bytes >= 1, "a window without room is full, so paused"
        try:
            previous_term = self.log.term(previous_index)
            entries = self.log.entries_from(progress.next, min(self.config.message_bytes_max, window_bytes))
        except Compacted:
            return self._start_snapshot(node, progress)
        if not entries and not send_if_empty:
            return False
        size_bytes = entries_size_bytes(entries)
        if size_bytes > window_bytes and progress.inflights.count() > 0:
            progress.inflights.mark_no_room()  # full in bytes: wait for acknowledgements
            return False
        self._send(
            MESSAGE_KIND.APPEND,
            node,
            index=previous_index,
            log_term=previous_term,
            entries=tuple(entries),
            commit=self.log.committed,
        )
        progress.sent_entries(len(entries), entries[-1].index if entries else previous_index, size_bytes)
        return True

    def _handle_append_response(self, message: Message, progress: Progress) -> None:
        if message.reject:
            next_probe_index = message.reject_hint_index
            if message.reject_hint_term != 0:
                next_probe_index, _ = self.log.find_conflict_by_term(
                    min(message.reject_hint_index, self.log.last_index()), message.reject_hint_term
                )
            if progress.maybe_decrease_to(message.index, next_probe_index):
                if progress.state == PROGRESS_STATE.REPLICATE:
                    progress.become_probe()
                self._maybe_send_append(message.source, send_if_empty=True)
            return
        was_paused = progress.is_paused()
        updated = progress.maybe_update(message.index)
        if not updated and not (progress.match == message.index and progress.state == PROGRESS_STATE.PROBE):
            return  # a stale or duplicate answer
        if progress.state == PROGRESS_STATE.PROBE:
            progress.become_replicate()
        elif progress.state == PROGRESS_STATE.SNAPSHOT:
            if progress.match + 1 >= self.log.first_index():
                progress.become_replicate()
        else:
            progress.inflights.free_le(message.index)
        if not self._maybe_commit() and was_paused:
            self._maybe_send_append(message.source, send_if_empty=True)
        while self._maybe_send_append(message.source, send_if_empty=False):
            pass  # pipeline: fill the in-flight window
        if message.source == self.lead_transferee and progress.match == self.log.last_index():
            self._send(MESSAGE_KIND.TIMEOUT_NOW, message.source)

    def _broadcast_heartbeat(self, interval_elapsed: bool = False, targets: frozenset[NodeId] | None = None) -> None:
        """One heartbeat to each follower (or to `targets` only): on the heartbeat tick
        (`interval_elapsed`; not to a follower whose APPENDs flow, unless a read round rides
        on it: Progress.heartbeat_interval_elapsed), or at once for a ReadIndex round. Only
        the tick lets each follower's next response resume a paused flow (see
        Progress.heartbeat_resume_allowed): read rounds can be far more frequent, and must not
        turn into more probes or snapshot chunks."""
        context = self.read_only.last_pending_context()
        if context:
            self.read_only.round_sent(context)
        for node in sorted(self.tracker.progress):
            if node == self.id or (targets is not None and node not in targets):
                continue
            progress = self.tracker.progress[node]
            if interval_elapsed:
                needed = progress.heartbeat_interval_elapsed()  # (called for every follower)
                if not needed and not context:
                    continue  # its APPENDs flow; a read round needs every answer it can get
            commit = min(progress.match, self.log.committed)
            self._send(MESSAGE_KIND.HEARTBEAT, node, commit=commit, context=context)
            if interval_elapsed and progress.snapshot_sender is not None:
                progress.snapshot_sender.heartbeat_sent()

    def _handle_heartbeat_response(self, message: Message, progress: Progress) -> None:
        if progress.take_heartbeat_resume():
            self._resume_flow(message.source, progress)
        if message.context:
            self._handle_read_ack(message.source, message.context)

    def _resume_flow(self, node: NodeId, progress: Progress) -> None:
        """The follower is reachable: assume what is out was lost and send one message (a
        probe, the next APPEND, or the snapshot chunk unanswered for long)."""
        progress.probe_sent = False
        if progress.state == PROGRESS_STATE.REPLICATE and progress.inflights.full():
            progress.inflights.free_first_one()
        if progress.state == PROGRESS_STATE.SNAPSHOT:
            if progress.snapshot_sender.resend_due():
                self._send_snapshot_chunk(node, progress.snapshot_sender)
        elif progress.match < self.log.last_index() or progress.state == PROGRESS_STATE.PROBE:
            self._maybe_send_append(node, send_if_empty=True)

    # == snapshots (leader side) ==================================================================

    def _start_snapshot(self, node: NodeId, progress: Progress) -> bool:
        if not progress.recent_active:
            return False  # do not push a snapshot at a node that may be down
        progress.become_snapshot(SnapshotSender(self._snapshot_to_send(), self.config.snapshot_chunk_bytes))
        self._send_snapshot_chunk(node, progress.snapshot_sender)
        return True

    def _snapshot_to_send(self) -> Snapshot:
        """An image that lets a follower continue from the log: one another transfer holds
        already (so several lagging followers share one copy), or else the stored one."""
        first_index = self.log.first_index()
        for progress in self.tracker.progress.values():
            sender = progress.snapshot_sender
            if sender is not None and sender.index + 1 >= first_index:
                return sender.snapshot
        snapshot = self.log.snapshot()
        assert snapshot.meta.index + 1 >= first_index, "entries are compacted beyond the stored snapshot"
        return snapshot

    def _send_snapshot_chunk(self, node: NodeId, sender: SnapshotSender) -> None:
        offset, data, done = sender.next_chunk()
        self._send(
            MESSAGE_KIND.INSTALL_SNAPSHOT,
            node,
            snapshot_meta=sender.meta,
            snapshot_offset=offset,
            snapshot_data=data,
            snapshot_done=done,
        )

    def _handle_snapshot_response(self, message: Message, progress: Progress) -> None:
        sender = progress.snapshot_sender
        if sender is None or message.index != sender.index:
            return  # stale: about an earlier transfer
        if message.snapshot_done and not message.reject:
            progress.maybe_update(message.index)
            progress.become_probe()
            self._maybe_send_append(message.source, send_if_empty=True)
        elif sender.answered(message.snapshot_offset, restart=message.reject):
            self._send_snapshot_chunk(message.source, sender)

    # == ReadIndex ==================================================================================

    def _handle_read_request(self, context: bytes, requester: NodeId) -> None:
        if not self.term_entry_committed:
            if self.log.term_or_zero(self.log.committed) != self.term:
                # Until this term's no-op commits, our commit index may lag the true one.
                self.pending_read_requests.append((context, requester))
                return
            self.term_entry_committed = True
        if self.tracker.is_single_voter(self.id):
            self._answer_read(ReadRequest(self.log.committed, context, requester))
            return
        self.read_only.add_request(self.log.committed, context, requester, self.id)
        if not self.read_only.round_in_flight():
            self._start_read_round()
        # Else a round is out: when it is confirmed (or the next periodic heartbeat goes out),
        # one new round confirms every request that arrived meanwhile, instead of one each.

    def _release_pending_reads(self) -> None:
        pending, self.pending_read_requests = self.pending_read_requests, []
        for context, requester in pending:
            self._handle_read_request(context, requester)

    def _handle_read_ack(self, node: NodeId, context: bytes) -> None:
        acks = self.read_only.receive_ack(node, context)
        if acks is None:
            return
        conf_state = self.tracker.conf_state
        if not has_quorum(conf_state.voters, acks, conf_state.voters_outgoing):
            return
        for request in self.read_only.advance(context):
            self._answer_read(request)
        if self.read_only.pending_count() and not self.read_only.round_in_flight():
            self._start_read_round()  # the requests that waited for this round

    def _start_read_round(self) -> None:
        """A heartbeat round for the pending reads, to the followers that confirmed the last
        one when they still make a quorum with us (ReadOnly.round_targets), else to all. Also
        to all while one of those followers has entries to acknowledge: it may be busy writing
        them, and then the first quorum of acks, whoever sends them, should confirm the reads."""
        conf_state = self.tracker.conf_state
        targets = self.read_only.round_targets(self.id, conf_state.voters, conf_state.voters_outgoing)
        if targets is not None:
            last_index = self.log.last_index()
            for node in targets:
                if self.tracker.progress[node].match < last_index:
                    targets = None
                    break
        self._broadcast_heartbeat(targets=targets)

    def _answer_read(self, request: ReadRequest) -> None:
        if request.requester == self.id:
            self._outbox.read_states.append(ReadState(index=request.index, context=request.context))
        else:
            self._send(MESSAGE_KIND.READ_INDEX_RESPONSE, request.requester, index=request.index, context=request.context)

    # == membership =================================================================================

    def _apply_conf_change(self, change: ConfChange) -> ConfState:
        """Apply a committed CONF_CHANGE (when it is handed out in committed_entries)."""
        try:
            conf_state = membership.apply_change(self.tracker.conf_state, change)
        except (InvalidConfChange, ConfChangeInProgress) as error:
            # Changes are validated when proposed against the configuration they apply to.
            raise AssertionError(f"committed membership change is invalid: {error}") from error
        self.tracker.set_conf_state(conf_state, self.log.last_index() + 1)
        members = conf_state.all_nodes()
        for node in [node for node in self.promised_terms if node not in members]:
            del self.promised_terms[node]  # removed: it may come back on a new disk
        if self.role == ROLE.LEADER:
            if self.id not in self.tracker.voters():
                # Removed or demoted, and the configuration without us is in force: step down
                # (no more heartbeats) so that the remaining voters elect a leader.
                self.become_follower(self.term, NO_NODE)
            else:
                if self.lead_transferee not in conf_state.voters:
                    self.lead_transferee = NO_NODE
                self._maybe_commit()
                self._outbox.broadcast_due = True  # new members need their first APPEND
        return conf_state

    # == plumbing ===================================================================================

    def _send(self, kind: MessageKind, target: NodeId, term: int | None = None, **fields) -> None:
        assert target != self.id, "never send to self"
        message = Message(kind=kind, source=self.id, target=target, term=self.term if term is None else term,
                          promised_term=self.promised_terms.get(target, NO_TERM), **fields)
        if kind in _AFTER_PERSIST_KINDS or (kind is MESSAGE_KIND.INSTALL_SNAPSHOT_RESPONSE and message.snapshot_done):
            self._outbox.messages_after_persist.append(message)
        else:
            self._outbox.messages.append(message)

    def _soft_state_if_changed(self) -> SoftState | None:
        """The soft state if it differs from the last Ready's (compared field by field, so
        that has_ready builds nothing in the common case)."""
        previous = self._previous_soft_state
        if self.lead == previous.leader and self.role == previous.role:
            return None
        return SoftState(leader=self.lead, role=self.role)

    def _hard_state_if_changed(self) -> HardState | None:
        previous = self._previous_hard_state
        if self.term == previous.term and self.vote == previous.vote and self.log.committed == previous.commit:
            return None
        return HardState(term=self.term, vote=self.vote, commit=self.log.committed)


class _Outbox:
    """What the core produced since the last Ready besides state changes: messages, read
    states, and whether a batched append broadcast is due. has_ready() looks at it; ready()
    drains it."""

    def __init__(self) -> None:
        self.messages: list[Message] = []
        self.messages_after_persist: list[Message] = []
        self.read_states: list[ReadState] = []
        self.broadcast_due = False  # send appends when the next Ready is built (batching)
        self.commit_unsent = False  # the leader committed more than its appends told (a tick later)
        self.commit_unsent_ticked = False  # ...and a tick has passed since (the next one sends it)

    def drain(self) -> tuple[tuple[Message, ...], tuple[Message, ...], tuple[ReadState, ...]]:
        assert not self.broadcast_due, "ready() sends a due broadcast before draining"
        drained = (tuple(self.messages), tuple(self.messages_after_persist), tuple(self.read_states))
        self.messages.clear()
        self.messages_after_persist.clear()
        self.read_states.clear()
        return drained


# _soft_state_if_changed / _hard_state_if_changed compare these fields one by one: a field
# added to either must be compared there too, or has_ready and ready would drift apart.
assert SoftState._fields == ("leader", "role")
assert HardState._fields == ("term", "vote", "commit")
