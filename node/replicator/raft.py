"""RaftReplicator: production's wiring of LMDB, the namespace and ZeroMQ into the driver.

The driver (driver.py) carries out every Ready; this module only adapts the node's LMDB store,
its Namespace and its PeerTransport to the driver's seams (contracts.py), keeps the tick
schedule of the real clock, administers membership and leadership, and builds snapshots of its
own state for log compaction.
"""

from __future__ import annotations

import logging
import os
import random
import threading
import time
from typing import Callable

import zmq

from node.config import ClusterConfig, NodeAddress
from node.errors import NoLeader, NotLeader, Refused, SandStoreError
from node.metadata.commands import Command, decode_command
from node.raft import errors as raft_errors
from node.raft.node import RaftNode
from node.raft.types import (
    ConfChange,
    ConfChangeKind,
    ConfChangeStep,
    ConfState,
    Config,
    Entry,
    ROLE,
    Message,
    SnapshotMeta,
    Status,
)
from node.replicator.addresses import AddressBook, encode_addresses
from node.replicator.contracts import Callbacks
from node.replicator.driver import APPLY_HOLD_TICKS, Driver
from node.replicator.status import ReplicatorStatus
from node.snapshot_codec import decode_snapshot, encode_snapshot
from node.stats import LatencySamples
from node.transport.peer import PeerTransport

log = logging.getLogger("sandstore.raft")

LEADER_CHANGES_KEPT_MAX = 100
# A leader's flush of its own entries blocks its loop for two fsyncs (0.3-0.6 ms on the
# benchmark machine) and nothing waits for it while its followers commit without it: once
# every 5 ticks it holds up one write in about 25 at one write outstanding (every tick: one
# in three, the median write).
OWN_ENTRIES_FLUSH_TICKS = 5
# A leader's Ready of fewer entries flushes them in its batch (Driver, OWN ENTRIES): unflushed,
# a write at one outstanding waits for the slower follower's ack instead of the faster one's
# (measured slower on the benchmark machine, though on a noisy box); at 64 outstanding the
# leader's Readys hold tens of entries, and unflushed was 6-24% more writes/s at 172-208
# against 211-258 node CPU us per write.
OWN_ENTRIES_UNFLUSHED_FROM = 4
INCARNATION_BYTES = 8


class MeasuredStore:
    """The driver's Store over NodeStore, timing each batch (its commit is the fsync, unless
    NodeStore defers it: an apply-only batch)."""

    def __init__(self, store) -> None:
        self._store = store
        self.fsync_latency = LatencySamples()

    @property
    def deferred(self) -> bool:
        return self._store.has_deferred

    def write_batch(self, durable: bool = True) -> "_TimedBatch":
        return _TimedBatch(self._store.write_batch(durable=durable), self.fsync_latency)

    def hard_state(self):
        return self._store.hard_state()


class _TimedBatch:
    """MeasuredStore.write_batch's scope: the store's, timed when it completes (a plain class:
    a generator-based context manager cost more than the timing, once per batch)."""

    __slots__ = ("_scope", "_samples", "_started")

    def __init__(self, scope, samples: LatencySamples) -> None:
        self._scope = scope
        self._samples = samples
        self._started = 0.0

    def __enter__(self):
        self._started = time.monotonic()
        return self._scope.__enter__()

    def __exit__(self, kind, error, trace) -> bool:
        suppressed = self._scope.__exit__(kind, error, trace)
        if kind is None:  # a batch that failed is not a sample (as before)
            self._samples.add_seconds(time.monotonic() - self._started)
        return suppressed


class NamespaceMachine:
    """The driver's StateMachine: the file-system namespace plus the member address book, both
    written in the batch's LMDB transaction."""

    def __init__(self, namespace, addresses: AddressBook) -> None:
        self._namespace = namespace
        self._addresses = addresses

    def decode(self, command: bytes) -> Command:
        return decode_command(command)

    def apply(self, batch, entry: Entry, decoded: Command | SandStoreError) -> dict:
        return self._namespace.apply(batch.txn, entry.index, decoded)

    def apply_membership(self, batch, entry: Entry, change: ConfChange) -> None:
        self._addresses.remember(batch.txn, change.context)

    def restore(self, batch, data: bytes) -> None:
        namespace_data, addresses = decode_snapshot(data)
        self._namespace.restore(batch.txn, namespace_data)
        self._addresses.remember(batch.txn, addresses)


