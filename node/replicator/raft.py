"""RaftReplicator: the driver side of the pure Raft core.

This is the only code that touches the core. Each `run` is one iteration of DESIGN.md's loop:
tick if due, then `ready()`; persist entries + hard state, apply committed entries and store
the applied index in ONE LMDB write transaction (one fsync: group commit); then send the
messages that promise persisted state; answer reads; `advance`.
"""

from __future__ import annotations

import logging
import os
import random
import threading
import time

import msgpack
import zmq

from node.config import ClusterConfig, NodeAddress
from node.errors import BadRequest, NoLeader, NotLeader, Refused, SandStoreError
from node.metadata.commands import decode_command
from node.raft import errors as raft_errors
from node.raft.node import RaftNode
from node.raft.types import (
    ConfChange,
    ConfChangeKind,
    ConfChangeStep,
    Config,
    EntryKind,
    HardState,
    MessageKind,
    Ready,
    Role,
    Snapshot,
    SnapshotMeta,
)
from node.replicator import Callbacks
from node.snapshot_codec import decode_snapshot, encode_snapshot
from node.stats import LatencySamples
from node.transport.peer import PeerTransport

log = logging.getLogger("sandstore.raft")

ADDRESSES_DB = b"driver_node_addresses"
MAX_LEADER_CHANGES_KEPT = 100


def encode_addresses(addresses) -> bytes:
    """Member addresses as they travel in conf-change contexts and snapshots (and are stored)."""
    return msgpack.packb({address.id: [address.raft, address.client, address.chunk] for address in addresses})


