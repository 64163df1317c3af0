"""The safety invariants, checked incrementally as the production driver carries out each Ready.

Every check is O(entries touched), so it can run after every event. The checker keeps its own
history, independent of any node, so crashed and restarted nodes are still held to what they
did before (one leader per term over all time, one vote per term across crashes).

Invariants (Raft paper, Figure 3, plus the driver contract on Ready):
  election safety      at most one leader per term, over all time
  leader append-only   a leader never overwrites or deletes its own entries during its term
  log matching         same (index, term) => same entry and same previous term (so same prefix)
  leader completeness  an entry committed in term U is in the log of every leader of term > U
  state machine safety every node applies the same entry at each index, in order, once
  durable promises     a vote grant / append ack / leader message is only sent once the disk
                       shows the vote / entries / term it promises
  acks kept            a follower never overwrites an entry it acked while still in that term
  checked forwards     a malformed command forwarded by a peer never reaches a log
  monotonic            persisted term and commit never decrease; one vote per term per node
  commit <= last index on every disk
  linearizable reads   a read served on any node reflects every write acknowledged before it was asked
"""

from __future__ import annotations

from node.raft.types import Entry, EntryKind, Message, MessageKind, NodeId, Ready, Role

from tests.sim.disk import MALFORMED_COMMAND_PREFIX, AppliedEntry, Disk, decode_state
from tests.sim.simulator import EventQueue

LEADER_MESSAGE_KINDS = frozenset(
    {MessageKind.APPEND, MessageKind.HEARTBEAT, MessageKind.INSTALL_SNAPSHOT, MessageKind.TIMEOUT_NOW}
)


class InvariantViolation(AssertionError):
    """A safety property of Raft (or of the Ready contract) was broken: a bug in the core."""


class LivenessViolation(AssertionError):
    """After the faults stopped and the network healed, the cluster did not make progress."""


