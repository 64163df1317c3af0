"""The chunk service: a ROUTER on the node's chunk address serving CHUNK_OPS, off the Raft thread.

Threads:
  - the I/O thread owns the ROUTER (ZeroMQ sockets are not thread-safe). It hands each request
    to a bounded queue and sends the replies workers pass back over an inproc PULL socket;
  - `worker_threads` workers hash, read and write LMDB. hashlib and LMDB release the GIL, so
    several 4 MiB puts really run in parallel, and an idle worker always takes the next request
    (a small request never waits behind a big one while a worker is free). Concurrent puts
    share one synced transaction (the store's group commit).
Chunk content travels as its own frame (see CHUNK_OPS in node/protocol.py) and is never
copied on the way: a put hashes and writes the received frame's buffer, a get sends a view
into LMDB's map (ChunkStore.view) as its frame.
When the queue is full the I/O thread stops reading the ROUTER: ZeroMQ's high-water marks then
push back on clients instead of this process buffering without bound.

Every request is validated; garbage, unknown ops and bad arguments get a BAD_REQUEST reply and
the service keeps serving. Periodic garbage collection runs as a job on a worker.

Self-healing data (node/repair/): a scrub thread re-reads and re-hashes every stored chunk at
scrub_bytes_per_second, removing (and remembering, for the leader's chunk_stats) a corrupt
copy; the leader asks for the inventory (chunk_inventory), has a repair copy pulled from a
healthy replica and verified here (chunk_fetch_from), and has a surplus copy deleted
(chunk_delete) only once this node's own metadata no longer records it here.
"""

from __future__ import annotations

import logging
import math
import queue
import secrets
import threading
import time
from typing import Callable

import zmq

from node import protocol
from node.chunks.store import CHUNK_ID_BYTES, INVENTORY_IDS_MAX, ChunkStore
from node.errors import BadRequest, Refused, SandStoreError, Unavailable, error_from_code
from node.large_buffers import keep_freed_buffers
from node.transport.address import bind_socket, connect_socket

log = logging.getLogger(__name__)

HAS_IDS_MAX = 65536
QUEUED_REQUESTS_PER_WORKER = 2
# Requests ZeroMQ may hold per client connection before TCP pushes back (each up to a frame).
RECEIVE_HIGH_WATER_MESSAGES = 64
# A repair copy pulled from another node must arrive within this (a 64 MiB frame at a few MB/s).
FETCH_TIMEOUT_SECONDS = 30.0
FETCH_POLL_SLICE_MS = 100
SCRUB_BATCH_IDS = 256  # ids read per scrub step (one short read transaction)
SCRUB_IDLE_SECONDS = 1.0  # an empty store is looked at again after this
# A pass over the store takes at least this long: a few small chunks are not re-hashed in a
# tight loop at the full rate.
SCRUB_PASS_SECONDS_MIN = 2.0
_GC_JOB = object()  # a queue item meaning "run the periodic garbage collection"
_STOP_JOB = None
_WAKE = b""  # a frame on the reply socket that carries no reply: stop() wakes the I/O thread


