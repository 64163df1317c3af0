"""The Raft core's public vocabulary: entries, messages, states and the Ready batch.

Everything here is immutable (a small frozen dataclass, or a NamedTuple where one is built
per write, per message or per Ready: Entry, Message, HardState, SoftState, ReadState, Ready) so that a value handed to the driver can never
change under it. Enum values are persisted (log entries, hard state) and sent on the wire:
they are pinned and must never be renumbered.
"""

from __future__ import annotations

import enum
import json
import operator
from bisect import bisect_right
from dataclasses import dataclass, field
from itertools import accumulate, repeat
from typing import NamedTuple, Sequence

NodeId = str

# Index 0 and term 0 stand for "nothing": the log starts at index 1.
NO_INDEX = 0
NO_TERM = 0
NO_NODE: NodeId = ""


class EntryKind(enum.IntEnum):
    """What an entry carries. Pinned values: persisted in the log."""

    NORMAL = 1  # an application command (opaque bytes)
    NOOP = 2  # the empty entry a new leader appends to commit its term
    CONF_CHANGE = 3  # ConfChange.encode() bytes


class FastMembers:
    """An enum's members as plain attributes: `MESSAGE_KIND.APPEND is MessageKind.APPEND`.
    Python 3.11 looks every attribute of an enum class up through EnumType's __getattr__ hook,
    about 150 ns per `MessageKind.APPEND` against 30 here, and a message meets tens of those
    comparisons between step() and the Ready that answers it. The hot paths use these."""

    def __init__(self, enum_class: type[enum.Enum]) -> None:
        self.__dict__.update(enum_class.__members__)


ENTRY_KIND = FastMembers(EntryKind)


class Entry(NamedTuple):
    """One log entry. A NamedTuple, not a frozen dataclass: one is built per proposed write and
    per entry every follower decodes, and a frozen dataclass's __init__ (a setattr per field)
    cost about twice as much. Immutable all the same."""

    term: int
    index: int
    kind: EntryKind = EntryKind.NORMAL
    data: bytes = b""

    def size_bytes(self) -> int:
        """Approximate wire size, used for the per-message byte cap."""
        return len(self.data) + ENTRY_OVERHEAD_BYTES


ENTRY_OVERHEAD_BYTES = 24  # what Entry.size_bytes counts besides the data
assert Entry._fields[3] == "data"
_entry_data = operator.itemgetter(3)  # entry.data, callable from C (map)


def entries_data_bytes(entries: Sequence[Entry]) -> int:
    """sum(len(entry.data) for entry in entries), summed in C (no Python step per entry)."""
    return sum(map(len, map(_entry_data, entries)))


def entries_size_bytes(entries: Sequence[Entry]) -> int:
    """sum(entry.size_bytes() for entry in entries), summed in C: the byte caps of every
    APPEND (per follower) and every apply batch count the entries they carry."""
    return entries_data_bytes(entries) + ENTRY_OVERHEAD_BYTES * len(entries)


def entries_within(entries: Sequence[Entry], bytes_max: int, at_least_one: bool = True) -> int:
    """How many of `entries`, from the first, fit in bytes_max together (their size_bytes
    summed), but at least one when at_least_one (and there is one). Looks at every entry
    given: a caller bounds them (no more than bytes_max // ENTRY_OVERHEAD_BYTES + 1 can fit).
    Counted in C: a total first (most reads fit whole), else prefix sums and a bisection."""
    if not entries:
        return 0
    if entries_size_bytes(entries) <= bytes_max:
        return len(entries)
    totals = list(accumulate(map(operator.add, map(len, map(_entry_data, entries)), repeat(ENTRY_OVERHEAD_BYTES))))
    fitting = bisect_right(totals, bytes_max)
    return 1 if fitting == 0 and at_least_one else fitting


