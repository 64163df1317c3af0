"""RepairScheduler: the leader's loop that keeps every chunk at `replication` live copies.

Two sides:
  - the driver thread calls run(now_seconds) from the server's housekeeping. It is cheap: it
    builds the node view (membership and last contact, from the replicator), proposes the
    replica commands the worker queued (the Raft core is the driver thread's alone), and does
    nothing at all on a follower. applied() resolves a proposal when its entry is applied.
  - a worker thread runs rounds: ask each up member's chunk port for its state (corrupt copies
    found, removals, a new incarnation), read the recorded replicas, take fresh inventories
    where something changed, plan (planner.plan, pure), and carry the plan out: record drops
    and surplus drops through Raft, copies on `repair_copies_in_flight_max` copy threads,
    each paid for in the shared throttle, verified at the target, then recorded.

Inventories are taken AFTER the records are read: every recorded copy was durable before its
record committed, so a fresh inventory that lacks it proves it is missing. An inventory older
than the records proves nothing and is not used (a put may have added chunks since).
"""

from __future__ import annotations

import collections
import logging
import queue
import secrets
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

import zmq

from node.config import ClusterConfig
from node.errors import ChecksumMismatch, NotLeader, SandStoreError
from node.metadata.commands import encode_command
from node.repair import peers
from node.repair.health import ClusterView, Health, NodeView, Replica, chunk_health, replica_states
from node.repair.planner import ChunkRecord, Copy, Drop, Plan, plan
from node.repair.throttle import Throttle

log = logging.getLogger("sandstore.repair")

ROUND_SECONDS = 0.5  # how often the worker looks at the cluster
# A peer unheard of for this long is not up (its copies are not live). Followers answer every
# heartbeat, so this is many heartbeats: a loaded machine does not make nodes flicker.
LIVENESS_SECONDS_MIN = 2.0
VIEW_INTERVAL_SECONDS = 0.2  # how often the driver thread refreshes the node view
INVENTORY_INTERVAL_SECONDS = 30.0  # every node's inventory is taken at least this often
STATS_TIMEOUT_SECONDS = 2.0
INVENTORY_TIMEOUT_SECONDS = 10.0
FETCH_CALL_TIMEOUT_SECONDS = 40.0  # the target's own fetch is bounded by 30 s
PROPOSAL_TIMEOUT_SECONDS = 10.0
DELETE_ATTEMPTS_MAX = 20  # a surplus delete waits for its node to apply the drop
DELETE_RETRY_SECONDS = 0.1
RATE_WINDOW_SECONDS = 10.0
INVENTORY_PAGE_IDS = 65536
CLOSE_WAIT_SECONDS = 2.0
CORRUPT_CHUNKS_MAX = 100_000  # corrupt marks kept (labels for fsck), a bound on memory
FSCK_FILES_MAX = 100_000

assert ROUND_SECONDS > VIEW_INTERVAL_SECONDS
assert FETCH_CALL_TIMEOUT_SECONDS > 30.0  # node/chunks/service.py FETCH_TIMEOUT_SECONDS


@dataclass(frozen=True)
class Membership:
    """What the driver thread knows about the cluster, from the replicator."""

    is_leader: bool
    members: frozenset[str]  # voters and learners
    contact_age_seconds: dict[str, float | None]  # peers: time since last heard from (None: never)
    chunk_addresses: dict[str, str]


@dataclass
class _Pending:
    done: threading.Event = field(default_factory=threading.Event)
    result: dict | None = None


@dataclass
class _NodeChunks:
    """A member's chunk port as the worker last saw it."""

    incarnation: str = ""
    removals: int = -1
    corrupt_seen: int = 0  # highest corrupt event number already taken in
    inventory_at: float = 0.0  # monotonic time of the last inventory
    stray_seen: set = field(default_factory=set)  # chunk ids seen as strays in the last inventory