class ChunkService:
    def __init__(
        self,
        context: zmq.Context,
        bind_address: str,
        store: ChunkStore,
        *,
        referenced_chunk_ids: Callable[[], set[bytes]],
        gc_grace_seconds: float,
        gc_interval_seconds: float = 30,
        frame_bytes_max: int,
        worker_threads: int = 4,
        clock: Callable[[], float] = time.time,
        scrub_bytes_per_second: int = 0,
        peer_chunk_address: Callable[[str], str | None] = lambda node_id: None,
        replica_recorded_here: Callable[[bytes], bool] = lambda chunk_id: True,
        security: tuple | None = None,
    ) -> None:
        """`referenced_chunk_ids` is called from a worker thread: it must be thread-safe.
        `clock` gives the wall-clock seconds garbage collection records (see ChunkStore).
        scrub_bytes_per_second: 0 runs no scrub. peer_chunk_address: a member's chunk address
        by node id (None if unknown), for chunk_fetch_from. replica_recorded_here: whether this
        node's applied metadata records the chunk as a replica here (chunk_delete refuses then).
        Both are called from worker threads and must be thread-safe. security: (ServerSecurity,
        ClientSecurity), as every node passes: each request is authorized by its connection's
        key, and chunk_fetch_from connects with this node's key (None: unit tests only)."""
        assert scrub_bytes_per_second >= 0
        assert gc_grace_seconds >= 0
        assert gc_interval_seconds > 0
        assert frame_bytes_max > 0
        assert worker_threads >= 1
        self._context = context
        self._store = store
        self._referenced_chunk_ids = referenced_chunk_ids
        self._gc_grace_seconds = gc_grace_seconds
        self._gc_interval_seconds = gc_interval_seconds
        self._frame_bytes_max = frame_bytes_max
        self._clock = clock
        self._jobs: queue.Queue = queue.Queue(maxsize=worker_threads * QUEUED_REQUESTS_PER_WORKER)
        self._reply_endpoint = f"inproc://chunk-replies-{id(self)}"
        self._stopping = threading.Event()
        self._gc_pending = threading.Event()  # at most one periodic GC queued or running
        self._counters_lock = threading.Lock()
        self._counters = {"requests": 0, "bad_requests": 0, "errors": 0, "internal_errors": 0,
                          "fetches": 0, "fetched_bytes": 0, "scrub_passes": 0}
        self._scrub_bytes_per_second = scrub_bytes_per_second
        self._peer_chunk_address = peer_chunk_address
        self._replica_recorded_here = replica_recorded_here
        # Changes each start: a leader seeing a new one reads this node's inventory again.
        self.incarnation = secrets.token_hex(8)

        self._security, self._client_security = security or (None, None)
        self._router = context.socket(zmq.ROUTER)
        if self._security is not None:
            self._security.configure_router(self._router, "chunk")
        self._router.setsockopt(zmq.LINGER, 0)
        # Frames a little over the limit still get a BAD_REQUEST reply from decode(); ZeroMQ cuts
        # the connection of anything far larger before buffering it.
        self._router.setsockopt(zmq.MAXMSGSIZE, frame_bytes_max + (1 << 16))
        self._router.setsockopt(zmq.RCVHWM, RECEIVE_HIGH_WATER_MESSAGES)
        self._replies = context.socket(zmq.PULL)
        self._replies.setsockopt(zmq.LINGER, 0)
        try:
            bind_socket(self._router, bind_address)
            self._replies.bind(self._reply_endpoint)
        except zmq.ZMQError:
            self._router.close(linger=0)
            self._replies.close(linger=0)
            raise
        # The "host:port" actually bound (bind_address may ask for port "*").
        self.bound_address = self._router.getsockopt_string(zmq.LAST_ENDPOINT).removeprefix("tcp://")
        self._io_thread = threading.Thread(target=self._serve, name="chunk-io", daemon=True)
        self._workers = [
            threading.Thread(target=self._work, name=f"chunk-worker-{number}", daemon=True)
            for number in range(worker_threads)
        ]
        self._scrub_thread = threading.Thread(target=self._scrub, name="chunk-scrub", daemon=True)
        self._started = False

    def start(self) -> None:
        assert not self._started, "start() once"
        self._started = True
        keep_freed_buffers()  # every chunk served crosses multi-MiB buffers: reuse them
        for worker in self._workers:
            worker.start()
        self._io_thread.start()
        if self._scrub_bytes_per_second:
            self._scrub_thread.start()

    def stop(self) -> None:
        """Stop serving and join every thread; requests not yet answered get no reply.
        Idempotent."""
        if self._stopping.is_set():
            return
        self._stopping.set()
        if not self._started:
            self._router.close(linger=0)
            self._replies.close(linger=0)
            return
        waker = self._context.socket(zmq.PUSH)
        waker.setsockopt(zmq.LINGER, 0)
        waker.connect(self._reply_endpoint)
        try:
            waker.send(_WAKE, zmq.NOBLOCK)
        except zmq.Again:
            pass  # no reply socket to connect to: the I/O thread saw the event and is exiting
        self._io_thread.join()
        waker.close(linger=0)
        for worker in self._workers:
            worker.join()
        if self._scrub_thread.is_alive():
            self._scrub_thread.join()

    def counters(self) -> dict:
        with self._counters_lock:
            return dict(self._counters)

    def _count(self, name: str, amount: int = 1) -> None:
        with self._counters_lock:
            self._counters[name] += amount

    # --- the scrub thread -----------------------------------------------------------------

    def _scrub(self) -> None:
        """Verify every stored chunk, in id order, round and round. Pacing sleeps each chunk's
        share of the rate after reading it, so the rate is an upper bound whatever the hashing
        speed; a chunk written meanwhile is verified on the next pass."""
        after: bytes | None = None
        pass_started = time.monotonic()
        while not self._stopping.is_set():
            try:
                ids, more = self._store.ids_after(after, SCRUB_BATCH_IDS)
                for chunk_id in ids:
                    size_bytes = self._store.scrub(chunk_id)
                    if self._stopping.wait(size_bytes / self._scrub_bytes_per_second):
                        return
            except Exception:  # a failing scrub must not take the node down; it tries again later
                log.exception("chunk scrub step failed")
                ids, more = [], False
            if more:
                after = ids[-1]
                continue
            if after is not None or ids:
                self._count("scrub_passes")
            after = None
            pause_seconds = SCRUB_IDLE_SECONDS if not ids else pass_started + SCRUB_PASS_SECONDS_MIN - time.monotonic()
            if self._stopping.wait(max(0.0, pause_seconds)):
                return
            pass_started = time.monotonic()

    # --- the I/O thread -------------------------------------------------------------------

    def _serve(self) -> None:
        poller = zmq.Poller()
        poller.register(self._replies, zmq.POLLIN)
        reading_router = False
        next_gc_seconds = time.monotonic() + self._gc_interval_seconds
        try:
            while not self._stopping.is_set():
                # Read requests only while a worker can take them: backpressure, not buffering.
                if reading_router != (not self._jobs.full()):
                    reading_router = not reading_router
                    if reading_router:
                        poller.register(self._router, zmq.POLLIN)
                    else:
                        poller.unregister(self._router)
                # Rounded up: pyzmq truncates a float timeout to 0, which would spin.
                timeout_ms = math.ceil(max(0.0, next_gc_seconds - time.monotonic()) * 1000)
                events = dict(poller.poll(timeout=timeout_ms if reading_router else min(timeout_ms, 10)))
                if self._replies in events:
                    self._send_replies()
                if self._router in events:
                    self._queue_requests()
                if time.monotonic() >= next_gc_seconds:
                    next_gc_seconds = time.monotonic() + self._gc_interval_seconds
                    if not self._gc_pending.is_set() and not self._jobs.full():
                        self._gc_pending.set()
                        self._jobs.put_nowait(_GC_JOB)
        finally:
            for _ in self._workers:
                self._jobs.put(_STOP_JOB)  # workers drain the queue, so this never blocks for long
            for worker in self._workers:
                worker.join()
            self._router.close(linger=0)
            self._replies.close(linger=0)

    def _send_replies(self) -> None:
        while True:
            try:
                parts = self._replies.recv_multipart(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                return
            if len(parts) in (2, 3):  # identity, reply map, and a chunk_get's content
                try:
                    self._router.send_multipart(parts, zmq.NOBLOCK, copy=False)
                except zmq.Again:
                    pass  # the client's pipe is full or gone: it times out and retries

    def _queue_requests(self) -> None:
        while not self._jobs.full():
            try:
                parts = self._router.recv_multipart(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                return
            self._jobs.put_nowait(parts)

    # --- workers --------------------------------------------------------------------------

    def _work(self) -> None:
        replies = self._context.socket(zmq.PUSH)
        replies.setsockopt(zmq.LINGER, 0)
        replies.connect(self._reply_endpoint)
        try:
            while True:
                job = self._jobs.get()
                if job is _STOP_JOB:
                    return
                if job is _GC_JOB:
                    self._periodic_gc()
                    continue
                replies.send_multipart(self._handle(job), copy=False)
        finally:
            replies.close(linger=0)

    def _periodic_gc(self) -> None:
        try:
            result = self._collect_garbage(dry_run=False, grace_seconds=self._gc_grace_seconds)
            if result["deleted"]:
                log.info("chunk gc deleted %d chunks (%d bytes)", result["deleted"], result["deleted_bytes"])
        except SandStoreError as error:  # e.g. the node's namespace is not current: try later
            log.warning("periodic chunk garbage collection skipped: %s", error)
        except Exception:  # a failing GC must not take the worker down; it runs again later
            log.exception("periodic chunk garbage collection failed")
        finally:
            self._gc_pending.clear()

    def _handle(self, parts: list) -> list:
        """One request -> [client identity, reply map, content frame if any]. Never raises."""
        identity = parts[0].bytes
        request_id = 0
        self._count("requests")
        try:
            if len(parts) not in (2, 3):
                raise BadRequest(f"a request is one frame, or two for {sorted(protocol.CHUNK_DATA_OPS)}; "
                                 f"got {len(parts) - 1}")
            request = protocol.decode(parts[1].buffer, self._frame_bytes_max)
            if isinstance(request, dict) and type(request.get("id")) is int:
                request_id = request["id"]  # answer even an invalid request under its own id
            request_id, op, args = protocol.validate_request(request, protocol.CHUNK_OPS)
            if self._security is not None:
                self._security.authorize_request(parts[1], op)  # Unauthorized: REFUSED, nothing done
            content_frames = len(parts) - 2
            if content_frames != (op in protocol.CHUNK_DATA_OPS):
                raise BadRequest(f"{op} takes {int(op in protocol.CHUNK_DATA_OPS)} content frames, got {content_frames}")
            content = parts[2].buffer if content_frames else None
            if content is not None and len(content) > self._frame_bytes_max:
                raise BadRequest(f"content of {len(content)} bytes exceeds the {self._frame_bytes_max}-byte limit")
            result, content_out = self._dispatch(op, args, content)
            reply = [identity, protocol.reply_ok(request_id, result)]
            if content_out is not None:
                reply.append(content_out)
            return reply
        except BadRequest as error:
            self._count("bad_requests")
            return [identity, protocol.reply_error(request_id, error)]
        except SandStoreError as error:
            self._count("errors")
            return [identity, protocol.reply_error(request_id, error)]
        except Exception:
            self._count("internal_errors")
            log.exception("chunk request %d failed", request_id)
            return [identity, protocol.reply_error(request_id, SandStoreError("internal error in the chunk service"))]

    def _dispatch(self, op: str, args: dict, content: memoryview | None) -> tuple[object, bytes | None]:
        """(result, content frame to send after the reply map or None)."""
        if op == "chunk_put":
            assert content is not None
            return {"stored": self._store.put(_chunk_id(args["id"]), content)}, None
        if op == "chunk_get":
            # A view, not a copy: the frame holds it (and its read transaction) until sent.
            data = self._store.view(_chunk_id(args["id"]), verify=args.get("verify", True))
            return {"size": len(data)}, data
        if op == "chunk_verify":
            return {"size": len(self._store.view(_chunk_id(args["id"]), verify=True))}, None
        if op == "chunk_has":
            ids = args["ids"]
            if len(ids) > HAS_IDS_MAX:
                raise BadRequest(f"chunk_has takes at most {HAS_IDS_MAX} ids")
            return [self._store.has(_chunk_id(chunk_id)) for chunk_id in ids], None
        if op == "chunk_stats":
            chunks, total_bytes = self._store.usage()
            return {"chunks": chunks, "bytes": total_bytes,
                    "counters": {**self._store.counters(), **self.counters()},
                    "incarnation": self.incarnation, "removals": self._store.removals(),
                    "corrupt_events": [[number, chunk_id] for number, chunk_id in self._store.corrupt_events()]}, None
        if op == "chunk_inventory":
            limit = args.get("limit", INVENTORY_IDS_MAX)
            if not 1 <= limit <= INVENTORY_IDS_MAX:
                raise BadRequest(f"limit must be 1 to {INVENTORY_IDS_MAX}")
            after = args.get("after")
            ids, more = self._store.ids_after(None if after is None else _chunk_id(after), limit)
            return {"ids": ids, "more": more}, None
        if op == "chunk_fetch_from":
            return self._fetch_from(_chunk_id(args["id"]), args["source"]), None
        if op == "chunk_delete":
            chunk_id = _chunk_id(args["id"])
            if self._replica_recorded_here(chunk_id):
                raise Refused(f"chunk {chunk_id.hex()} is still recorded as a replica on this node "
                              "(drop_replica first)")
            return {"deleted": self._store.delete(chunk_id)}, None
        assert op == "chunk_gc", op
        grace_seconds = args.get("grace_seconds", self._gc_grace_seconds)
        if not (math.isfinite(grace_seconds) and grace_seconds >= 0):
            raise BadRequest("grace_seconds must be a finite number >= 0")
        return self._collect_garbage(dry_run=args.get("dry_run", False), grace_seconds=float(grace_seconds)), None

    def _fetch_from(self, chunk_id: bytes, source: str) -> dict:
        """Pull a chunk from `source`'s chunk port and store it here: the store checks the hash
        and syncs before this returns, so the reply means a verified, durable copy."""
        address = self._peer_chunk_address(source)
        if address is None:
            raise BadRequest(f"{source!r} is not a known node")
        dealer = self._context.socket(zmq.DEALER)
        dealer.setsockopt(zmq.LINGER, 0)
        try:
            if self._client_security is not None:
                self._client_security.configure_dealer(dealer, source)
            connect_socket(dealer, address)
            dealer.send(protocol.request(1, "chunk_get", {"id": chunk_id, "verify": False}))
            deadline = time.monotonic() + FETCH_TIMEOUT_SECONDS
            # In slices, so that stop() is not held up by a slow source.
            while not dealer.poll(FETCH_POLL_SLICE_MS):
                if self._stopping.is_set():
                    raise Unavailable("the chunk service is stopping")
                if time.monotonic() >= deadline:
                    raise Unavailable(f"{source} did not send chunk {chunk_id.hex()} within {FETCH_TIMEOUT_SECONDS:g} s")
            frames = dealer.recv_multipart(copy=False)
        finally:
            dealer.close(linger=0)
        content = _fetched_content(frames, self._frame_bytes_max, source)
        stored = self._store.put(chunk_id, content)  # ChecksumMismatch if the source's copy is bad
        self._count("fetches")
        self._count("fetched_bytes", len(content))
        return {"stored": stored, "size": len(content)}

    def _collect_garbage(self, *, dry_run: bool, grace_seconds: float) -> dict:
        referenced = self._referenced_chunk_ids()
        return self._store.collect_garbage(referenced, self._clock(), grace_seconds, dry_run)


def _fetched_content(frames: list, frame_bytes_max: int, source: str) -> memoryview:
    """The content of a chunk_get reply from a peer, checked like anything from the network."""
    if len(frames) not in (1, 2):
        raise Unavailable(f"malformed chunk_get reply from {source}")
    try:
        reply = protocol.decode(frames[0].buffer, frame_bytes_max)
    except BadRequest:  # the peer's garbage, not our caller's: the copy simply failed
        reply = None
    if not isinstance(reply, dict) or reply.get("id") != 1:
        raise Unavailable(f"malformed chunk_get reply from {source}")
    if reply.get("ok") is not True:
        error = reply.get("error")
        if isinstance(error, dict) and isinstance(error.get("code"), str) and isinstance(error.get("message"), str):
            raise error_from_code(error["code"], f"{source}: {error['message']}")
        raise Unavailable(f"malformed chunk_get reply from {source}")
    result = reply.get("result")
    if len(frames) != 2 or not isinstance(result, dict) or result.get("size") != len(frames[1].buffer):
        raise Unavailable(f"chunk_get reply from {source} does not carry the content it announces")
    return frames[1].buffer


def _chunk_id(value: object) -> bytes:
    if type(value) is not bytes or len(value) != CHUNK_ID_BYTES:
        raise BadRequest(f"a chunk id is {CHUNK_ID_BYTES} bytes")
    return value