def prefix_within(entries: Sequence[Entry], start: int, stop: int, bytes_max: int, at_least_one: bool = True) -> int:
    """The end position of the longest run entries[start:end] (end <= stop) within bytes_max,
    and at least one entry if at_least_one: the byte cap of every log read (storage, the
    unstable tail, the LMDB store's tail). Looks at no more entries than can fit (each counts
    at least ENTRY_OVERHEAD_BYTES), so a bounded read of a long log costs what it returns."""
    stop = min(stop, start + max(0, bytes_max) // ENTRY_OVERHEAD_BYTES + 1)
    return start + entries_within(entries[start:stop], bytes_max, at_least_one)


class Role(enum.IntEnum):
    """Pinned values: shown in status and sent to clients."""

    FOLLOWER = 1
    PRE_CANDIDATE = 2
    CANDIDATE = 3
    LEADER = 4


ROLE = FastMembers(Role)


class HardState(NamedTuple):
    """What must be durable before any message that depends on it is sent. (A NamedTuple, as
    SoftState and Ready: one is built per Ready, and a frozen dataclass's setattr per field
    cost several microseconds each time.)"""

    term: int = NO_TERM
    vote: NodeId = NO_NODE
    commit: int = NO_INDEX


class SoftState(NamedTuple):
    """Volatile facts the driver may show or act on; never persisted."""

    leader: NodeId = NO_NODE
    role: Role = Role.FOLLOWER


@dataclass(frozen=True, slots=True)
class ConfState:
    """The membership. `voters_outgoing` is non-empty only in a joint configuration,
    where a decision needs a majority of `voters` AND a majority of `voters_outgoing`.
    Learners replicate the log but never vote and never count towards a quorum."""

    voters: frozenset[NodeId] = frozenset()
    voters_outgoing: frozenset[NodeId] = frozenset()
    learners: frozenset[NodeId] = frozenset()

    @property
    def joint(self) -> bool:
        return bool(self.voters_outgoing)

    def all_nodes(self) -> frozenset[NodeId]:
        return self.voters | self.voters_outgoing | self.learners

    def to_dict(self) -> dict:
        return {
            "voters": sorted(self.voters),
            "voters_outgoing": sorted(self.voters_outgoing),
            "learners": sorted(self.learners),
        }

    @staticmethod
    def from_dict(value: dict) -> "ConfState":
        return ConfState(
            voters=frozenset(value["voters"]),
            voters_outgoing=frozenset(value["voters_outgoing"]),
            learners=frozenset(value["learners"]),
        )


class ConfChangeKind(enum.IntEnum):
    """Pinned values: persisted inside CONF_CHANGE entries."""

    ADD_VOTER = 1  # add as voter, or promote a learner
    ADD_LEARNER = 2  # add as learner, or demote a voter
    REMOVE_NODE = 3
    LEAVE_JOINT = 4  # appended automatically by the leader once the joint config is committed


@dataclass(frozen=True, slots=True)
class ConfChangeStep:
    kind: ConfChangeKind
    node: NodeId = NO_NODE


@dataclass(frozen=True, slots=True)
class ConfChange:
    """One membership change, applied atomically. A change of voters goes through the joint
    configuration (C_old,new) and leaves it automatically; learner-only changes are direct."""

    steps: tuple[ConfChangeStep, ...] = ()
    context: bytes = b""  # opaque to the core: the driver may carry node addresses here

    def encode(self) -> bytes:
        # JSON with sorted keys: stable, readable in `inspect log`, and needs no codec import.
        value = {
            "steps": [[int(step.kind), step.node] for step in self.steps],
            "context": self.context.hex(),
        }
        return json.dumps(value, sort_keys=True, separators=(",", ":")).encode()

    @staticmethod
    def decode(data: bytes) -> "ConfChange":
        value = json.loads(data)
        steps = tuple(ConfChangeStep(ConfChangeKind(kind), node) for kind, node in value["steps"])
        return ConfChange(steps=steps, context=bytes.fromhex(value["context"]))


@dataclass(frozen=True, slots=True)
class SnapshotMeta:
    index: int = NO_INDEX
    term: int = NO_TERM
    conf_state: ConfState = field(default_factory=ConfState)
    size_bytes: int = 0


@dataclass(frozen=True, slots=True)
class Snapshot:
    """A snapshot handed to the driver to persist and restore (follower side), or given to the
    core by storage. `data` is the application's opaque state-machine image."""

    meta: SnapshotMeta
    data: bytes = b""


class MessageKind(enum.IntEnum):
    """Pinned values: on the wire between nodes."""

    PRE_VOTE = 1
    PRE_VOTE_RESPONSE = 2
    VOTE = 3
    VOTE_RESPONSE = 4
    APPEND = 5
    APPEND_RESPONSE = 6
    HEARTBEAT = 7
    HEARTBEAT_RESPONSE = 8
    INSTALL_SNAPSHOT = 9
    INSTALL_SNAPSHOT_RESPONSE = 10
    TIMEOUT_NOW = 11
    READ_INDEX = 12  # follower -> leader: please confirm a read index for `context`
    READ_INDEX_RESPONSE = 13


MESSAGE_KIND = FastMembers(MessageKind)


class Message(NamedTuple):
    """One Raft message (a NamedTuple: building a frozen dataclass of these 17 fields, a setattr
    each, cost several microseconds per message sent or received; immutable all the same). A single flat shape for every kind (as etcd does) keeps the codec and
    the validation in one place; fields a kind does not use keep their defaults.

    Field use by kind:
      PRE_VOTE/VOTE: term (the proposed term for PRE_VOTE), log_term+index = candidate's last entry,
          context=b"transfer" when sent because of TIMEOUT_NOW (bypasses leader stickiness).
      *_RESPONSE to votes: reject.
      APPEND: log_term+index = entry preceding `entries`, entries, commit.
      APPEND_RESPONSE: index = last index matched (or rejected index), reject,
          reject_hint_index/reject_hint_term = fast backtracking hint.
      HEARTBEAT: commit (min(leader commit, follower match)), context (ReadIndex round).
      HEARTBEAT_RESPONSE: context echoed.
      INSTALL_SNAPSHOT: snapshot_meta, snapshot_offset, snapshot_data (one chunk), snapshot_done.
      INSTALL_SNAPSHOT_RESPONSE: snapshot_offset = next offset wanted, reject, index = meta index.
      READ_INDEX: context. READ_INDEX_RESPONSE: index (the read index), context, reject.
    Every kind: promised_term = the highest term the target has shown the sender it holds on
      disk (in a message sent only after its state was persisted), 0 if none. A target whose
      term is lower has lost its disk (RaftNode.step raises StateLost).
    """

    kind: MessageKind
    source: NodeId
    target: NodeId
    term: int
    log_term: int = NO_TERM
    index: int = NO_INDEX
    entries: tuple[Entry, ...] = ()
    commit: int = NO_INDEX
    reject: bool = False
    reject_hint_index: int = NO_INDEX
    reject_hint_term: int = NO_TERM
    context: bytes = b""
    snapshot_meta: SnapshotMeta | None = None
    snapshot_offset: int = 0
    snapshot_data: bytes = b""
    snapshot_done: bool = False
    promised_term: int = NO_TERM


class ReadState(NamedTuple):
    """The answer to read_index(context): once the local applied index reaches `index`,
    a read for `context` is linearizable. (A NamedTuple: one is built per read round.)"""

    index: int
    context: bytes


class Ready(NamedTuple):
    """Everything the core needs the driver to do, in one batch.

    The driver MUST, in this order:
      1. If `snapshot` is set, persist it and restore the state machine from it.
         Persist `entries` (replacing any stored entries at the same or higher index) and
         `hard_state` (if set) -- durably, in one write, before step 2.
      2. Send `messages_after_persist` (they promise the persisted state: vote and append
         responses). `messages` carry no such promise and MAY be sent before step 1 finishes,
         e.g. a leader's appends to followers while its own disk write is in flight.
      3. Apply `committed_entries` to the state machine in order (they are never beyond what
         was written by this or an earlier Ready). When `conf_state` is set, persist it in
         the same write as the applied index: it is the membership after these entries.
      4. Answer `read_states` once the applied index reaches each one's index.
      5. Call advance(ready) with this very object, before the next ready().
    A leader's own `entries` are the one exception to "durably" in step 1: they promise
    nothing to anyone (its appends carry them; no node relies on the leader's copy), so it may
    write them without a flush and call advance(ready, entries_durable=False), then
    entries_durable() once a later flush made them durable: until then the leader does not
    count itself for them, and a majority of followers' durable acks commits them
    (etcd-io/raft's asynchronous storage writes do the same with the leader's own append).
    """

    soft_state: SoftState | None = None  # set when role or leader changed since the last Ready
    hard_state: HardState | None = None  # set when it changed since the last Ready
    entries: tuple[Entry, ...] = ()
    snapshot: Snapshot | None = None
    committed_entries: tuple[Entry, ...] = ()
    conf_state: ConfState | None = None
    messages: tuple[Message, ...] = ()
    messages_after_persist: tuple[Message, ...] = ()
    read_states: tuple[ReadState, ...] = ()


@dataclass(frozen=True, slots=True)
class Config:
    """Core settings, all counted in ticks, entries or bytes (the driver turns ms into ticks)."""

    node_id: NodeId
    heartbeat_ticks: int = 5
    election_ticks_min: int = 15
    election_ticks_max: int = 30  # timeouts are drawn uniformly from [min, max)
    inflight_messages_max: int = 64  # APPEND messages in flight to one follower
    message_bytes_max: int = 1 << 20  # entries per APPEND are cut at this size (at least one entry)
    # Entry bytes in flight to one follower; also bounds the log a leader reads for one
    # follower in one step (at least one entry goes out when nothing is in flight).
    inflight_bytes_max: int = 8 << 20
    # Committed entries handed out per Ready (at least one): the size of one apply batch.
    # Applying costs ~150 us per small entry, so this bounds the work between two turns of the
    # driver loop (which returns to the loop between two such Readys): 64 KiB, some 300
    # entries of a small write, ~50 ms. Separate from message_bytes_max, which bounds what a
    # follower stores per message (storing costs far less per entry than applying).
    committed_bytes_per_ready_max: int = 64 << 10
    uncommitted_bytes_max: int = 64 << 20  # proposals refused (ProposalDropped) beyond this
    snapshot_chunk_bytes: int = 1 << 20
    pre_vote: bool = True
    check_quorum: bool = True
    # Whether RaftNode.leader_unreachable() (the driver saw its connection to the leader drop)
    # starts a pre-vote soon, instead of waiting out the election timeout. Needs pre_vote and
    # check_quorum: they keep a follower whose connection alone dropped from disturbing a
    # leader that the others still hear from.
    campaign_on_leader_unreachable: bool = False
    applied: int = NO_INDEX  # last index the state machine had applied when this node started

    def __post_init__(self) -> None:
        assert self.node_id, "node_id must be set"
        assert self.heartbeat_ticks >= 1
        assert self.election_ticks_min > self.heartbeat_ticks, "election must outlast heartbeats"
        assert self.election_ticks_max > self.election_ticks_min
        assert self.inflight_messages_max >= 1
        assert self.message_bytes_max >= 1
        assert self.inflight_bytes_max >= 1
        assert self.committed_bytes_per_ready_max >= 1
        assert not self.campaign_on_leader_unreachable or (self.pre_vote and self.check_quorum), (
            "campaign_on_leader_unreachable needs pre_vote and check_quorum"
        )
        assert self.snapshot_chunk_bytes >= 1


@dataclass(frozen=True, slots=True)
class Status:
    """A read-only view for `sandctl status` and tests."""

    node_id: NodeId
    role: Role
    leader: NodeId
    term: int
    vote: NodeId
    commit: int
    applied: int
    first_index: int
    last_index: int
    conf_state: ConfState
    progress: dict  # leader only: node id -> {"match": int, "next": int, "state": str}
    lead_transferee: NodeId = NO_NODE