class RepairScheduler:
    def __init__(self, config: ClusterConfig, node_id: str, *, context: zmq.Context,
                 membership: Callable[[], Membership], propose: Callable[[bytes], None],
                 read_records: Callable[[], list[ChunkRecord]], read_record: Callable[[bytes], ChunkRecord | None],
                 clock: Callable[[], float] = time.monotonic, security=None) -> None:
        """membership and propose are called on the driver thread only; read_records (every
        recorded chunk, from a read transaction of this node) and read_record (one) on others.
        security: this node's ClientSecurity for its calls to chunk ports (None: unit tests)."""
        self._config = config
        self._node_id = node_id
        self._context = context
        self._security = security
        self._membership = membership
        self._propose = propose
        self._read_records = read_records
        self._read_record = read_record
        self._clock = clock
        self._liveness_seconds = max(LIVENESS_SECONDS_MIN, 2 * config.election_ticks_max * config.tick_ms / 1000)
        self._throttle = Throttle(config.repair_bytes_per_second)
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._wake = threading.Event()
        # Leadership: a new term of leading gets a new session and fresh worker state.
        self._leading_generation = 0
        self._leading = False
        self._client_id = ""
        self._seq = 0
        self._proposals: queue.SimpleQueue = queue.SimpleQueue()  # (key, command) for the driver
        self._pending: dict[tuple[str, int], _Pending] = {}
        # Written by the driver thread, read by the worker: replaced whole, never mutated.
        self._view: tuple[int, dict[str, NodeView], dict[str, str]] | None = None
        self._down_since: dict[str, float] = {}
        self._view_at = float("-inf")
        # Worker state.
        self._nodes: dict[str, _NodeChunks] = {}
        self._corrupt: dict[bytes, set[str]] = {}
        self._missing: dict[bytes, set[str]] = {}  # recorded copies a fresh inventory lacked
        self._missing_lock = threading.Lock()  # copy threads forget entries as they repair them
        # chunk -> target of the copy in progress; the worker adds, copy threads remove, the
        # driver thread reads (pending_targets): always under _lock, read as copies.
        self._in_flight: dict[bytes, str] = {}
        self._copies: queue.SimpleQueue = queue.SimpleQueue()
        self._rebalance_requested = False
        self._copied: collections.deque = collections.deque()  # (monotonic time, bytes) for the rate
        self._published: dict = {"leader": False}
        self._published_view: ClusterView | None = None
        self.counters = collections.Counter()
        self._threads = [threading.Thread(target=self._work, name="repair-worker", daemon=True)]
        self._threads += [threading.Thread(target=self._copy_loop, name=f"repair-copy-{number}", daemon=True)
                          for number in range(config.repair_copies_in_flight_max)]
        self._started = False

    # ----- the driver thread

    def run(self, now_seconds: float) -> None:
        if now_seconds - self._view_at >= VIEW_INTERVAL_SECONDS:
            self._view_at = now_seconds
            self._refresh_view(now_seconds)
        # empty() first: this thread is the queue's only reader, so a get after it never finds
        # the queue empty, and no queue.Empty is raised (and caught) every round.
        while not self._proposals.empty():
            key, command = self._proposals.get_nowait()
            try:
                self._propose(command)
            except SandStoreError as error:  # not the leader any more, or a full store
                self._resolve(key, {"ok": False, "error": {"code": error.code, "message": str(error)}})

    def _refresh_view(self, now_seconds: float) -> None:
        membership = self._membership()
        if not membership.is_leader:
            if self._leading:
                self._stop_leading()
            return
        if not self._leading:
            self._start_leading()
        nodes = {}
        for node in sorted(membership.members | set(self._down_since) | {self._node_id}):
            age = 0.0 if node == self._node_id else membership.contact_age_seconds.get(node)
            up = node in membership.members and age is not None and age <= self._liveness_seconds
            if up:
                self._down_since.pop(node, None)
                nodes[node] = NodeView(node, True, True)
            else:
                since = self._down_since.setdefault(node, now_seconds)
                nodes[node] = NodeView(node, node in membership.members, False, now_seconds - since)
        self._view = (self._leading_generation, nodes, dict(membership.chunk_addresses))

    def _start_leading(self) -> None:
        with self._lock:
            self._leading = True
            self._leading_generation += 1
            self._client_id = f"repair-{self._node_id}-{secrets.token_hex(4)}"
            self._seq = 0
        self._down_since.clear()
        if not self._started:
            self._started = True
            for thread in self._threads:
                thread.start()
        log.info("repair scheduler active on %s (session %s)", self._node_id, self._client_id)

    def _stop_leading(self) -> None:
        with self._lock:
            self._leading = False
            self._leading_generation += 1
            pending, self._pending = self._pending, {}
        self._view = None
        for waiting in pending.values():
            waiting.result = {"ok": False, "error": {"code": NotLeader.code, "message": "leadership lost"}}
            waiting.done.set()

    def applied(self, client: str, seq: int, result: dict) -> None:
        """Server callback for every applied command: resolves this scheduler's proposals."""
        if client == self._client_id:
            self._resolve((client, seq), result)

    def _resolve(self, key: tuple[str, int], result: dict) -> None:
        with self._lock:
            waiting = self._pending.pop(key, None)
        if waiting is not None:
            waiting.result = result
            waiting.done.set()

    def status(self) -> dict:
        """Repair progress as of the last round (on the leader; {"leader": False} elsewhere)."""
        return dict(self._published) if self._leading else {"leader": False}

    def nodes_down(self) -> frozenset:
        """Nodes whose copies are not live right now (du): silent or removed members."""
        view = self._view
        if view is None:
            return frozenset()
        return frozenset(node for node, node_view in view[1].items() if not node_view.up)

    def request_rebalance(self) -> dict:
        if not self._leading:
            raise NotLeader("rebalance is asked of the leader", "")
        self._rebalance_requested = True
        self._wake.set()
        used = self._published.get("used_bytes", {})
        return {"requested": True, "used_bytes": used}

    def pending_targets(self) -> dict[bytes, str]:
        with self._lock:
            return dict(self._in_flight)

    def chunk_reporter(self, members) -> Callable[[bytes, list[str]], tuple[Health, dict[str, Replica]]] | None:
        """For fsck: (health, replica states) of a chunk, by the last round's view brought to
        the current `members` (every voter and learner id); None before the first round."""
        view = self._published_view
        if view is None:
            return None
        view = view.for_members(members)

        def report(chunk_id: bytes, recorded: list[str]) -> tuple[Health, dict[str, Replica]]:
            states = replica_states(chunk_id, tuple(recorded), view)
            return chunk_health(chunk_id, states, view), states

        return report

    def close(self) -> None:
        """Stop the threads. A copy blocked on a chunk port is not waited for: the server's
        Context.term() that follows interrupts its call (the thread then closes its socket)."""
        self._stopping.set()
        self._wake.set()
        self._stop_leading()
        for _ in self._threads[1:]:
            self._copies.put(None)
        deadline = time.monotonic() + CLOSE_WAIT_SECONDS
        for thread in self._threads:
            if thread.is_alive():
                thread.join(timeout=max(0.0, deadline - time.monotonic()))

    # ----- proposals from the worker and copy threads

    def _count(self, name: str, amount: int) -> None:
        with self._lock:  # copy threads and the worker count concurrently
            self.counters[name] += amount

    def _propose_async(self, op: str, args: dict) -> _Pending | None:
        with self._lock:
            if not self._leading:
                return None
            self._seq += 1
            key = (self._client_id, self._seq)
            command = encode_command(op, {**args, "client": key[0], "seq": key[1]}, time.time_ns())
            waiting = _Pending()
            self._pending[key] = waiting
            # Queued under the lock: proposals reach the log in seq order, as the session needs.
            self._proposals.put((key, command))
        return waiting

    def _wait(self, waiting: _Pending | None) -> dict:
        if waiting is None or not waiting.done.wait(PROPOSAL_TIMEOUT_SECONDS):
            return {"ok": False, "error": {"code": "TIMEOUT", "message": "not applied in time"}}
        assert waiting.result is not None
        return waiting.result

    def _commit(self, op: str, args: dict) -> dict:
        return self._wait(self._propose_async(op, args))

    # ----- the worker thread

    def _work(self) -> None:
        # The worker's own sockets to the chunk ports it polls every round (this thread only).
        self._stats_ports = peers.PortClient(self._context, self._security)
        try:
            self._work_rounds()
        finally:
            self._stats_ports.close()

    def _work_rounds(self) -> None:
        generation = 0
        while not self._stopping.is_set():
            self._wake.wait(ROUND_SECONDS)
            self._wake.clear()
            view = self._view
            if view is None or self._stopping.is_set():
                continue
            if view[0] != generation:  # a new term of leading: forget what an old one learned
                generation = view[0]
                self._nodes.clear()
                self._corrupt.clear()
                self._missing.clear()
            try:
                self._round(view[1], view[2], generation)
            except Exception:  # a failing round must not end repairs; the next one starts over
                if not self._stopping.is_set():  # (at shutdown the context's end interrupts calls)
                    log.exception("repair round failed")

    def _round(self, nodes: dict[str, NodeView], addresses: dict[str, str], generation: int) -> None:
        now = self._clock()
        answering = self._poll_chunk_ports(nodes, addresses)
        # Up by Raft but its chunk port is silent: not a source or target this round (and not
        # dead either: the timeout counts Raft silence).
        nodes = {node: view if not view.up or node in answering else NodeView(node, view.member, False, ROUND_SECONDS)
                 for node, view in nodes.items()}
        records = self._read_records()
        inventories = self._fresh_inventories(answering, addresses, now)
        self._note_missing(records, inventories)
        with self._missing_lock:
            missing = {chunk_id: frozenset(found) for chunk_id, found in self._missing.items()}
        view = ClusterView(nodes, self._config.replication, self._config.replica_timeout_seconds,
                           missing, {chunk_id: frozenset(found) for chunk_id, found in self._corrupt.items()},
                           inventories)
        in_flight = frozenset(self.pending_targets())
        copies_free = self._config.repair_copies_in_flight_max - len(in_flight)
        moves_max = copies_free if self._rebalance_requested else min(1, copies_free)
        result = plan(records, view, in_flight=in_flight, copies_max=max(0, copies_free),
                      moves_max=max(0, moves_max), spread_fraction=self._config.rebalance_spread_fraction)
        # fsck reads this on the driver thread: frozen copies, no inventories (they are only
        # valid for the records read before them).
        self._published_view = ClusterView(nodes, view.replication, view.replica_timeout_seconds, view.missing,
                                           view.corrupt)
        self._publish(result, view, now)
        self._carry_out(result, view, addresses, inventories, generation)
        for record in records:
            if record.chunk_id in self._corrupt and chunk_health(
                    record.chunk_id, replica_states(record.chunk_id, record.nodes, view), view) is Health.HEALTHY:
                del self._corrupt[record.chunk_id]  # repaired: no longer labelled corrupt
        if self._rebalance_requested and not result.moves and not result.copies and not in_flight:
            self._rebalance_requested = False

    def _poll_chunk_ports(self, nodes: dict[str, NodeView], addresses: dict[str, str]) -> set[str]:
        """Up members whose chunk port answers; takes in their corrupt-copy events."""
        answering = set()
        self._stats_ports.forget_except({(node, address) for node, address in addresses.items()})
        for node, view in nodes.items():
            if not (view.up and view.member) or node not in addresses:
                continue
            try:
                stats = self._stats_ports.call(addresses[node], "chunk_stats", {}, node_id=node,
                                               timeout_seconds=STATS_TIMEOUT_SECONDS,
                                               frame_bytes_max=self._config.frame_bytes_max)
            except SandStoreError as error:
                log.info("chunk port of %s does not answer: %s", node, error)
                continue
            if not _valid_stats(stats):
                log.warning("malformed chunk_stats from %s", node)
                continue
            answering.add(node)
            known = self._nodes.setdefault(node, _NodeChunks())
            if stats["incarnation"] != known.incarnation:
                known.incarnation, known.corrupt_seen, known.inventory_at = stats["incarnation"], 0, 0.0
            if stats["removals"] != known.removals:
                known.removals, known.inventory_at = stats["removals"], 0.0
            for number, chunk_id in stats["corrupt_events"]:
                if number > known.corrupt_seen:
                    known.corrupt_seen = number
                    if len(self._corrupt) < CORRUPT_CHUNKS_MAX:
                        self._corrupt.setdefault(chunk_id, set()).add(node)
                    self._count("corrupt_found", 1)
                    log.warning("chunk %s: corrupt copy found on %s", chunk_id.hex(), node)
        return answering

    def _fresh_inventories(self, answering: set[str], addresses: dict[str, str], now: float) -> dict:
        """Inventories of the nodes that changed (or are due), taken after the records were read."""
        inventories: dict[str, frozenset | None] = {}
        for node in sorted(answering):
            known = self._nodes[node]
            if now - known.inventory_at < INVENTORY_INTERVAL_SECONDS:
                continue
            try:
                inventories[node] = self._inventory(node, addresses[node])
            except SandStoreError as error:
                log.info("inventory of %s failed: %s", node, error)
                continue
            known.inventory_at = now
            self._count("inventories", 1)
        return inventories

    def _note_missing(self, records: list[ChunkRecord], inventories: dict) -> None:
        """Update which recorded copies are missing: by each fresh inventory for its node; for
        the others what earlier ones found stays, minus chunks and replicas no longer recorded."""
        with self._missing_lock:
            self._note_missing_locked(records, inventories)

    def _note_missing_locked(self, records: list[ChunkRecord], inventories: dict) -> None:
        recorded = {record.chunk_id: record for record in records}
        for chunk_id in list(self._missing):
            record = recorded.get(chunk_id)
            still = self._missing[chunk_id] & set(record.nodes) if record is not None else set()
            if still:
                self._missing[chunk_id] = still
            else:
                del self._missing[chunk_id]
        for node, inventory in inventories.items():
            for record in records:
                if node not in record.nodes:
                    continue
                if record.chunk_id in inventory:
                    self._forget_missing_locked(record.chunk_id, node)
                else:
                    self._missing.setdefault(record.chunk_id, set()).add(node)

    def _forget_missing(self, chunk_id: bytes, node: str) -> None:
        with self._missing_lock:
            self._forget_missing_locked(chunk_id, node)

    def _forget_missing_locked(self, chunk_id: bytes, node: str) -> None:
        found = self._missing.get(chunk_id)
        if found is not None:
            found.discard(node)
            if not found:
                del self._missing[chunk_id]

    def _call(self, node: str, address: str, op: str, args: dict, **options) -> object:
        """peers.call to `node`'s chunk port, presenting this node's key."""
        return peers.call(self._context, address, op, args, node_id=node, security=self._security, **options)

    def _inventory(self, node: str, address: str) -> frozenset:
        ids: set[bytes] = set()
        after = None
        while True:
            args = {"limit": INVENTORY_PAGE_IDS} if after is None else {"limit": INVENTORY_PAGE_IDS, "after": after}
            page = self._call(node, address, "chunk_inventory", args,
                              timeout_seconds=INVENTORY_TIMEOUT_SECONDS, frame_bytes_max=self._config.frame_bytes_max)
            if not (isinstance(page, dict) and isinstance(page.get("ids"), list) and isinstance(page.get("more"), bool)
                    and all(type(i) is bytes and len(i) == 32 for i in page["ids"])):
                raise SandStoreError("malformed chunk_inventory reply")
            ids.update(page["ids"])
            if not page["more"] or not page["ids"]:
                return frozenset(ids)
            after = page["ids"][-1]

    def _carry_out(self, result: Plan, view: ClusterView, addresses: dict[str, str], inventories: dict,
                   generation: int) -> None:
        self._drop_records(result.record_drops, addresses)
        for chunk_id, node in result.adoptions:
            self._adopt(chunk_id, node, addresses)
        self._delete_strays(result.stray_deletes, inventories, addresses)
        for drop in result.surplus_drops:
            self._drop_surplus(drop, view, addresses)
        for copy in result.copies + result.moves:
            with self._lock:
                self._in_flight[copy.chunk_id] = copy.target
            self._copies.put((generation, copy))

    def _drop_records(self, drops: list[Drop], addresses: dict[str, str]) -> None:
        """Forget records of copies that are not there (confirmed by the node) or on removed nodes."""
        confirmed = [drop for drop in drops if not drop.confirm_absent]
        by_node: dict[str, list[bytes]] = collections.defaultdict(list)
        for drop in drops:
            if drop.confirm_absent:
                by_node[drop.node].append(drop.chunk_id)
        for node, chunk_ids in by_node.items():
            try:
                holds = self._call(node, addresses[node], "chunk_has", {"ids": chunk_ids},
                                   timeout_seconds=STATS_TIMEOUT_SECONDS, frame_bytes_max=self._config.frame_bytes_max)
            except SandStoreError:
                continue
            if isinstance(holds, list) and len(holds) == len(chunk_ids):
                confirmed += [Drop(chunk_id, node) for chunk_id, held in zip(chunk_ids, holds) if held is False]
                for chunk_id, held in zip(chunk_ids, holds):
                    if held is True:  # stored again since (a put of the same content): not missing
                        self._forget_missing(chunk_id, node)
        waiting = [(drop, self._propose_async("drop_replica", {"chunk": drop.chunk_id, "node": drop.node}))
                   for drop in confirmed]
        for drop, pending in waiting:
            if self._wait(pending).get("ok"):
                self._count("records_dropped", 1)
                log.info("chunk %s: forgot the replica on %s (not there)", drop.chunk_id.hex(), drop.node)

    def _adopt(self, chunk_id: bytes, node: str, addresses: dict[str, str]) -> None:
        """A copy is already on an up node but not recorded: verify it there, then record it."""
        try:
            self._call(node, addresses[node], "chunk_verify", {"id": chunk_id},
                       timeout_seconds=FETCH_CALL_TIMEOUT_SECONDS, frame_bytes_max=self._config.frame_bytes_max)
        except SandStoreError:
            return
        if self._commit("add_replica", {"chunk": chunk_id, "node": node}).get("ok"):
            self._forget_missing(chunk_id, node)
            self._count("adopted", 1)

    def _delete_strays(self, strays: list[tuple[bytes, str]], inventories: dict, addresses: dict[str, str]) -> None:
        """Delete copies of healthy chunks that are not recorded, once two inventories in a row
        showed them (a put in flight may be about to record a copy)."""
        seen_now: dict[str, set[bytes]] = collections.defaultdict(set)
        for chunk_id, node in strays:
            seen_now[node].add(chunk_id)
            if chunk_id not in self._nodes[node].stray_seen:
                continue
            try:  # the node refuses while its own metadata records the copy
                result = self._call(node, addresses[node], "chunk_delete", {"id": chunk_id},
                                    timeout_seconds=STATS_TIMEOUT_SECONDS, frame_bytes_max=self._config.frame_bytes_max)
            except SandStoreError:
                continue
            if isinstance(result, dict) and result.get("deleted"):
                self._count("strays_deleted", 1)
        for node in inventories:
            self._nodes[node].stray_seen = seen_now.get(node, set())

    def _drop_surplus(self, drop: Drop, view: ClusterView, addresses: dict[str, str]) -> None:
        """Forget the surplus copy through Raft, then delete it: never below target live copies."""
        record = self._read_record(drop.chunk_id)  # as recorded now, not as planned
        if record is None:
            return
        live = [node for node, state in replica_states(drop.chunk_id, record.nodes, view).items() if state is Replica.LIVE]
        if drop.node not in live or len(live) - 1 < view.target:
            return  # the records changed since the plan: it is no longer surplus
        assert len(live) - 1 >= view.target >= 1, (drop, live)
        if not self._commit("drop_replica", {"chunk": drop.chunk_id, "node": drop.node}).get("ok"):
            return
        self._count("surplus_dropped", 1)
        self._delete_copy(drop.chunk_id, drop.node, addresses)

    def _delete_copy(self, chunk_id: bytes, node: str, addresses: dict[str, str]) -> None:
        """Delete a copy whose record was dropped; the node refuses until it applied the drop."""
        for _ in range(DELETE_ATTEMPTS_MAX):
            try:
                self._call(node, addresses[node], "chunk_delete", {"id": chunk_id},
                           timeout_seconds=STATS_TIMEOUT_SECONDS, frame_bytes_max=self._config.frame_bytes_max)
                self._count("copies_deleted", 1)
                return
            except SandStoreError as error:
                if error.code != "REFUSED" or self._stopping.wait(DELETE_RETRY_SECONDS):
                    return
        # Left as a stray: a later round deletes it.

    # ----- copy threads

    def _copy_loop(self) -> None:
        while True:
            item = self._copies.get()
            if item is None:
                return
            generation, copy = item
            try:
                if generation == self._leading_generation:
                    self._copy(copy, generation)
            except Exception:
                if not self._stopping.is_set():
                    log.exception("repair copy of chunk %s failed", copy.chunk_id.hex())
            finally:
                with self._lock:
                    self._in_flight.pop(copy.chunk_id, None)
                self._wake.set()

    def _copy(self, copy: Copy, generation: int) -> None:
        view = self._view
        if view is None or view[0] != generation:
            return
        addresses = view[2]
        if not self._throttle.acquire(copy.size, cancelled=lambda: self._stopping.is_set()
                                      or self._leading_generation != generation):
            return
        try:
            result = self._call(copy.target, addresses[copy.target], "chunk_fetch_from",
                                {"id": copy.chunk_id, "source": copy.source},
                                timeout_seconds=FETCH_CALL_TIMEOUT_SECONDS, frame_bytes_max=self._config.frame_bytes_max)
        except SandStoreError as error:
            self._count("copies_failed", 1)
            log.warning("chunk %s: copy %s -> %s failed: %s", copy.chunk_id.hex(), copy.source, copy.target, error)
            if isinstance(error, ChecksumMismatch):
                self._report_corrupt_source(copy, addresses)
            return
        if not (isinstance(result, dict) and result.get("size") == copy.size):
            self._count("copies_failed", 1)
            return
        with self._lock:
            self._copied.append((self._clock(), copy.size))
        self._count("copied_bytes", copy.size)
        reply = self._commit("add_replica", {"chunk": copy.chunk_id, "node": copy.target})
        if not reply.get("ok"):
            return  # e.g. the file was deleted meanwhile: the new copy is garbage for GC
        self._count("copies", 1)
        self._forget_missing(copy.chunk_id, copy.target)
        if copy.drop_after is not None:
            self._count("moves", 1)
            if self._commit("drop_replica", {"chunk": copy.chunk_id, "node": copy.drop_after}).get("ok"):
                self._delete_copy(copy.chunk_id, copy.drop_after, addresses)

    def _report_corrupt_source(self, copy: Copy, addresses: dict[str, str]) -> None:
        """The source's copy failed the hash at the target: have the source check (and remove) it."""
        try:
            self._call(copy.source, addresses[copy.source], "chunk_verify", {"id": copy.chunk_id},
                       timeout_seconds=FETCH_CALL_TIMEOUT_SECONDS, frame_bytes_max=self._config.frame_bytes_max)
        except SandStoreError:
            pass  # CHECKSUM: removed there, and the next round sees it missing

    # ----- visibility

    def _counters_copy(self) -> dict:
        with self._lock:
            return dict(self.counters)

    def _publish(self, result: Plan, view: ClusterView, now: float) -> None:
        with self._lock:
            while self._copied and self._copied[0][0] < now - RATE_WINDOW_SECONDS:
                self._copied.popleft()
            recent_bytes = sum(size for _, size in self._copied)
        totals = result.totals
        self._published = {
            "leader": True,
            "chunks": totals.chunks,
            "healthy_chunks": totals.healthy,
            "under_replicated_chunks": totals.under_replicated,
            "missing_chunks": totals.missing,
            "corrupt_chunks": totals.corrupt,
            "bytes_left": totals.bytes_left,
            "rate_bytes_per_second": round(recent_bytes / RATE_WINDOW_SECONDS),
            "copies_in_flight": len(self.pending_targets()),
            "rebalancing": self._rebalance_requested,
            "used_bytes": result.used_bytes,
            "nodes": {node: {"up": node_view.up, "member": node_view.member,
                             "down_seconds": round(node_view.down_seconds, 1)}
                      for node, node_view in view.nodes.items()},
            "counters": self._counters_copy(),
        }


def _valid_stats(stats: object) -> bool:
    if not isinstance(stats, dict):
        return False
    if not isinstance(stats.get("incarnation"), str) or type(stats.get("removals")) is not int:
        return False
    events = stats.get("corrupt_events")
    return isinstance(events, list) and all(
        isinstance(event, list) and len(event) == 2 and type(event[0]) is int
        and type(event[1]) is bytes and len(event[1]) == 32 for event in events)