class ZmqTransport:
    """The driver's Transport over PeerTransport; peers are every member with a known address."""

    def __init__(self, peer: PeerTransport, addresses: AddressBook) -> None:
        self.peer = peer
        self._addresses = addresses
        # Every Raft message goes straight to the peer transport (a method of this class that
        # only passed it on was one more call per message sent).
        self.send: Callable[[Message], object] = peer.send

    def send_forward(self, leader: str, command: bytes) -> None:
        if leader not in self._addresses:
            raise NoLeader(f"the leader {leader} has no known address yet; retry shortly")
        self.peer.send_forward(leader, {"propose": command})

    def set_peers(self, conf_state: ConfState) -> None:
        self.peer.set_peers(self._addresses.peer_endpoints())


class RaftReplicator:
    def __init__(self, config: ClusterConfig, node_id: str, store, namespace, callbacks: Callbacks,
                 context: zmq.Context, *, join: bool = False, security: tuple | None = None) -> None:
        """security: (ServerSecurity, ClientSecurity) for the raft port and the peer links."""
        self._config = config
        self._node_id = node_id
        self._store = store
        self._namespace = namespace
        self._callbacks = callbacks
        self._tick_seconds = config.tick_ms / 1000.0
        self._addresses = AddressBook(config, node_id, store.env)
        applied_index = store.applied_index()
        core_config = Config(
            node_id=node_id,
            heartbeat_ticks=config.heartbeat_ticks,
            election_ticks_min=config.election_ticks_min,
            election_ticks_max=config.election_ticks_max,
            inflight_messages_max=config.inflight_messages_max,
            message_bytes_max=config.message_bytes_max,
            snapshot_chunk_bytes=config.snapshot_chunk_bytes,
            campaign_on_leader_unreachable=config.campaign_on_leader_unreachable,
            applied=applied_index,
        )
        # A brand-new cluster bootstraps its voters from the config file; a node that joins an
        # existing cluster (add-voter) must not, or it would believe it is a voter of a group
        # that never agreed to it.
        bootstrap_peers = () if join else config.node_ids()
        rng = random.Random(int.from_bytes(os.urandom(8), "big"))
        self.core = RaftNode(core_config, store, rng, peers=bootstrap_peers)
        peer = PeerTransport(
            context, node_id, config.node(node_id).bind_address("raft"), self._addresses.peer_endpoints(),
            frame_bytes_max=config.frame_bytes_max, security=security,
        )
        self.transport = ZmqTransport(peer, self._addresses)
        self._measured_store = MeasuredStore(store)
        self.driver = Driver(
            self.core, self._measured_store, NamespaceMachine(namespace, self._addresses), self.transport,
            self, node_id=node_id, incarnation=os.urandom(INCARNATION_BYTES), applied_index=applied_index,
            read_timeout_seconds=2 * config.election_ticks_max * self._tick_seconds,
            apply_hold_seconds=APPLY_HOLD_TICKS * self._tick_seconds,
            # A leader's own entries flushed within OWN_ENTRIES_FLUSH_TICKS (or at once when its
            # followers cannot commit them alone); a follower is fresh while it answered a
            # heartbeat within two heartbeat intervals (and a tick of slack).
            own_entries_flush_seconds=OWN_ENTRIES_FLUSH_TICKS * self._tick_seconds,
            own_entries_unflushed_from=OWN_ENTRIES_UNFLUSHED_FROM,
            peer_fresh_seconds=(2 * config.heartbeat_ticks + 1) * self._tick_seconds,
        )
        self._next_tick_at = time.monotonic() + self._tick_seconds
        # A heartbeat late by more than a tick wakes a follower on every tick again.
        self._follower_wake_seconds = (config.heartbeat_ticks + 1) * self._tick_seconds
        self.leader_changes: list[dict] = []
        self.log_entries_at_start = store.last_index() - store.first_index() + 1
        self.applied_at_start = applied_index
        self._snapshot_thread: threading.Thread | None = None
        self._snapshot_image: tuple[SnapshotMeta, bytes, float] | None = None
        self._snapshot_size_check_at = 0  # applied index at which _log_outweighs_state looks again

    # ----- driver callbacks: passed on to the server, leader changes remembered

    def results_fixed(self, results: list) -> None:
        self._callbacks.results_fixed(results)

    def applied(self, index: int, decoded: Command | SandStoreError, result: dict) -> None:
        self._callbacks.applied(index, decoded, result)

    def conf_applied(self, index: int, term: int) -> None:
        self._callbacks.conf_applied(index, term)

    def reads_ready(self, tokens: list[int]) -> None:
        self._callbacks.reads_ready(tokens)

    def reads_failed(self, tokens: list[int], error: Exception) -> None:
        self._callbacks.reads_failed(tokens, error)

    def leader_changed(self, leader: str, term: int, is_self: bool) -> None:
        self.leader_changes.append({"term": term, "leader": leader, "at_ms": int(time.time() * 1000)})
        del self.leader_changes[:-LEADER_CHANGES_KEPT_MAX]

    # ----- the Replicator interface

    def addresses(self) -> dict[str, NodeAddress]:
        return self._addresses.all()

    def poll_sockets(self) -> list[zmq.Socket]:
        # The raft port, and the link to the leader: the one link whose closing must wake the
        # loop at once (a follower's early pre-vote; RaftNode.leader_unreachable ignores every
        # other peer). A new list when the leader or the peers change.
        core = self.core
        return self.transport.peer.poll_sockets_watching(core.lead if core.role != ROLE.LEADER else None)

    def on_readable(self, socket: zmq.Socket) -> None:
        if socket is not self.transport.peer.socket:
            self.transport.peer.on_monitor_readable(socket)  # taken in run(): take_lost_links
            return
        now = time.monotonic()
        # A follower's ticks that fell due while the loop slept come first, as if counted on
        # time: it must not count them after the heartbeat that woke it, as silence that
        # heartbeat ended. A leader's run after the messages (in run()): a due tick then sends
        # a commit an acknowledgement just made in the same turn as the client's reply, so
        # followers (and stale reads there) learn it as soon as before.
        if self.core.role != ROLE.LEADER:
            self._run_due_ticks(now)
        for item in self.transport.peer.receive():
            if item[0] == "raft":
                self.driver.step(item[1], now)
            else:
                _, source, payload = item
                self.driver.receive_forward(source, payload.get("propose"), now)

    def seconds_until_tick(self, now_seconds: float) -> float:
        if self.driver.has_work():
            return 0.0
        seconds = self._next_wake_at() - now_seconds
        return seconds if seconds > 0.0 else 0.0

    def _next_wake_at(self) -> float:
        """When the loop must run next without input: at the next tick, except for a leader
        between heartbeats and a follower that hears its leader. A follower's ticks only count
        towards its election timeout (election_ticks_min ticks at least): while heartbeats
        arrive, each wakes the loop and the ticks in between are counted then
        (_run_due_ticks), so waking for every tick as well would double an idle follower's
        turns for nothing. Once the leader misses a heartbeat by a tick, or anything else is
        due (a pre-vote after a lost link, reads, apply-only batches to commit), it wakes on
        every tick again. A follower that holds committed entries back wakes when the hold
        ends, not for the ticks before it (they only count towards the election)."""
        next_tick_at = self._next_tick_at
        if self._store.has_deferred or self.driver.reads_pending():  # (the store itself: asked every turn)
            return next_tick_at
        flush_at = self.driver.own_entries_flush_due_at()
        if flush_at is not None:  # a leader's own entries written without a flush (Driver)
            return min(next_tick_at, flush_at)
        wake_at = self._ticks_wake_at(next_tick_at)
        held_until = self.driver.committed_held_until()
        if held_until is not None:  # a follower batching its apply (Driver, APPLY_HOLD_ENTRIES_MAX)
            return min(wake_at, held_until)
        return wake_at

    def _ticks_wake_at(self, next_tick_at: float) -> float:
        """_next_wake_at for the ticks alone: a leader's heartbeat and commit ticks, every
        tick of a follower whose leader is late or of a candidate."""
        core = self.core
        if core.role == ROLE.LEADER:
            # A leader's ticks between heartbeats only send a commit no APPEND carried, a tick
            # after it was made (RaftNode.ticks_until_commit_broadcast): it wakes for that tick
            # and counts the others then. (The check-quorum count may run a tick late, of
            # election_ticks_min.)
            ticks = max(1, self._config.heartbeat_ticks - core.heartbeat_elapsed_ticks)
            ticks_to_commit = core.ticks_until_commit_broadcast()
            if ticks_to_commit is not None:
                ticks = min(ticks, ticks_to_commit)
            return next_tick_at + (ticks - 1) * self._tick_seconds
        if core.role != ROLE.FOLLOWER or core.early_campaign_ticks is not None:
            return next_tick_at
        heard_at = self.driver.last_contact.get(core.lead)
        if heard_at is None:
            return next_tick_at
        return max(next_tick_at, heard_at + self._follower_wake_seconds)

    def replicate(self, command: bytes, decoded: Command | None = None) -> None:
        self.driver.propose(command, time.monotonic(), decoded)

    def read_barrier(self, token: int) -> None:
        self.driver.read_barrier(token)

    def release_held_entries(self) -> bool:
        return self.driver.release_hold()

    def is_leader(self) -> bool:
        return self.core.role == ROLE.LEADER  # asked per client request: no Status snapshot

    def leader(self) -> str:
        return self.core.lead

    def namespace_is_current(self, now_seconds: float) -> bool:
        """Whether this node's applied state is known to be recent: it leads, or it heard from
        its leader within an election timeout and has applied everything it knows committed.
        A node cut off from the cluster must not judge which chunks are unreferenced."""
        if self.core.role == ROLE.LEADER:
            return True
        leader = self.core.lead
        last_contact = self.driver.last_contact
        if not leader or leader not in last_contact:
            return False
        silence_seconds = now_seconds - last_contact[leader]
        if silence_seconds > self._config.election_ticks_max * self._tick_seconds:
            return False
        # Entries held back to be applied in one batch (at most a tick's worth, see the driver)
        # count as applied: this answer is already up to a housekeeping interval old when the
        # chunk service uses it, and unreferenced chunks are kept for gc_grace_seconds anyway.
        # The commit index read directly: a Status snapshot (progress table, log bounds) cost
        # more than the rest of this check, on every housekeeping turn.
        return self.driver.applied_index >= self.core.log.committed or self.driver.committed_held_until() is not None

    # ----- membership and leadership administration (leader only)

    def add_learner(self, address: NodeAddress) -> tuple[int, int]:
        context = encode_addresses([address])
        change = ConfChange((ConfChangeStep(ConfChangeKind.ADD_LEARNER, address.id),), context)
        return self._change_membership(change)

    def promote(self, node_id: str) -> tuple[int, int]:
        # Only the leader knows how far a learner has come: a follower's progress table is
        # empty, and reading it would refuse every promote sent to a follower as "not caught up".
        status = self._leader_status("membership changes go to the leader")
        if node_id not in status.conf_state.learners:
            raise Refused(f"{node_id} is not a learner (add it first)")
        progress = status.progress.get(node_id)
        if progress is None or progress["match"] + self._config.inflight_messages_max < status.last_index:
            match = progress["match"] if progress else 0
            raise Refused(f"{node_id} has not caught up yet (has {match} of {status.last_index} entries)")
        change = ConfChange((ConfChangeStep(ConfChangeKind.ADD_VOTER, node_id),))
        return self._change_membership(change)

    def remove_node(self, node_id: str) -> tuple[int, int]:
        change = ConfChange((ConfChangeStep(ConfChangeKind.REMOVE_NODE, node_id),))
        return self._change_membership(change)

    def _leader_status(self, why_the_leader: str) -> Status:
        """The core's status, if this node leads; else NotLeader (with the leader it knows)."""
        status = self.core.status()
        if status.role != ROLE.LEADER:
            if status.leader:
                raise NotLeader(why_the_leader, status.leader)
            raise NoLeader("no leader is known right now; retry shortly")
        return status

    def _change_membership(self, change: ConfChange) -> tuple[int, int]:
        try:
            return self.core.propose_membership_change(change)
        except raft_errors.NotLeader as error:
            if error.leader_hint:
                raise NotLeader("membership changes go to the leader", error.leader_hint) from None
            raise NoLeader("no leader is known right now; retry shortly") from None
        except (raft_errors.ConfChangeInProgress, raft_errors.InvalidConfChange) as error:
            raise Refused(str(error)) from None

    def transfer_leader(self, target: str | None) -> str:
        status = self._leader_status("leadership transfer is asked of the leader")
        if not target:
            candidates = sorted(
                (progress["match"], node_id)
                for node_id, progress in status.progress.items()
                if node_id != self._node_id and node_id in status.conf_state.voters
            )
            if not candidates:
                raise Refused("no other voter to transfer leadership to")
            target = candidates[-1][1]
        try:
            self.core.transfer_leadership(target)
        except raft_errors.TransferRefused as error:
            raise Refused(str(error)) from None
        return target

    # ----- the loop body

    def _run_due_ticks(self, now_seconds: float) -> None:
        if now_seconds < self._next_tick_at:
            return  # no tick due (most turns), and so no stall to skip
        if now_seconds - self._next_tick_at > 1.0:
            # The process was stalled (suspended, swapping): do not replay a burst of ticks.
            self._next_tick_at = now_seconds
        while now_seconds >= self._next_tick_at:
            self.core.tick()
            self._next_tick_at += self._tick_seconds

    def run(self, now_seconds: float) -> None:
        self._run_due_ticks(now_seconds)
        # A closed link to the leader (its process died: the kernel closed its connections) is a
        # hint to pre-vote after a few heartbeats of silence instead of the whole election
        # timeout. The core ignores it for any peer but its leader, and pre-vote with leader
        # stickiness keeps a link that alone dropped from disturbing a leader the others hear.
        for peer in self.transport.peer.take_lost_links():
            self.core.leader_unreachable(peer)
        self.driver.process(now_seconds)
        held_until = self.driver.committed_held_until()
        if held_until is not None:
            now = time.monotonic()
            if now >= held_until:
                # The hold ended during this turn (most often in the fsync of the batch that
                # acknowledged the next entries): apply now, not in a turn of its own at once.
                self.driver.process(now)
        # Apply-only batches wait for the next durable batch to commit with it (NodeStore): at
        # one write outstanding the next write's comes within a round trip. Other threads
        # (chunk GC, repair, snapshots) see them once committed: at the latest a tick later,
        # or, behind a leader's unflushed own entries, with their flush (its commit does it).
        if self.driver.own_entries_flush_due_at() is None:
            self._store.commit_deferred(older_than_seconds=self._tick_seconds)

    # ----- snapshots (log compaction)

    def maybe_snapshot(self, force: bool = False) -> dict | None:
        """Compact the log once it holds more than snapshot_threshold_entries applied entries.

        Automatic snapshots build the image on a background thread from one LMDB read
        transaction (a consistent cut: applied index, membership and namespace tables), so the
        loop keeps serving heartbeats; the driver thread then stores it and compacts. A forced
        snapshot (`sandctl snapshot`) does both steps now and returns what it did."""
        if self._snapshot_image is not None:
            image, self._snapshot_image = self._snapshot_image, None
            self._snapshot_thread = None
            return self._store_snapshot(*image)
        if self._snapshot_thread is not None:
            if force:
                raise Refused("a snapshot is being built right now; try again in a moment")
            return None
        applied_index = self.driver.applied_index
        applied_in_log = applied_index - self._store.first_index() + 1
        if force:
            if applied_index <= self._store.snapshot_meta().index:
                return None
            return self._store_snapshot(*self._build_snapshot_image())
        if applied_in_log <= self._config.snapshot_threshold_entries or not self._log_outweighs_state(applied_index):
            return None
        self._snapshot_thread = threading.Thread(target=self._build_in_background, name="snapshot", daemon=True)
        self._snapshot_thread.start()
        return None

    def _log_outweighs_state(self, applied_index: int) -> bool:
        """Whether the log holds snapshot_log_to_state_ratio of the last snapshot's size. A
        snapshot rewrites the whole state machine and stalls this node's loop while it stores
        it: a benchmark's 53 MB namespace was rewritten every 8192 entries (1-2 MB of log), on
        all three nodes at once, for 0.9-1.3 s each, and a leader killed meanwhile waited that
        long for its successor. Checked a few times per threshold, not on every turn (the log's
        size is an LMDB stat)."""
        ratio = self._config.snapshot_log_to_state_ratio
        if ratio <= 0:
            return True
        if applied_index < self._snapshot_size_check_at:
            return False
        if self._store.log_size_bytes() >= ratio * self._store.snapshot_meta().size_bytes:
            return True
        self._snapshot_size_check_at = applied_index + max(1, self._config.snapshot_threshold_entries // 8)
        return False

    def _build_in_background(self) -> None:
        self._snapshot_image = self._build_snapshot_image()

    def _build_snapshot_image(self) -> tuple[SnapshotMeta, bytes, float]:
        started = time.monotonic()
        with self._store.read_transaction() as txn:
            applied, term, conf_state = self._store.applied_state(txn)
            namespace_data = self._namespace.snapshot_data(txn)
        data = encode_snapshot(namespace_data, self._addresses.encoded())
        meta = SnapshotMeta(index=applied, term=term, conf_state=conf_state, size_bytes=len(data))
        return meta, data, started

    def _store_snapshot(self, meta: SnapshotMeta, data: bytes, started: float) -> dict | None:
        if meta.index <= self._store.snapshot_meta().index:
            return None  # a snapshot installed from the leader meanwhile is newer: keep it
        compact_to = max(self._store.first_index() - 1, meta.index - self._config.snapshot_trailing_entries)
        store_started = time.monotonic()
        # The core must hold no unflushed own entry that the compaction would cut from under it.
        self.driver.flush_own_entries()
        with self._store.write_batch() as batch:
            batch.save_snapshot(meta, data)
            batch.compact(compact_to)
        self.core.compacted(compact_to)
        now = time.monotonic()
        elapsed_ms = (now - started) * 1000
        # The store and compaction run on the loop (they stall it), the build before them did not.
        log.info("snapshot at index %d: %d bytes in %.1f ms (%.1f ms of it stored on the loop); log now starts at %d",
                 meta.index, len(data), elapsed_ms, (now - store_started) * 1000, compact_to + 1)
        return {"index": meta.index, "size_bytes": len(data), "elapsed_ms": round(elapsed_ms, 1),
                "log_first_index": compact_to + 1}

    # ----- visibility

    def status(self, latencies: bool = True) -> ReplicatorStatus:
        core = self.core.status()
        now = time.monotonic()
        snapshot_meta = self._store.snapshot_meta()
        last_contact = self.driver.last_contact
        counters = self.driver.counters
        return ReplicatorStatus(
            role=core.role.name.lower(),
            term=core.term,
            leader=core.leader,
            vote=core.vote,
            commit=core.commit,
            applied=self.driver.applied_index,
            first_index=self._store.first_index(),
            last_index=core.last_index,
            voters=sorted(core.conf_state.voters),
            voters_outgoing=sorted(core.conf_state.voters_outgoing),
            learners=sorted(core.conf_state.learners),
            progress=core.progress,
            last_contact_ms={
                node_id: (round((now - last_contact[node_id]) * 1000) if node_id in last_contact else None)
                for node_id in self._addresses.all()
                if node_id != self._node_id
            },
            elections_seen=counters.elections_seen,
            commit_latency_ms=self.driver.commit_latency.percentiles() if latencies else {},
            fsync_latency_ms=self._measured_store.fsync_latency.percentiles() if latencies else {},
            store_syncs=self._store.sync_counters.to_dict(),
            snapshot_index=snapshot_meta.index,
            snapshot_bytes=snapshot_meta.size_bytes,
            log_entries=self._store.log_entry_count(),
            log_entries_at_start=self.log_entries_at_start,
            applied_at_start=self.applied_at_start,
            snapshots_installed=counters.snapshots_installed,
            snapshots_sent=counters.snapshots_sent,
            log_bytes=self._store.log_size_bytes(),
            peer_messages_rejected=counters.peer_messages_rejected,
            forwards_dropped=counters.forwards_dropped,
            reads_pending=self.driver.reads_pending(),
            transport=self.transport.peer.counters(),
        )

    def inspect_term(self) -> dict:
        core = self.core.status()
        return {"term": core.term, "vote": core.vote, "leader": core.leader,
                "leader_changes": list(self.leader_changes)}

    def close(self) -> None:
        self.transport.peer.close()