class Checker:
    def __init__(self, clock: EventQueue) -> None:
        self._clock = clock
        self.leader_of_term: dict[int, NodeId] = {}
        self._leaders_seen: set[tuple[NodeId, int]] = set()
        # Highest commit index each term's leader persisted, with the term of that entry
        # (None when the leader had already compacted it).
        self.commit_by_leader_term: dict[int, tuple[int, int | None]] = {}
        self.entry_at: dict[tuple[int, int], tuple[int, bytes, int]] = {}
        self.applied_at: dict[int, AppliedEntry] = {}
        self.value_index: dict[bytes, int] = {}
        # Values a follower forwarded: its driver sends them again to the next leader (the old
        # one may have died with them), so such a value may reach the log twice; the real
        # state machine's sessions apply it once (same client and seq). Every other value
        # must be applied at one index only.
        self.values_forwarded: set[bytes] = set()
        self.vote_grant: dict[tuple[NodeId, int], NodeId] = {}
        self.read_floor: dict[bytes, int] = {}
        self.acked: dict[bytes, int] = {}
        self.acked_index_max = 0
        # node -> (term, highest index) of the newest APPEND ack it sent: while its term stays
        # that, those entries are promised to that term's leader and must never be overwritten.
        self.append_acked: dict[NodeId, tuple[int, int]] = {}
        # Called as (value, index) when a client's write is acknowledged; may only schedule.
        self.ack_listeners: list = []
        self.check_count = 0

    def fail(self, text: str) -> None:
        raise InvariantViolation(f"at {self._clock.now_ms}ms: {text}")

    # -- messages ---------------------------------------------------------------------------

    # Switch for the mutation tests: with it off, a vote granted before it is durable must be
    # caught end to end (two leaders in one term), not by the direct check.
    check_vote_before_disk_write = True

    def on_send(self, node_id: NodeId, message: Message, disk: Disk, leader_term_at_index) -> None:
        """`disk` as it is when the message leaves the driver."""
        self.check_count += 1
        where = "a message sent before the disk write that backs it"
        if message.source != node_id:
            self.fail(f"{node_id} sent a message with source {message.source!r}")
        if message.target == node_id:
            self.fail(f"{node_id} sent a {message.kind.name} to itself")
        hard_state = disk.hard_state()
        kind = message.kind
        if kind == MessageKind.VOTE_RESPONSE and not message.reject:
            if self.check_vote_before_disk_write and (hard_state.term != message.term
                                                      or hard_state.vote != message.target):
                self.fail(
                    f"{node_id} granted its term-{message.term} vote to {message.target} in {where}"
                    f" but its disk says term {hard_state.term} vote {hard_state.vote!r}"
                )
            granted = self.vote_grant.setdefault((node_id, message.term), message.target)
            if granted != message.target:
                self.fail(f"{node_id} granted its term-{message.term} vote to both {granted} and {message.target}")
        elif kind == MessageKind.APPEND_RESPONSE and not message.reject:
            self._check_append_ack(node_id, message, disk, where, leader_term_at_index)
        elif kind in LEADER_MESSAGE_KINDS:
            if hard_state.term < message.term:
                self.fail(
                    f"{node_id} sent {kind.name} as leader of term {message.term} in {where}"
                    f" but its disk still says term {hard_state.term}"
                )
            if hard_state.term == message.term and hard_state.vote != node_id:
                self.fail(
                    f"{node_id} sent {kind.name} as leader of term {message.term} in {where}"
                    f" without a durable vote for itself (disk vote {hard_state.vote!r})"
                )
            for entry in message.entries:
                if entry.term > message.term:
                    self.fail(f"{node_id} sent entry {entry.index} of term {entry.term} in a term-{message.term} APPEND")

    def _check_append_ack(self, node_id, message: Message, disk: Disk, where: str, leader_term_at_index) -> None:
        acked_term, acked_index = self.append_acked.get(node_id, (0, 0))
        if message.term > acked_term or (message.term == acked_term and message.index > acked_index):
            self.append_acked[node_id] = (message.term, message.index)
        storage = disk.storage
        if storage.last_index() < message.index:
            self.fail(
                f"{node_id} acked index {message.index} to {message.target} in {where}"
                f" but its disk ends at index {storage.last_index()}"
            )
        if disk.hard_state().term < message.term:
            self.fail(f"{node_id} acked in term {message.term} in {where} but its disk says term {disk.hard_state().term}")
        expected_term = leader_term_at_index(message.target, message.term, message.index)
        if expected_term is None or message.index < storage.first_index():
            return
        if storage.term(message.index) != expected_term:
            self.fail(
                f"{node_id} acked index {message.index} to leader {message.target} in {where}: its disk has term"
                f" {storage.term(message.index)} there, the leader's log has term {expected_term}"
            )

    # -- persisting a Ready -----------------------------------------------------------------

    def before_persist(self, node_id: NodeId, role: Role, term: int, ready: Ready, disk: Disk) -> None:
        self.check_count += 1
        if ready.hard_state is not None:
            old, new = disk.hard_state(), ready.hard_state
            if new.term < old.term:
                self.fail(f"{node_id}'s term went back from {old.term} to {new.term}")
            if new.term == old.term and old.vote and new.vote != old.vote:
                self.fail(f"{node_id} changed its term-{new.term} vote from {old.vote} to {new.vote!r}")
            if new.commit < old.commit:
                self.fail(f"{node_id}'s persisted commit went back from {old.commit} to {new.commit}")
        for before, after in zip(ready.entries, ready.entries[1:]):
            if after.index != before.index + 1:
                self.fail(f"{node_id}'s Ready holds non-contiguous entries {before.index}, {after.index}")
            if after.term < before.term:
                self.fail(f"{node_id}'s Ready holds entries whose term goes down at index {after.index}")
        self._check_acked_entries_kept(node_id, ready, disk)
        if role == Role.LEADER:
            if ready.snapshot is not None:
                self.fail(f"{node_id} installed a snapshot while leader of term {term}")
            if ready.entries and ready.entries[0].index != disk.storage.last_index() + 1:
                self.fail(
                    f"leader {node_id} (term {term}) overwrote its own log: new entries start at"
                    f" {ready.entries[0].index}, its log ends at {disk.storage.last_index()}"
                )
            for entry in ready.entries:
                if entry.term != term:
                    self.fail(f"leader {node_id} of term {term} appended entry {entry.index} with term {entry.term}")
        if ready.snapshot is not None:
            self._check_snapshot(node_id, ready, disk)

    def _check_acked_entries_kept(self, node_id: NodeId, ready: Ready, disk: Disk) -> None:
        """Within one term only its leader sends entries, and it never contradicts what a
        follower acked to it: a follower that overwrites such an entry took entries from
        someone else (a stale leader) and broke the promise its ack made."""
        acked_term, acked_index = self.append_acked.get(node_id, (0, 0))
        if not ready.entries or ready.entries[0].index > acked_index:
            return
        term = ready.hard_state.term if ready.hard_state is not None else disk.hard_state().term
        if term != acked_term:
            return
        storage = disk.storage
        for entry in ready.entries:
            if entry.index > min(acked_index, storage.last_index()):
                break
            if entry.index >= storage.first_index() and storage.term(entry.index) != entry.term:
                self.fail(
                    f"{node_id} overwrote entry {entry.index} (term {storage.term(entry.index)}, acked in term"
                    f" {acked_term}) with one of term {entry.term} while still in term {acked_term}"
                )

    def _check_snapshot(self, node_id: NodeId, ready: Ready, disk: Disk) -> None:
        meta = ready.snapshot.meta
        if meta.index <= disk.applied_index:
            self.fail(f"{node_id} was handed snapshot {meta.index} but has already applied {disk.applied_index}")
        if ready.entries and ready.entries[0].index > meta.index + 1:
            self.fail(f"{node_id}'s Ready leaves a gap after snapshot {meta.index}")
        image = decode_state(ready.snapshot.data)
        if not image:
            # An empty image (the core's bootstrap snapshot) is fine only if nothing up to its
            # index was ever applied anywhere.
            if any(index <= meta.index for index in self.applied_at):
                self.fail(f"snapshot {meta.index}@{meta.term} for {node_id} is empty but entries up to it were applied")
        elif image[-1].index != meta.index or image[-1].term != meta.term:
            last = (image[-1].index, image[-1].term)
            self.fail(f"snapshot {meta.index}@{meta.term} for {node_id} holds a state ending at {last}")
        for applied in image:
            self._record_applied(node_id, applied, "restored from a snapshot")

    def after_persist(self, node_id: NodeId, role: Role, term: int, ready: Ready, disk: Disk) -> None:
        self.check_count += 1
        storage = disk.storage
        first_index = storage.first_index()
        previous_term = None
        for entry in ready.entries:
            if entry.index < first_index:
                continue  # already covered by the snapshot
            if previous_term is None:
                previous_term = storage.term(entry.index - 1)
            value = (int(entry.kind), entry.data, previous_term)
            existing = self.entry_at.setdefault((entry.index, entry.term), value)
            if existing != value:
                self.fail(
                    f"log matching broken on {node_id}: entry {entry.index}@{entry.term} is"
                    f" {value[:2]!r} after term {value[2]}, but elsewhere {existing[:2]!r} after term {existing[2]}"
                )
            previous_term = entry.term
        commit = disk.hard_state().commit
        if commit > storage.last_index():
            self.fail(f"{node_id}'s commit {commit} is beyond its last index {storage.last_index()}")
        if role == Role.LEADER:
            self._on_leader(node_id, term, disk)

    def _on_leader(self, node_id: NodeId, term: int, disk: Disk) -> None:
        holder = self.leader_of_term.setdefault(term, node_id)
        if holder != node_id:
            self.fail(f"two leaders in term {term}: {holder} and {node_id}")
        hard_state = disk.hard_state()
        if hard_state.term != term or hard_state.vote != node_id:
            self.fail(f"{node_id} leads term {term} but its disk says term {hard_state.term} vote {hard_state.vote!r}")
        storage = disk.storage
        if (node_id, term) not in self._leaders_seen:
            self._leaders_seen.add((node_id, term))
            self._check_leader_completeness(node_id, term, disk)
        commit = hard_state.commit
        recorded = self.commit_by_leader_term.get(term)
        if recorded is None or recorded[0] < commit:
            commit_term = storage.term(commit) if commit >= storage.first_index() - 1 else None
            self.commit_by_leader_term[term] = (commit, commit_term)

    def _check_leader_completeness(self, node_id: NodeId, term: int, disk: Disk) -> None:
        earlier = [value for other_term, value in self.commit_by_leader_term.items() if other_term < term]
        if not earlier:
            return
        commit, commit_term = max(earlier)
        storage = disk.storage
        if storage.last_index() < commit:
            self.fail(
                f"leader completeness: {node_id} leads term {term} with a log ending at {storage.last_index()},"
                f" but index {commit} was committed in an earlier term"
            )
        if commit_term is None or commit < storage.first_index() - 1:
            return
        if storage.term(commit) != commit_term:
            self.fail(
                f"leader completeness: {node_id} leads term {term} with term {storage.term(commit)} at"
                f" index {commit}, but the entry committed there has term {commit_term}"
            )

    # -- applying ---------------------------------------------------------------------------

    def on_apply(self, node_id: NodeId, entry: Entry, disk: Disk) -> None:
        """Called after the Ready's entries and hard state are on `disk`, before applying."""
        self.check_count += 1
        if entry.index != disk.applied_index + 1:
            self.fail(f"{node_id} applied index {entry.index} right after {disk.applied_index}")
        if entry.index > disk.hard_state().commit:
            self.fail(f"{node_id} applied index {entry.index} beyond its durable commit {disk.hard_state().commit}")
        storage = disk.storage
        if entry.index > storage.last_index():
            self.fail(f"{node_id} applied index {entry.index} that is not on its disk (last {storage.last_index()})")
        if entry.index >= storage.first_index() and storage.term(entry.index) != entry.term:
            self.fail(
                f"{node_id} applied {entry.index}@{entry.term} but its disk holds term"
                f" {storage.term(entry.index)} at that index"
            )
        self._record_applied(node_id, AppliedEntry(entry.index, entry.term, int(entry.kind), entry.data), "applied")

    def _record_applied(self, node_id: NodeId, applied: AppliedEntry, how: str) -> None:
        existing = self.applied_at.setdefault(applied.index, applied)
        if existing != applied:
            self.fail(
                f"state machine safety: {node_id} {how} {applied.index}@{applied.term} {applied.data!r}, but"
                f" {existing.index}@{existing.term} {existing.data!r} was applied there before"
            )
        if applied.kind == EntryKind.NORMAL and applied.data.startswith(MALFORMED_COMMAND_PREFIX):
            self.fail(f"{node_id} {how} a malformed command at {applied.index}: a forward was proposed unchecked")
        if applied.kind == EntryKind.NORMAL and applied.data:
            index = self.value_index.setdefault(applied.data, applied.index)
            if index != applied.index and applied.data not in self.values_forwarded:
                self.fail(f"value {applied.data!r} applied at both index {index} and {applied.index}")

    # -- clients ----------------------------------------------------------------------------

    def on_ack(self, value: bytes, index: int) -> None:
        self.acked[value] = index
        self.acked_index_max = max(self.acked_index_max, index)
        for listener in self.ack_listeners:
            listener(value, index)

    def on_read_request(self, context: bytes) -> None:
        self.read_floor[context] = self.acked_index_max

    def on_read_served(self, node_id: NodeId, label: bytes, disk: Disk) -> None:
        """A linearizable read is served from `disk`'s applied state: it must reflect every
        write acknowledged before the read was asked (its floor). State machine safety makes
        "applied up to the floor" mean "holds every such write"."""
        self.check_count += 1
        floor = self.read_floor.get(label)
        if floor is None:
            self.fail(f"{node_id} served a read nobody asked: {label!r}")
        if disk.applied_index < floor:
            self.fail(
                f"stale read on {node_id}: read {label!r} served at applied index {disk.applied_index}, but a write"
                f" at index {floor} was acknowledged before the read was asked"
            )
