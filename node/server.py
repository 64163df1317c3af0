"""NodeServer: one `sandstore node` process. The driver loop here owns all I/O.

One thread runs the loop: poll the client ROUTER and the replicator's sockets with a timeout
equal to the time left until the next tick, validate and dispatch every client request,
let the replicator run one iteration (tick, one LMDB transaction, send, apply), then answer the
clients whose writes were applied or whose reads became safe. Chunk traffic is served by the
ChunkService on its own port and threads, so a 4 MiB chunk never delays a heartbeat.
"""

from __future__ import annotations

import gc
import logging
import math
import os
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import zmq
import zmq.backend

from node import backup, metrics, protocol
from node.chunks.service import ChunkService
from node.chunks.store import ChunkStore
from node.config import ClusterConfig, NodeAddress, check_address, node_data_dir
from node.errors import BadRequest, NotLeader, Refused, SandStoreError, StoreFull, TooLarge, Unavailable
from node.names import NODE_ID_RULE, is_valid_node_id
from node.metadata.commands import Command, decode_command, new_command
from node.metadata.paths import normalize_path
from node.metadata.read_memo import SnapshotDirectories
from node.metadata.state_machine import Namespace
from node.raft.types import ConfChange, EntryKind
from node.replicator import Replicator
from node.repair.fsck import fsck_report  # self-healing data (node/repair/)
from node.repair.planner import ChunkRecord
from node.repair.scheduler import FSCK_FILES_MAX, Membership, RepairScheduler
from node.replicator.driver import DiskLost
from node.security import ClientSecurity, Principal, ServerSecurity, check_cluster_identity
from node.storage.lmdb_store import NodeStore

log = logging.getLogger("sandstore.server")

CLIENT_REQUESTS_PER_ITERATION_MAX = 2000  # a drain stops after the frame that reaches it
INSPECT_LOG_LIMIT_MAX = 1000
# New writes are refused (STORE_FULL) beyond this share of the LMDB map: the remaining room is
# for entries already in flight, heartbeats' hard state and the snapshot that compacts the log.
STORE_USED_FRACTION_MAX = 0.9
LAST_APPLIED_SEQ_CLIENTS_MAX = 100_000
HOUSEKEEPING_INTERVAL_SECONDS = 0.05  # also how fresh "may this node collect chunks?" is
KEYS_RELOAD_INTERVAL_SECONDS = 1.0  # how soon a revoked or added key takes effect
CLUSTER_IDENTITY_TABLE = b"cluster_identity"  # LMDB table: the cluster id this store was made for
_SEND_MORE_NOBLOCK = int(zmq.SNDMORE | zmq.NOBLOCK)
_SEND_NOBLOCK = int(zmq.NOBLOCK)
_POLLIN = int(zmq.POLLIN)
_RECEIVE_NOBLOCK = int(zmq.NOBLOCK)
# The backend's send itself (as the peer transport's): pyzmq's Python-level Socket.send only
# adds the routing_id and group options of draft sockets (a ROUTER has neither) around it.
_backend_send = zmq.backend.Socket.send
assert issubclass(zmq.Socket, zmq.backend.Socket)


# The read ops served from the namespace (linearizable unless "stale"), by op name.
# query(namespace, txn, args, directories): directories is the lookup memo that the queries
# reading one snapshot share (Namespace.read, read_memo.SnapshotDirectories).
NAMESPACE_QUERIES = {
    "stat": lambda namespace, txn, args, directories: namespace.stat(txn, args["path"], directories),
    "ls": lambda namespace, txn, args, directories: namespace.ls(
        txn, args["path"], recursive=bool(args.get("recursive")), directories=directories),
    "read": lambda namespace, txn, args, directories: namespace.read(txn, args["path"], directories),
    "du": lambda namespace, txn, args, directories: namespace.du(txn, args["path"], args.get("nodes_down", frozenset())),
    "namespace_image": lambda namespace, txn, args, directories: backup.namespace_image(namespace, txn, args),
}


@dataclass(slots=True)  # one per client request: slots make it quicker to build and read
class Waiter:
    """A client request waiting for its write to apply or its read to become safe."""

    identity: bytes
    request_id: int
    started_at: float
    op: str = ""
    args: dict | None = None
    batched: bool = False  # it came in a batch frame: its reply may go in one (protocol.py, Batches)