class RaftReplicator:
    def __init__(self, config: ClusterConfig, node_id: str, store, namespace, callbacks: Callbacks,
                 context: zmq.Context, *, join: bool = False) -> None:
        self._config = config
        self._node_id = node_id
        self._store = store
        self._namespace = namespace
        self._callbacks = callbacks
        self._tick_seconds = config.tick_ms / 1000.0
        self._addresses_db = store.env.open_db(ADDRESSES_DB)
        self._addresses = self._load_addresses()
        core_config = Config(
            node_id=node_id,
            heartbeat_ticks=config.heartbeat_ticks,
            election_ticks_min=config.election_ticks_min,
            election_ticks_max=config.election_ticks_max,
            max_inflight_messages=config.max_inflight_messages,
            max_message_bytes=config.max_message_bytes,
            snapshot_chunk_bytes=config.snapshot_chunk_bytes,
            applied=store.applied_index(),
        )
        # A brand-new cluster bootstraps its voters from the config file; a node that joins an
        # existing cluster (add-voter) must not, or it would believe it is a voter of a group
        # that never agreed to it.
        bootstrap_peers = () if join else config.node_ids()
        rng = random.Random(int.from_bytes(os.urandom(8), "big"))
        self.core = RaftNode(core_config, store, rng, peers=bootstrap_peers)
        self._applied_index = store.applied_index()
        self.transport = PeerTransport(
            context, node_id, self._address(node_id).endpoint("raft"), self._peer_endpoints(),
            max_frame_bytes=config.max_frame_bytes,
        )
        self._next_tick_at = time.monotonic() + self._tick_seconds
        self._read_tokens_waiting: list[int] = []  # registered, read_index not yet asked
        self._read_contexts: dict[bytes, tuple[list[int], float]] = {}  # ctx -> (tokens, asked at)
        self._reads_confirmed: list[tuple[int, list[int]]] = []  # (read index, tokens)
        self._next_read_context = 1
        self._proposed_at: dict[int, float] = {}  # index -> monotonic time, for commit latency
        self.commit_latency = LatencySamples()
        self.fsync_latency = LatencySamples()
        self.leader_changes: list[dict] = []
        self.elections_seen = 0
        self._last_leader = ""
        stored_hard_state = self._store.hard_state()
        self._durable_term_and_vote = (stored_hard_state.term, stored_hard_state.vote)
        self._last_contact: dict[str, float] = {}
        self.log_entries_at_start = store.last_index() - store.first_index() + 1
        self.applied_at_start = self._applied_index
        self.snapshots_installed = 0
        self.snapshots_sent = 0
        self._snapshot_sends: dict[tuple[str, int], float] = {}  # (peer, index) -> started
        self._snapshot_receive_started: float | None = None
        self._snapshot_thread: threading.Thread | None = None
        self._snapshot_image: tuple[SnapshotMeta, bytes, float] | None = None

    # ----- membership addresses (learned from the config file and from conf-change entries)

    def _load_addresses(self) -> dict[str, NodeAddress]:
        addresses = {address.id: address for address in self._config.nodes}
        with self._store.env.begin(db=self._addresses_db) as txn:
            for key, value in txn.cursor():
                raft, client, chunk = msgpack.unpackb(value)
                addresses[key.decode()] = NodeAddress(key.decode(), raft, client, chunk)
        return addresses

    def _address(self, node_id: str) -> NodeAddress:
        return self._addresses[node_id]

    def _peer_endpoints(self) -> dict[str, str]:
        return {
            node_id: address.endpoint("raft")
            for node_id, address in self._addresses.items()
            if node_id != self._node_id
        }

    def addresses(self) -> dict[str, NodeAddress]:
        return dict(self._addresses)

    def _remember_addresses(self, txn, context: bytes) -> None:
        if not context:
            return
        for node_id, (raft, client, chunk) in msgpack.unpackb(context).items():
            self._addresses[node_id] = NodeAddress(node_id, raft, client, chunk)
            txn.put(node_id.encode(), msgpack.packb([raft, client, chunk]), db=self._addresses_db)

    # ----- the Replicator interface

    def poll_sockets(self) -> list[zmq.Socket]:
        return [self.transport.socket]

    def on_readable(self, socket: zmq.Socket) -> None:
        now = time.monotonic()
        for item in self.transport.receive():
            if item[0] == "raft":
                message = item[1]
                self._last_contact[message.source] = now
                if message.kind == MessageKind.INSTALL_SNAPSHOT and self._snapshot_receive_started is None:
                    self._snapshot_receive_started = now
                elif message.kind == MessageKind.INSTALL_SNAPSHOT_RESPONSE and message.snapshot_done:
                    self._note_snapshot_sent(message.source, message.index, now)
                self.core.step(message)
            else:
                _, source, payload = item
                self._last_contact[source] = now
                self._handle_forward(source, payload)

    def _handle_forward(self, source: str, payload: dict) -> None:
        command = payload.get("propose")
        try:
            if not isinstance(command, bytes):
                raise BadRequest("the payload holds no command")
            decode_command(command)  # a peer is not trusted: only valid commands enter the log
        except SandStoreError as error:
            log.warning("dropped a malformed forward from %s: %s", source, error)
            return
        try:
            self._propose(command)
        except (NotLeader, NoLeader, Refused):
            pass  # the follower's client times out and retries; the session makes that safe

    def seconds_until_tick(self, now_seconds: float) -> float:
        if self.core.has_ready() or self._read_tokens_waiting:
            return 0.0
        return max(0.0, self._next_tick_at - now_seconds)

    def replicate(self, command: bytes) -> None:
        if self.is_leader():
            self._propose(command)
            return
        leader = self.leader()
        if not leader or leader not in self._addresses:
            raise NoLeader("no leader is known right now (election in progress?); retry shortly")
        self.transport.send_forward(leader, {"propose": command})

    def _propose(self, command: bytes) -> None:
        try:
            _, index = self.core.propose(command)
        except raft_errors.NotLeader as error:
            if error.leader_hint:
                raise NotLeader("not the leader", error.leader_hint) from None
            raise NoLeader("no leader is known right now; retry shortly") from None
        except raft_errors.ProposalDropped as error:
            raise NoLeader(f"proposal dropped: {error}; retry shortly") from None
        self._proposed_at[index] = time.monotonic()

    def read_barrier(self, token: int) -> None:
        self._read_tokens_waiting.append(token)

    def is_leader(self) -> bool:
        return self.core.role == Role.LEADER  # asked per client request: no Status snapshot

    def leader(self) -> str:
        return self.core.lead

    def namespace_is_current(self, now_seconds: float) -> bool:
        """Whether this node's applied state is known to be recent: it leads, or it heard from
        its leader within an election timeout and has applied everything it knows committed.
        A node cut off from the cluster must not judge which chunks are unreferenced."""
        if self.core.role == Role.LEADER:
            return True
        leader = self.core.lead
        if not leader or leader not in self._last_contact:
            return False
        silence_seconds = now_seconds - self._last_contact[leader]
        if silence_seconds > self._config.election_ticks_max * self._tick_seconds:
            return False
        return self._applied_index >= self.core.status().commit

    # ----- membership and leadership administration (leader only)

    def add_learner(self, address: NodeAddress) -> tuple[int, int]:
        context = encode_addresses([address])
        change = ConfChange((ConfChangeStep(ConfChangeKind.ADD_LEARNER, address.id),), context)
        return self._change_membership(change)

    def promote(self, node_id: str) -> tuple[int, int]:
        status = self.core.status()
        if node_id not in status.conf_state.learners:
            raise Refused(f"{node_id} is not a learner (add it first)")
        progress = status.progress.get(node_id)
        if progress is None or progress["match"] + self._config.max_inflight_messages < status.last_index:
            match = progress["match"] if progress else 0
            raise Refused(f"{node_id} has not caught up yet (has {match} of {status.last_index} entries)")
        change = ConfChange((ConfChangeStep(ConfChangeKind.ADD_VOTER, node_id),))
        return self._change_membership(change)

    def remove_node(self, node_id: str) -> tuple[int, int]:
        change = ConfChange((ConfChangeStep(ConfChangeKind.REMOVE_NODE, node_id),))
        return self._change_membership(change)

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
        status = self.core.status()
        if status.role != Role.LEADER:
            if status.leader:
                raise NotLeader("leadership transfer is asked of the leader", status.leader)
            raise NoLeader("no leader is known right now; retry shortly")
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

    def run(self, now_seconds: float) -> None:
        while now_seconds >= self._next_tick_at:
            self.core.tick()
            self._next_tick_at += self._tick_seconds
        if now_seconds - self._next_tick_at > 1.0:
            # The process was stalled (suspended, swapping): do not replay a burst of ticks.
            self._next_tick_at = now_seconds + self._tick_seconds
        self._ask_read_index(now_seconds)
        while self.core.has_ready():
            self._handle_ready(self.core.ready())
        self._expire_reads(now_seconds)

    def _ask_read_index(self, now_seconds: float) -> None:
        if not self._read_tokens_waiting:
            return
        tokens, self._read_tokens_waiting = self._read_tokens_waiting, []
        context = self._next_read_context.to_bytes(8, "big")
        self._next_read_context += 1
        try:
            self.core.read_index(context)
        except raft_errors.NotLeader:
            self._callbacks.reads_failed(tokens, NoLeader("no leader is known right now; retry shortly"))
            return
        self._read_contexts[context] = (tokens, now_seconds)

    def _expire_reads(self, now_seconds: float) -> None:
        # A ReadIndex request lost with a leader change is never answered: fail it so the
        # client retries instead of waiting for its whole deadline.
        limit_seconds = 2 * self._config.election_ticks_max * self._tick_seconds
        expired = [ctx for ctx, (_, asked) in self._read_contexts.items() if now_seconds - asked > limit_seconds]
        for context in expired:
            tokens, _ = self._read_contexts.pop(context)
            self._callbacks.reads_failed(tokens, NoLeader("the read could not be confirmed by a leader; retry"))

    def _note_snapshot_sent(self, peer: str, index: int, now: float) -> None:
        started = self._snapshot_sends.pop((peer, index), None)
        if started is not None:
            self.snapshots_sent += 1
            log.info("sent snapshot at index %d to %s in %.1f ms", index, peer, (now - started) * 1000)

    def _send(self, messages) -> None:
        for message in messages:
            if message.kind == MessageKind.INSTALL_SNAPSHOT and message.snapshot_offset == 0:
                key = (message.target, message.snapshot_meta.index)
                if key not in self._snapshot_sends:
                    self._snapshot_sends[key] = time.monotonic()
                    log.info("sending snapshot at index %d (%d bytes) to %s", message.snapshot_meta.index,
                             message.snapshot_meta.size_bytes, message.target)
            self.transport.send(message)

    def _handle_ready(self, ready: Ready) -> None:
        self._send(ready.messages)
        applied_results: list[tuple[int, bytes, dict]] = []
        applied_conf: list[tuple[int, int]] = []
        # Most Readys of an idle or read-heavy node carry only messages (heartbeats, ReadIndex
        # rounds): they need no transaction at all.
        persist = bool(ready.snapshot is not None or ready.entries or ready.hard_state is not None
                       or ready.committed_entries or ready.conf_state is not None)
        finished = time.monotonic()
        if persist:
            started = finished
            # Entries, a new term or vote, and snapshots are promises to other nodes: durable
            # before any message that depends on them. A Ready that only applies committed
            # entries (and moves the commit index) can be redone from the log, so it skips the
            # meta-page flush.
            term_or_vote_changed = self._term_or_vote_changed(ready.hard_state)
            durable = bool(ready.entries or ready.snapshot is not None or term_or_vote_changed)
            with self._store.write_batch(durable=durable) as batch:
                if ready.snapshot is not None:
                    self._install_snapshot(batch, ready.snapshot)
                if ready.entries:
                    batch.append_entries(ready.entries)
                if ready.hard_state is not None:
                    batch.set_hard_state(ready.hard_state)
                for entry in ready.committed_entries:
                    if entry.kind == EntryKind.NORMAL:
                        applied_results.append((entry.index, entry.data,
                                                self._namespace.apply(batch.txn, entry.index, entry.data)))
                    elif entry.kind == EntryKind.CONF_CHANGE:
                        self._remember_addresses(batch.txn, ConfChange.decode(entry.data).context)
                        applied_conf.append((entry.index, entry.term))
                    assert entry.index == self._applied_index + 1, (entry.index, self._applied_index)
                    self._applied_index = entry.index
                if ready.committed_entries:
                    batch.set_applied_index(self._applied_index)
                if ready.conf_state is not None:
                    batch.set_conf_state(ready.conf_state)
            finished = time.monotonic()
            self.fsync_latency.add_seconds(finished - started)
        self._send(ready.messages_after_persist)
        if ready.snapshot is not None or applied_conf:
            self.transport.set_peers(self._peer_endpoints())
        for index, command, result in applied_results:
            proposed_at = self._proposed_at.pop(index, None)
            if proposed_at is not None:
                self.commit_latency.add_seconds(finished - proposed_at)
            self._callbacks.applied(index, command, result)
        for index, term in applied_conf:
            self._callbacks.conf_applied(index, term)
        if ready.soft_state is not None:
            self._note_soft_state(ready)
        for read_state in ready.read_states:
            entry = self._read_contexts.pop(read_state.context, None)
            if entry is not None:
                self._reads_confirmed.append((read_state.index, entry[0]))
        self._serve_confirmed_reads()
        self.core.advance(ready)

    def _install_snapshot(self, batch, snapshot: Snapshot) -> None:
        """A snapshot from the leader replaces log, state machine and known addresses at once."""
        batch.install_snapshot(snapshot)
        # The core bootstraps a new cluster from an empty snapshot at index 1 (its voters come
        # from the config): there is no state-machine image to restore.
        if snapshot.data:
            namespace_data, addresses = decode_snapshot(snapshot.data)
            self._namespace.restore(batch.txn, namespace_data)
            self._remember_addresses(batch.txn, addresses)
            self.snapshots_installed += 1
        self._applied_index = snapshot.meta.index
        received_in_ms = 0.0
        if self._snapshot_receive_started is not None:
            received_in_ms = (time.monotonic() - self._snapshot_receive_started) * 1000
            self._snapshot_receive_started = None
        log.info("installed snapshot at index %d (%d bytes), received and restored in %.1f ms",
                 snapshot.meta.index, len(snapshot.data), received_in_ms)

    def _term_or_vote_changed(self, hard_state: HardState | None) -> bool:
        if hard_state is None:
            return False
        changed = (hard_state.term, hard_state.vote) != self._durable_term_and_vote
        self._durable_term_and_vote = (hard_state.term, hard_state.vote)
        return changed

    def _serve_confirmed_reads(self) -> None:
        if not self._reads_confirmed:
            return
        ready_tokens: list[int] = []
        waiting: list[tuple[int, list[int]]] = []
        for read_index, tokens in self._reads_confirmed:
            if read_index <= self._applied_index:
                ready_tokens.extend(tokens)
            else:
                waiting.append((read_index, tokens))
        self._reads_confirmed = waiting
        if ready_tokens:
            self._callbacks.reads_ready(ready_tokens)

    def _note_soft_state(self, ready: Ready) -> None:
        leader = ready.soft_state.leader
        term = self.core.status().term
        if leader and leader != self._last_leader:
            self.elections_seen += 1
            self.leader_changes.append({"term": term, "leader": leader, "at_ms": int(time.time() * 1000)})
            del self.leader_changes[:-MAX_LEADER_CHANGES_KEPT]
            log.info("leader is now %s (term %d)", leader, term)
        if ready.soft_state.role != Role.LEADER:
            # Proposals of a deposed leader may never commit; their latency would mislead.
            self._proposed_at.clear()
        self._last_leader = leader

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
        applied_in_log = self._applied_index - self._store.first_index() + 1
        if force:
            if self._applied_index <= self._store.snapshot_meta().index:
                return None
            return self._store_snapshot(*self._build_snapshot_image())
        if applied_in_log <= self._config.snapshot_threshold_entries:
            return None
        self._snapshot_thread = threading.Thread(target=self._build_in_background, name="snapshot", daemon=True)
        self._snapshot_thread.start()
        return None

    def _build_in_background(self) -> None:
        self._snapshot_image = self._build_snapshot_image()

    def _build_snapshot_image(self) -> tuple[SnapshotMeta, bytes, float]:
        started = time.monotonic()
        with self._store.read_transaction() as txn:
            applied, term, conf_state = self._store.applied_state(txn)
            namespace_data = self._namespace.snapshot_data(txn)
        addresses = encode_addresses(list(self._addresses.values()))
        data = encode_snapshot(namespace_data, addresses)
        meta = SnapshotMeta(index=applied, term=term, conf_state=conf_state, size_bytes=len(data))
        return meta, data, started

    def _store_snapshot(self, meta: SnapshotMeta, data: bytes, started: float) -> dict | None:
        if meta.index <= self._store.snapshot_meta().index:
            return None  # a snapshot installed from the leader meanwhile is newer: keep it
        compact_to = max(self._store.first_index() - 1, meta.index - self._config.snapshot_trailing_entries)
        with self._store.write_batch() as batch:
            batch.save_snapshot(meta, data)
            batch.compact(compact_to)
        self.core.compacted(compact_to)
        elapsed_ms = (time.monotonic() - started) * 1000
        log.info("snapshot at index %d: %d bytes in %.1f ms; log now starts at %d", meta.index, len(data),
                 elapsed_ms, compact_to + 1)
        return {"index": meta.index, "size_bytes": len(data), "elapsed_ms": round(elapsed_ms, 1),
                "log_first_index": compact_to + 1}

    # ----- visibility

    def status(self) -> dict:
        core = self.core.status()
        now = time.monotonic()
        snapshot_meta = self._store.snapshot_meta()
        return {
            "role": core.role.name.lower(),
            "term": core.term,
            "leader": core.leader,
            "vote": core.vote,
            "commit": core.commit,
            "applied": self._applied_index,
            "first_index": self._store.first_index(),
            "last_index": core.last_index,
            "voters": sorted(core.conf_state.voters),
            "voters_outgoing": sorted(core.conf_state.voters_outgoing),
            "learners": sorted(core.conf_state.learners),
            "progress": core.progress,
            "last_contact_ms": {
                node_id: (round((now - self._last_contact[node_id]) * 1000) if node_id in self._last_contact else None)
                for node_id in self._addresses
                if node_id != self._node_id
            },
            "elections_seen": self.elections_seen,
            "commit_latency_ms": self.commit_latency.percentiles(),
            "fsync_latency_ms": self.fsync_latency.percentiles(),
            "snapshot_index": snapshot_meta.index,
            "snapshot_bytes": snapshot_meta.size_bytes,
            "log_entries": self._store.log_entry_count(),
            "log_entries_at_start": self.log_entries_at_start,
            "applied_at_start": self.applied_at_start,
            "snapshots_installed": self.snapshots_installed,
            "snapshots_sent": self.snapshots_sent,
            "log_bytes": self._store.log_size_bytes(),
            "transport": self.transport.counters(),
        }

    def inspect_term(self) -> dict:
        core = self.core.status()
        return {"term": core.term, "vote": core.vote, "leader": core.leader,
                "leader_changes": list(self.leader_changes)}

    def close(self) -> None:
        self.transport.close()