class NodeServer:
    def __init__(self, config: ClusterConfig, node_id: str, data_dir: str | Path, *, join: bool = False) -> None:
        self.config = config
        self.node_id = node_id
        self.address: NodeAddress = config.node(node_id)
        self.directory = node_data_dir(data_dir, node_id)
        self.directory.mkdir(parents=True, exist_ok=True)
        self._stopping = False
        self.store = NodeStore(self.directory, config.lmdb_map_size_bytes)
        self.namespace = Namespace(self.store.env, session_ttl_ns=int(config.session_ttl_seconds * 1e9),
                                   batches=self.store)  # once-per-batch writes at each batch's end
        self.chunk_store = ChunkStore(self.directory, config.chunk_map_size_bytes)
        self.context = zmq.Context()
        # The trust boundary (node/security/): every port authenticates every connection.
        self.security = ServerSecurity.for_node(self.context, config, node_id, data_dir)  # KeysError: no start
        self.client_security = ClientSecurity.for_node(config, node_id, data_dir)
        self._check_cluster_identity()
        self._keys_checked_at = 0.0
        self.client_socket = self.context.socket(zmq.ROUTER)
        self.security.configure_router(self.client_socket, "client")
        self.client_socket.setsockopt(zmq.LINGER, 0)
        self.client_socket.setsockopt(zmq.MAXMSGSIZE, config.frame_bytes_max)
        self.client_socket.setsockopt(zmq.SNDHWM, 10000)
        self.address.bind(self.client_socket, "client")
        self.replicator: Replicator
        if config.replicator == "raft":
            from node.replicator.raft import RaftReplicator

            self.replicator = RaftReplicator(config, node_id, self.store, self.namespace, self, self.context, join=join,
                                             security=(self.security, self.client_security))
            self._replicator_leads = self.replicator.is_leader  # no status snapshot: the core's role
        else:
            from node.replicator.local import LocalReplicator

            self.replicator = LocalReplicator(config, node_id, self.store, self.namespace, self)
            self._replicator_leads = lambda: True  # a single node is its own leader
        self.chunk_service = ChunkService(
            self.context, self.address.bind_address("chunk"), self.chunk_store,
            referenced_chunk_ids=self._referenced_chunk_ids,
            gc_grace_seconds=config.gc_grace_seconds,
            frame_bytes_max=config.frame_bytes_max,
            scrub_bytes_per_second=config.scrub_bytes_per_second,
            peer_chunk_address=lambda node_id: self._chunk_addresses.get(node_id),
            replica_recorded_here=self._replica_recorded_here,
            security=(self.security, self.client_security),
        )
        # Self-healing data (node/repair/): the leader's repair scheduler, run from housekeeping.
        self._chunk_addresses = {address.id: address.chunk for address in config.nodes}  # replaced whole
        self.repair = RepairScheduler(config, node_id, context=self.context, membership=self._repair_membership,
                                      propose=self.replicator.replicate, read_records=self._chunk_records,
                                      read_record=self._chunk_record, security=self.client_security)
        self._writes_waiting: dict[tuple[str, int], list[Waiter]] = {}
        self._conf_waiting: dict[int, tuple[int, Waiter]] = {}  # index -> (term, waiter)
        self._reads_waiting: dict[int, Waiter] = {}
        # Stale reads that arrived while this follower held committed entries back from
        # applying (Driver, APPLY_HOLD_TICKS): served after the loop's next replicator run,
        # which applies them, so a stale read sees what this node knows committed.
        self._stale_reads_held: list[Waiter] = []
        self._next_read_token = 1
        self._read_directories = SnapshotDirectories()  # what reads found, per snapshot (_serve_reads)
        # Replies to batched requests, by client connection, held while a drain or a callback
        # answers many at once and then sent in batch frames (_with_replies_held); None: send now.
        self._replies_held: dict[bytes, list[bytes]] | None = None
        self._batch_bytes_max = protocol.batch_bytes_max(config.frame_bytes_max)
        self._last_applied_seq: dict[str, int] = {}  # client -> highest seq applied here
        self._namespace_current = False  # see _referenced_chunk_ids
        self._housekeeping_at = 0.0  # waiter expiry and the namespace check, not every turn
        self.requests_by_op = dict.fromkeys(protocol.OPS, 0)  # for the metrics endpoint
        self.metrics = metrics.MetricsEndpoint(self.address.metrics, node_id)
        self.counters = {"client_requests": 0, "client_bad_requests": 0, "client_internal_errors": 0}
        # The ops answered at once from local state, by op name (every other op is a write, a
        # namespace query or a membership change; see _dispatch).
        self._immediate_ops = {
            "ping": self._op_ping,
            "status": self._op_status,
            "inspect_term": self._op_inspect_term,
            "inspect_log": self._op_inspect_log,
            "digest": self._op_digest,
            "chunk_refs": self._op_chunk_refs,
            "transfer_leader": self._op_transfer_leader,
            "snapshot": self._op_snapshot,
            "gc": self._op_gc,
            "fsck": self._op_fsck,  # self-healing data
            "rebalance": lambda args: self.repair.request_rebalance(),
        }

    # ----- lifecycle

    def stop(self, *_: object) -> None:
        """Ask the loop to stop after the current iteration (safe from a signal handler)."""
        self._stopping = True

    def serve_forever(self) -> None:
        signal.signal(signal.SIGTERM, self.stop)
        signal.signal(signal.SIGINT, self.stop)
        self.chunk_service.start()
        log.info("node %s serving clients on %s, chunks on %s (replicator %s)", self.node_id,
                 self.address.client, self.address.chunk, self.config.replicator)
        poller = zmq.Poller()
        poller.register(self.client_socket, zmq.POLLIN)
        # Everything allocated so far (modules, config, the store's caches) lives as long as the
        # process: kept out of the cyclic collector, a full collection no longer walks it (on
        # a 3-node cluster at one write outstanding, one took 16-90 ms every ~10 s, a pause of
        # the whole loop; it now walks what the loop allocated since).
        gc.freeze()
        try:
            self._loop(poller)
        except StoreFull as error:
            # A Ready that cannot be persisted cannot be advanced: stop cleanly (the store is
            # intact, the transaction was aborted) rather than serve from an unpersisted state.
            log.error("stopping: %s", error)
            raise SystemExit(1) from None
        except DiskLost as error:
            # Fail-stop: a node that forgot what it acknowledged must not vote or serve.
            line = disk_lost_message(error, self.directory)
            log.error("stopping: %s", line)
            print(f"Error: {line}", file=sys.stderr, flush=True)
            raise SystemExit(1) from None
        finally:
            self.close()

    def _loop(self, poller: zmq.Poller) -> None:
        replicator_sockets: list = []
        while not self._stopping:
            sockets = self.replicator.poll_sockets()
            if sockets is not replicator_sockets and sockets != replicator_sockets:
                # The replicator's sockets changed (a peer added or removed): poll the new set,
                # before a closed one could reach the poll.
                for socket in replicator_sockets:
                    poller.unregister(socket)
                for socket in sockets:
                    poller.register(socket, zmq.POLLIN)
            replicator_sockets = sockets
            # Rounded up: pyzmq truncates a float timeout, so the last millisecond before each
            # tick would otherwise be a busy loop (about 10% of a core on an idle node).
            timeout_ms = math.ceil(max(0.0, self.replicator.seconds_until_tick(time.monotonic())) * 1000)
            events = dict(poller.poll(timeout=timeout_ms))
            for socket in replicator_sockets:
                if socket in events:
                    self.replicator.on_readable(socket)
            if self.client_socket in events:
                self._with_replies_held(self._drain_client_socket)
            now = time.monotonic()
            self.replicator.run(now)
            if self._stale_reads_held:
                waiters, self._stale_reads_held = self._stale_reads_held, []
                self._with_replies_held(self._serve_reads, waiters)
            self.replicator.maybe_snapshot()
            if now >= self._housekeeping_at + HOUSEKEEPING_INTERVAL_SECONDS:
                self._housekeeping_at = now
                self._expire_waiters(now)
                # Read by the chunk service's threads (a plain bool: atomic under the GIL).
                self._namespace_current = self.replicator.namespace_is_current(now)
                self.metrics.serve_pending(self._metrics_readings)
                self.repair.run(now)  # self-healing data: cheap; does nothing on a follower
                if now >= self._keys_checked_at + KEYS_RELOAD_INTERVAL_SECONDS:
                    self._keys_checked_at = now
                    self.security.reload_if_changed()

    def close(self) -> None:
        log.info("node %s stopping", self.node_id)
        self.repair.close()
        self.metrics.close()
        self.chunk_service.stop()
        self.replicator.close()
        self.client_socket.close(linger=0)
        self.security.close()  # the ZAP thread, after every ROUTER it answered for
        self.context.term()
        self.store.close()
        self.chunk_store.close()

    # ----- client requests

    def _drain_client_socket(self) -> None:
        """Handle the requests waiting on the client socket (the loop's poll said it is readable).

        Per message: two recvs and Frame.more, not recv_multipart (whose RCVMORE lookups run
        enum code); after the first message, a zmq_poll(0) asks whether another is waiting,
        since a recv on an empty socket raises zmq.Again, which costs several times the check
        (and a drain of one message, the common case at low load, then raises none)."""
        socket = self.client_socket
        poll_items = [(socket, _POLLIN)]
        requests = 0
        while requests < CLIENT_REQUESTS_PER_ITERATION_MAX:
            if requests and not zmq.zmq_poll(poll_items, 0):
                return
            try:
                # Frames, not bytes: a Frame carries its connection's authenticated key (User-Id).
                identity = socket.recv(_RECEIVE_NOBLOCK, copy=False)
                frame = socket.recv(_RECEIVE_NOBLOCK, copy=False) if identity.more else None
                well_formed = frame is not None and not frame.more
                while frame is not None and frame.more:  # the rest of a message of 3+ frames
                    frame = socket.recv(_RECEIVE_NOBLOCK, copy=False)
            except zmq.Again:
                return
            if not well_formed:
                # A DEALER sends exactly one frame; anything else is garbage we cannot answer
                # sensibly, so answer the identity with BAD_REQUEST.
                self._refuse_frame(identity.bytes, BadRequest("a request is exactly one frame"))
                requests += 1
                continue
            requests += self._handle_frame(identity.bytes, frame)

    def _handle_frame(self, identity: bytes, frame: zmq.Frame) -> int:
        """Handle one request frame: a request, or a batch of them; how many it held."""
        try:
            decoded = protocol.decode(frame.bytes, self.config.frame_bytes_max)
        except BadRequest as error:
            self._refuse_frame(identity, error)
            return 1
        # The sender, from its connection's key: looked up once per frame, not once per request
        # of a batch (each request's op is still checked against its role: _handle_request).
        principal = self.security.principal_of(frame)
        if type(decoded) is not list:
            self.counters["client_requests"] += 1
            self._handle_request(identity, principal, decoded, False)
            return 1
        if not 0 < len(decoded) <= protocol.REQUESTS_PER_FRAME_MAX or not all(type(item) is dict for item in decoded):
            # Garbage, not a batch whose requests could be answered one by one: refused whole.
            self._refuse_frame(identity, BadRequest(
                f"a batch is an array of 1 to {protocol.REQUESTS_PER_FRAME_MAX} request maps"))
            return 1
        self.counters["client_requests"] += len(decoded)
        for request in decoded:
            self._handle_request(identity, principal, request, True)
        return len(decoded)

    def _refuse_frame(self, identity: bytes, error: BadRequest) -> None:
        """Answer a frame that holds no request we can read (so no request id: 0)."""
        self.counters["client_requests"] += 1
        self.counters["client_bad_requests"] += 1
        self._send(identity, protocol.reply_error(0, error))

    def _handle_request(self, identity: bytes, principal: Principal | None, request: object, batched: bool) -> None:
        """One decoded request (counted by the caller); principal: the sender of the frame it
        came in, from its connection's key (None: no authorized key)."""
        request_id = None  # until validated; an error before that answers the id the request sent
        try:
            request_id, op, args = protocol.validate_request(request)
            # Before anything runs or is forwarded to the leader: may this key ask for `op`?
            self.security.authorize_principal(principal, op)
            self._dispatch(identity, request_id, op, args, batched)
        except SandStoreError as error:
            if isinstance(error, BadRequest):
                self.counters["client_bad_requests"] += 1
            request_id = sent_request_id(request) if request_id is None else request_id
            self._reply(identity, batched, protocol.reply_error(request_id, error))
        except Exception as error:  # noqa: BLE001 -- one request's bug must not end the node
            self.counters["client_internal_errors"] += 1
            request_id = sent_request_id(request) if request_id is None else request_id
            log.exception("request %d failed unexpectedly", request_id)
            internal = SandStoreError(f"internal error on node {self.node_id}: {type(error).__name__}: {error}")
            self._reply(identity, batched, protocol.reply_error(request_id, internal))

    def _dispatch(self, identity: bytes, request_id: int, op: str, args: dict, batched: bool) -> None:
        now = time.monotonic()
        self.requests_by_op[op] += 1
        if op in protocol.WRITE_OPS:
            self._start_write(Waiter(identity, request_id, now, batched=batched), op, args)
        elif op in NAMESPACE_QUERIES:
            if "path" in args:  # namespace_image has none
                args["path"] = normalize_path(args["path"])
            if op == "du":  # copies on nodes the leader sees down are not live (self-healing data)
                args["nodes_down"] = self.repair.nodes_down()
            waiter = Waiter(identity, request_id, now, op, args, batched)
            if not args.get("stale"):
                token = self._next_read_token
                self._next_read_token += 1
                self._reads_waiting[token] = waiter
                self.replicator.read_barrier(token)
            elif self.replicator.release_held_entries() or self._stale_reads_held:
                self._stale_reads_held.append(waiter)  # (in arrival order behind earlier ones)
            else:
                self._serve_reads([waiter])
        elif op in ("add_learner", "promote", "remove_node"):
            self._start_membership_change(Waiter(identity, request_id, now, batched=batched), op, args)
        else:
            handler = self._immediate_ops.get(op)
            if handler is None:
                raise BadRequest(f"op {op!r} is not served by this node version")
            self._reply(identity, batched, protocol.reply_ok(request_id, handler(args), not batched))

    # ----- writes

    def _start_write(self, waiter: Waiter, op: str, args: dict) -> None:
        # Paths, defaults and the content of write_file are checked by encode_command below
        # (the same checks every node runs again on apply); only node-local limits are here.
        if op == "write_file" and args.get("data") is not None and len(args["data"]) > self.config.inline_bytes_max:
            raise TooLarge(f"{len(args['data'])} bytes is more than inline_bytes_max ({self.config.inline_bytes_max}); "
                           "larger files are stored as chunks")
        if self.store.used_fraction() > STORE_USED_FRACTION_MAX:
            raise StoreFull(f"node {self.node_id}'s store is over {STORE_USED_FRACTION_MAX:.0%} full; "
                            "the write was refused (raise lmdb_map_size_bytes)")
        client, seq = args["client"], args["seq"]
        if self._last_applied_seq.get(client, 0) >= seq:
            # A retry of a write already applied here: answer from the session, apply nothing.
            # (Only such retries pay for the read transaction; after a restart this map is empty
            # and a retry is proposed again, which the state machine's session answers too.)
            with self.store.read_transaction() as txn:
                previous = self.namespace.session_result(txn, client, seq)
            if previous is not None:
                self._send_result(waiter, previous)
                return
        # args passed protocol.validate_request against this op's schema: not checked twice.
        command = new_command(op, args, time.time_ns(), args_validated=True)
        self.replicator.replicate(command.encode(), command)  # decoded once: applied as built here
        self._writes_waiting.setdefault((client, seq), []).append(waiter)

    def results_fixed(self, results: list[tuple[int, Command | SandStoreError, dict]]) -> None:
        """Replicator callback: these commands' results are final (contracts.Callbacks), maybe
        before the batch that applied them commits: their waiting clients are answered now."""
        if not self._writes_waiting:
            return  # a follower's usual case: no client of this node waits for a write
        self._with_replies_held(self._answer_writes, results)

    def _answer_writes(self, results: list[tuple[int, Command | SandStoreError, dict]]) -> None:
        waiting = self._writes_waiting
        for _, decoded, result in results:
            if isinstance(decoded, Command):  # else a malformed entry: no client of ours waits for it
                for waiter in waiting.pop((decoded.client, decoded.seq), ()):
                    self._send_result(waiter, result)

    def applied(self, index: int, decoded: Command | SandStoreError, result: dict) -> None:
        """Replicator callback: a command was applied on this node (decoded once, by the replicator)."""
        if not isinstance(decoded, Command):
            return  # a malformed entry (an error result everywhere): no client of ours waits for it
        last_seq = self._last_applied_seq
        if decoded.seq > last_seq.get(decoded.client, 0):
            last_seq[decoded.client] = decoded.seq
            if len(last_seq) > LAST_APPLIED_SEQ_CLIENTS_MAX:
                del last_seq[next(iter(last_seq))]  # the oldest client: a retry then costs a proposal
        self.repair.applied(decoded.client, decoded.seq, result)  # self-healing data

    def _send_result(self, waiter: Waiter, result: dict) -> None:
        if result.get("ok"):
            self._reply(waiter.identity, waiter.batched,
                        protocol.reply_ok(waiter.request_id, result.get("result"), not waiter.batched))
            return
        error = result["error"]
        self._reply(waiter.identity, waiter.batched,
                    protocol.reply_error_fields(waiter.request_id, error["code"], error["message"]))

    # ----- membership

    def _start_membership_change(self, waiter: Waiter, op: str, args: dict) -> None:
        if not is_valid_node_id(args["node"]):
            # Committed, an id no node can start with would stop every node at every restart.
            raise BadRequest(f"node id {args['node']!r} is not valid: {NODE_ID_RULE}")
        if op == "add_learner":
            address = NodeAddress(args["node"], args["raft"], args["client"], args["chunk"])
            for which in ("raft", "client", "chunk"):
                try:
                    check_address(which, getattr(address, which))
                except SandStoreError as error:
                    raise BadRequest(str(error)) from None
            self._check_new_member(address)
            term, index = self.replicator.add_learner(address)
        elif op == "promote":
            term, index = self.replicator.promote(args["node"])
        else:
            term, index = self.replicator.remove_node(args["node"])
        self._conf_waiting[index] = (term, waiter)

    def _check_new_member(self, address: NodeAddress) -> None:
        """Refuse a learner that would shadow a member: its id, or an address a member uses (a
        second "member" at another node's ports is never contacted and only costs quorum)."""
        status = self.replicator.status()
        member_ids = set(status.voters) | set(status.voters_outgoing) | set(status.learners)
        if address.id in member_ids:
            raise Refused(f"{address.id} is already a member; remove it first (sandctl remove-voter {address.id})")
        # The address book also remembers removed nodes: only current members' addresses count,
        # so a removed node (e.g. one that lost its disk) can be added back at its old address.
        known = self.replicator.addresses() or {self.node_id: self.address}
        members = {member_id: known[member_id] for member_id in member_ids if member_id in known}
        for member_id, member in members.items():
            used = {member.raft, member.client, member.chunk}
            for which in ("raft", "client", "chunk"):
                if getattr(address, which) in used:
                    raise Refused(f"address {getattr(address, which)} ({which}) is already used by member {member_id}")

    def _check_cluster_identity(self) -> None:
        """Store the keys directory's cluster id on first start; refuse another cluster's keys after."""
        table = self.store.env.open_db(CLUSTER_IDENTITY_TABLE)
        with self.store.env.begin(write=True, db=table) as txn:
            stored = txn.get(b"id")
            cluster_id = check_cluster_identity(None if stored is None else stored.decode("ascii", "replace"),
                                                self.security.cluster_id, str(self.directory))
            if stored is None:
                txn.put(b"id", cluster_id.encode("ascii"))

    def conf_applied(self, index: int, term: int) -> None:
        """Replicator callback: a membership change entry was applied."""
        waiting = self._conf_waiting.pop(index, None)
        if waiting is None:
            return
        expected_term, waiter = waiting
        if expected_term == term:
            self._reply(waiter.identity, waiter.batched,
                        protocol.reply_ok(waiter.request_id, {"index": index}, not waiter.batched))
        else:
            error = Refused("the membership change was lost in a leader change; nothing changed, retry")
            self._reply(waiter.identity, waiter.batched, protocol.reply_error(waiter.request_id, error))

    # ----- reads

    def reads_ready(self, tokens: list[int]) -> None:
        waiting = self._reads_waiting
        self._with_replies_held(self._serve_reads, [waiting.pop(token) for token in tokens if token in waiting])

    def reads_failed(self, tokens: list[int], error: Exception) -> None:
        assert isinstance(error, SandStoreError)
        self._with_replies_held(self._fail_reads, tokens, error)

    def _fail_reads(self, tokens: list[int], error: SandStoreError) -> None:
        for token in tokens:
            waiter = self._reads_waiting.pop(token, None)
            if waiter is not None:
                self._reply(waiter.identity, waiter.batched, protocol.reply_error(waiter.request_id, error))

    def _serve_reads(self, waiters: list[Waiter]) -> None:
        if not waiters:
            return
        replies: list[tuple[Waiter, bytes]] = []
        with self.store.read_transaction() as txn:
            # The directories earlier reads found in this snapshot (until a write commits), so
            # that at one read outstanding, a read of a file beside the last one read does not
            # walk its whole path again.
            directories = self._read_directories.for_transaction(txn)
            for waiter in waiters:
                try:
                    result = NAMESPACE_QUERIES[waiter.op](self.namespace, txn, waiter.args, directories)
                except SandStoreError as error:
                    replies.append((waiter, protocol.reply_error(waiter.request_id, error)))
                    continue
                replies.append((waiter, protocol.reply_ok(waiter.request_id, result, not waiter.batched)))
        # Sent once all are encoded (the read transaction is short), in batch frames where the
        # client batches (a read batch of linearizable reads is released at once by its
        # ReadIndex round), else back to back: ZeroMQ's I/O thread, woken by the first, then
        # finds the others queued, instead of being woken again for each.
        for waiter, payload in replies:
            self._reply(waiter.identity, waiter.batched, payload)

    # ----- immediate ops

    def _op_ping(self, args: dict) -> dict:
        return {"id": self.node_id}

    def _op_status(self, args: dict) -> dict:
        chunks_stored, chunk_bytes = self.chunk_store.usage()
        status = self.replicator.status().to_dict()
        addresses = self.replicator.addresses() or {self.node_id: self.address}
        status.update({
            "id": self.node_id,
            "pid": os.getpid(),
            "replicator": self.config.replicator,
            "addresses": {i: {"raft": a.raft, "client": a.client, "chunk": a.chunk} for i, a in addresses.items()},
            "chunks_stored": chunks_stored,
            "chunk_bytes": chunk_bytes,
            "counters": dict(self.counters),
            "repair": self.repair.status(),  # self-healing data: progress, on the leader
            "security": self.security.status(),  # mode (a loud warning in plain text), cluster id
        })
        return status

    def _metrics_readings(self) -> metrics.NodeReadings:
        return metrics.NodeReadings(
            status=self._op_status({}), requests_by_op=dict(self.requests_by_op),
            chunk_counters={**self.chunk_store.counters(), **self.chunk_service.counters()},
            store_used_fraction=self.store.used_fraction(), store_map_size_bytes=self.store.map_size_bytes,
            taken_at=time.monotonic())

    def _op_inspect_term(self, args: dict) -> dict:
        return self.replicator.inspect_term()

    def _op_inspect_log(self, args: dict) -> dict:
        # A leader's newest entries may sit in a deferred batch (written, not flushed: Driver,
        # OWN ENTRIES), which the store's log read path shows only once committed.
        self.store.commit_deferred()
        first_index, last_index = self.store.first_index(), self.store.last_index()
        limit = min(max(1, args.get("limit") or 20), INSPECT_LOG_LIMIT_MAX)
        start = args.get("from_index") or max(first_index, last_index - limit + 1)
        start = max(start, first_index)
        end = min(last_index + 1, start + limit)
        entries = self.store.entries(start, end) if start < end else []
        return {"first_index": first_index, "last_index": last_index,
                "entries": [describe_entry(entry) for entry in entries]}

    def _op_digest(self, args: dict) -> dict:
        with self.store.read_transaction() as txn:
            applied, _, _ = self.store.applied_state(txn)
            return {"digest": self.namespace.digest(txn), "applied": applied,
                    "entries": self.namespace.entry_count(txn)}

    def _op_chunk_refs(self, args: dict) -> list:
        return sorted(self._referenced_chunk_ids())

    def _op_transfer_leader(self, args: dict) -> dict:
        return {"transferring_to": self.replicator.transfer_leader(args.get("node"))}

    def _op_snapshot(self, args: dict) -> dict:
        result = self.replicator.maybe_snapshot(force=True)
        if result is None:
            raise Refused("nothing to snapshot: no entry applied since the last snapshot")
        return result

    def _op_gc(self, args: dict) -> dict:
        grace = args.get("grace_seconds")
        if grace is not None and not (math.isfinite(grace) and grace >= 0):
            raise BadRequest("grace_seconds must be a finite number >= 0")  # (the store asserts it)
        return self.chunk_store.collect_garbage(
            self._referenced_chunk_ids(), time.time(),
            self.config.gc_grace_seconds if grace is None else float(grace), bool(args.get("dry_run")))

    # ----- self-healing data (node/repair/): what the repair scheduler and fsck read

    def _repair_membership(self) -> Membership:
        # Asked 5 times a second (VIEW_INTERVAL_SECONDS) on every node. The chunk addresses are
        # kept fresh everywhere (the chunk service's fetches read them); members and contact
        # ages only matter to a leader (the scheduler does nothing else on a follower), and the
        # replicator's whole status, which has them, cost 36-270 us a call.
        addresses = self.replicator.addresses() or {self.node_id: self.address}
        self._chunk_addresses = {node_id: address.chunk for node_id, address in addresses.items()}
        if not self._replicator_leads():
            return Membership(False, frozenset(), {}, dict(self._chunk_addresses))
        status = self.replicator.status(latencies=False)
        ages = {node_id: None if ms is None else ms / 1000 for node_id, ms in status.last_contact_ms.items()}
        members = frozenset(status.voters) | frozenset(status.voters_outgoing) | frozenset(status.learners)
        return Membership(status.role == "leader", members, ages, dict(self._chunk_addresses))

    def _chunk_records(self) -> list[ChunkRecord]:
        with self.store.read_transaction() as txn:
            return [ChunkRecord(chunk_id, replicas.size, replicas.nodes)
                    for chunk_id, replicas in self.namespace.chunk_replicas(txn)]

    def _chunk_record(self, chunk_id: bytes) -> ChunkRecord | None:
        with self.store.read_transaction() as txn:
            replicas = self.namespace.recorded_replicas(txn, chunk_id)
        return None if replicas is None else ChunkRecord(chunk_id, replicas.size, replicas.nodes)

    def _replica_recorded_here(self, chunk_id: bytes) -> bool:
        with self.store.read_transaction() as txn:
            return self.namespace.replica_recorded(txn, chunk_id, self.node_id)

    def _op_fsck(self, args: dict) -> dict:
        status = self.replicator.status()
        if status.role != "leader":
            raise NotLeader("fsck is answered by the leader", status.leader)
        files_max = min(max(1, args.get("files_max") or FSCK_FILES_MAX), FSCK_FILES_MAX)
        members = frozenset(status.voters) | frozenset(status.voters_outgoing) | frozenset(status.learners)
        chunk_report = self.repair.chunk_reporter(members)
        if chunk_report is None:
            raise Unavailable("the leader is still taking its first look at the replicas; retry in a moment")
        with self.store.read_transaction() as txn:
            report = fsck_report(self.namespace.files_under(txn, args.get("path") or "/"), chunk_report,
                                 self.repair.pending_targets(), files_max=files_max)
        report["target"] = min(self.config.replication, len(members))
        report["replication"] = self.config.replication
        report["repair"] = self.repair.status()
        return report

    def _referenced_chunk_ids(self) -> set[bytes]:
        # Called from the chunk service's threads too: LMDB read transactions are per thread.
        if not self._namespace_current:
            # A lagging or cut-off node may not yet know the files that reference new chunks.
            raise Refused(f"node {self.node_id} has no recent contact with a leader or has not applied "
                          "every committed entry: chunk garbage collection skipped")
        with self.store.read_transaction() as txn:
            return self.namespace.referenced_chunk_ids(txn)

    # ----- plumbing

    def _with_replies_held(self, handle, *args) -> None:
        """handle(*args), with the replies to batched requests it makes held and then sent in
        batch frames, one or a few per client connection (protocol.py, Batches). Nested (a
        stale read served during a drain): the outer call sends them."""
        if self._replies_held is not None:
            handle(*args)
            return
        self._replies_held = {}
        try:
            handle(*args)
        finally:
            self._release_replies()

    def _reply(self, identity: bytes, batched: bool, payload: bytes) -> None:
        """Answer a request: held for a batch frame if it came in a batch and replies are being
        held, else sent now."""
        held = self._replies_held
        if not batched or held is None:
            self._send(identity, payload)
            return
        payloads = held.get(identity)
        if payloads is None:
            held[identity] = [payload]
        else:
            payloads.append(payload)

    def _release_replies(self) -> None:
        held, self._replies_held = self._replies_held, None
        assert held is not None
        for identity, payloads in held.items():
            if len(payloads) == 1:
                self._send(identity, payloads[0])
                continue
            for run in protocol.batch_runs(payloads, self._batch_bytes_max):
                self._send(identity, run[0] if len(run) == 1 else protocol.batch_frame(run))

    def _send(self, identity: bytes, payload: bytes) -> None:
        # Two plain sends rather than send_multipart, whose Python-level loop and flag enums cost
        # several times the send itself (one reply per client request). ZeroMQ delivers the
        # frames of one message atomically all the same.
        socket = self.client_socket
        try:
            _backend_send(socket, identity, _SEND_MORE_NOBLOCK)
            _backend_send(socket, payload, _SEND_NOBLOCK)
        except zmq.Again:
            log.warning("dropped a reply: client queue full")
        except zmq.ZMQError as error:  # client gone (unroutable identity is silently dropped)
            log.debug("reply not sent: %s", error)

    def _expire_waiters(self, now: float) -> None:
        # Forget requests whose client has certainly given up: their proposal was lost (leader
        # change) and the client retries with the same (client, seq), which is safe.
        limit_seconds = 3 * self.config.request_timeout_seconds
        for key in [k for k, ws in self._writes_waiting.items() if now - ws[0].started_at > limit_seconds]:
            del self._writes_waiting[key]
        for index in [i for i, (_, w) in self._conf_waiting.items() if now - w.started_at > limit_seconds]:
            del self._conf_waiting[index]


def sent_request_id(request: object) -> int:
    """The id to answer a request that failed validation with: the one it sent if an integer, else 0."""
    if isinstance(request, dict) and isinstance(request.get("id"), int):
        return request["id"]
    return 0


def disk_lost_message(error: DiskLost, directory: Path) -> str:
    node = error.node_id
    if error.promised_term:
        proof = (f"holds term {error.held_term} but node {error.leader} saw this node at term {error.promised_term}"
                 " (it was emptied or replaced by an older copy)")
    else:
        proof = f"is empty but the cluster already holds entries up to {error.commit_index}"
    return (f"node {node}'s data directory {directory} {proof}; this node lost its disk. Remove it (sandctl"
            f" remove-voter {node}), then add it back as a new member (sandctl add-voter {node} ... and start it"
            " with sandstore node --join).")


def describe_entry(entry) -> dict:
    """A readable form of a log entry for `sandctl inspect log`."""
    described = {"index": entry.index, "term": entry.term, "kind": entry.kind.name.lower()}
    if entry.kind == EntryKind.NORMAL:
        command = decode_command(entry.data)
        described["command"] = command.describe()
    elif entry.kind == EntryKind.CONF_CHANGE:
        change = ConfChange.decode(entry.data)
        described["command"] = {"steps": [[step.kind.name.lower(), step.node] for step in change.steps]}
    else:
        described["command"] = {}
    return described
