"""Client side of chunk transfer: stream a file into replicated chunks, and back out.

Used by sandctl for files above inline_bytes_max. The calling thread drives the transfer: the
request engine (sandctl/connection.py, one DEALER per chunk node) keeps up to
`chunks_in_flight_max` chunks moving at once, so memory stays bounded by that many chunks
whatever the file size. A replica that fails (error reply, no reply within
attempt_timeout_seconds) is replaced by another node, and a node that failed once is tried
last for the rest of the transfer so a dead node costs one timeout, not one per chunk.

Content is never copied in this process after it is read: a put sends the chunk read from
the input as its own frame to every replica (ZeroMQ references it, copy=False), and a get
hashes and writes the received frame's buffer. A get asks nodes not to verify (each chunk is
hashed once, here, end to end) and reports a copy that fails the check with chunk_verify, so
the node counts, logs and removes it. A get hashes and writes in helper threads (_Helpers):
the calling thread keeps requests and replies moving while a chunk is checked or written, and
the caller's writer is called from the helpers' writer thread, in order. Freed chunk buffers
stay in the process for the next chunk (node/large_buffers.py): otherwise every chunk's
buffers fault in fresh pages."""

from __future__ import annotations

import itertools
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import BinaryIO, Callable

import zmq

from node import protocol
from node.chunk_ids import CHUNK_ID_BYTES, chunk_id_of, chunk_matches
from node.errors import (
    ChecksumMismatch,
    NotFound,
    SandStoreError,
    StoreFull,
    Unavailable,
)

from sandctl.connection import Connections, Reply, SocketOptions, shared_context

DEFAULT_FRAME_BYTES_MAX = 64 << 20
DEFAULT_ATTEMPT_TIMEOUT_SECONDS = 5.0
# Threads that hash fetched chunks, so verification uses every core instead of one (blake3
# releases the GIL for large buffers) while the calling thread keeps the sockets busy.
VERIFY_THREADS = 2

Progress = Callable[[int], None]  # called with the byte count of each chunk completed


class _Helpers:
    """The threads a get runs beside the caller's: `verify_threads` that check fetched chunks
    against their ids, and one writer that hands verified chunks to the caller's writer in
    the order given. The calling thread meanwhile keeps the sockets busy: a write (a file's
    page cache, a pipe) no longer holds up the next chunk's check and request.

    verify() and write() queue a job; the outcomes come back from results(), and the socket
    given to Connections.add_wakeup gets a message after each one, so the caller's poll wakes
    up. Jobs are bounded by the caller (at most one per chunk in flight). After an error in
    the writer (the caller's writer raised), the writes queued after it are dropped."""

    _endpoints = itertools.count()

    def __init__(self, context: zmq.Context, verify_threads: int, writer: BinaryIO) -> None:
        assert verify_threads >= 1
        self._context = context
        self._writer = writer
        self._endpoint = f"inproc://chunk-helpers-{id(self)}-{next(self._endpoints)}"
        self.wakeup = context.socket(zmq.PULL)
        self.wakeup.setsockopt(zmq.LINGER, 0)
        self.wakeup.bind(self._endpoint)
        self._checks: queue.SimpleQueue = queue.SimpleQueue()
        self._writes: queue.SimpleQueue = queue.SimpleQueue()
        self._results: queue.SimpleQueue = queue.SimpleQueue()
        self._stopping = False  # set by close(): the writer drops what is still queued
        self._threads = [threading.Thread(target=self._serve, args=(self._checks, self._check), daemon=True,
                                          name=f"chunk-verify-{number}") for number in range(verify_threads)]
        self._threads.append(threading.Thread(target=self._serve, args=(self._writes, self._write), daemon=True,
                                              name="chunk-write"))
        for thread in self._threads:
            thread.start()

    def verify(self, position: int, node: str, chunk: "_Chunk", content: memoryview) -> None:
        self._checks.put((position, node, chunk, content))

    def write(self, position: int, content: memoryview) -> None:
        self._writes.put((position, content))

    def results(self) -> list[tuple]:
        """Every outcome finished so far: ("verified", position, node, content, error or None)
        and ("written", position, size, exception the writer raised or None)."""
        finished = []
        while True:
            try:
                finished.append(self._results.get_nowait())
            except queue.Empty:
                return finished

    def _check(self, job: tuple) -> tuple:
        position, node, chunk, content = job
        return "verified", position, node, content, _verify(chunk, content)

    def _write(self, job: tuple) -> tuple:
        position, content = job
        try:
            self._writer.write(content)
        except BaseException as error:  # the caller's to handle (a full disk, a closed pipe, Enough)
            self._stopping = True
            return "written", position, len(content), error
        return "written", position, len(content), None

    def _serve(self, jobs: queue.SimpleQueue, handle: Callable[[tuple], tuple]) -> None:
        wake = self._context.socket(zmq.PUSH)
        wake.setsockopt(zmq.LINGER, 0)
        wake.connect(self._endpoint)
        try:
            while True:
                job = jobs.get()
                if job is None:
                    return
                if self._stopping and handle == self._write:
                    continue
                self._results.put(handle(job))
                try:
                    wake.send(b"", zmq.NOBLOCK)
                except zmq.Again:
                    pass  # wake-ups already queued will do: results() returns every outcome
        finally:
            wake.close(linger=0)

    def close(self) -> None:
        """Stop every thread; a write under way finishes first, queued writes are dropped."""
        self._stopping = True
        for _ in range(len(self._threads) - 1):
            self._checks.put(None)
        self._writes.put(None)
        for thread in self._threads:
            thread.join()
        self.wakeup.close(linger=0)


class _NoReplyInTime(Unavailable):
    """An attempt got no reply within attempt_timeout_seconds: the node may only be slow."""


@dataclass
class _Attempt:
    position: int  # the chunk's position in the file; REPORT for a chunk_verify report
    node: str
    expires_seconds: float


REPORT = -1


@dataclass
class _Chunk:
    """A chunk being stored or fetched, and what its replicas said so far."""

    chunk_id: bytes
    size: int
    candidates: list[str]  # preferred order, rotated per chunk to spread load
    request_id: int = 0  # put only: the chunk_put request every replica is sent
    frames: list = field(default_factory=list)  # put only: [request map, content], held until every replica has it
    outstanding_nodes: set[str] = field(default_factory=set)
    done_nodes: list[str] = field(default_factory=list)
    failures: dict[str, SandStoreError] = field(default_factory=dict)  # the latest failure per node

    def next_candidate(self, suspects: set[str]) -> str | None:
        """The next untried node, nodes that failed earlier in this transfer last; once every
        node was tried, one that merely did not answer in time gets another chance (the
        overall deadline bounds the retries)."""
        idle = [node for node in self.candidates
                if node not in self.outstanding_nodes and node not in self.done_nodes]
        untried = [node for node in idle if node not in self.failures]
        healthy = [node for node in untried if node not in suspects]
        slow = [node for node in idle if isinstance(self.failures.get(node), _NoReplyInTime)]
        return (healthy or untried or slow or [None])[0]

    def describe_failures(self) -> str:
        return ", ".join(f"{node}: {error}" for node, error in self.failures.items()) or "no failures yet"


def _connections(chunk_addresses: dict[str, str], chunks_in_flight_max: int, frame_bytes_max: int,
                 context: zmq.Context | None, security=None) -> Connections:
    # Not immediate: a chunk request may wait for a connection being set up, and a node that
    # does not answer is replaced after attempt_timeout_seconds. The send high-water mark is a
    # safety net only: a node has at most one request per chunk in flight, and one that timed
    # out is tried last afterwards, so even a dead node's queue stays short. ZeroMQ acknowledges
    # reads in batches, hence the slack over the true in-flight count.
    options = SocketOptions(frame_bytes_max=frame_bytes_max, zero_copy=True,
                            send_high_water_messages=4 * chunks_in_flight_max + 16, security=security)
    return Connections(chunk_addresses, options, context)


def _result_of(reply: Reply) -> object:
    """What an attempt got: the error, a chunk_get's content (a memoryview of the received
    frame, checked against the size its reply map states), or the result."""
    if not reply.ok:
        return reply.error
    if reply.content is None:
        return reply.result
    result = reply.result
    if not isinstance(result, dict) or result.get("size") != len(reply.content):
        return SandStoreError("malformed chunk_get reply: the content frame does not match its size")
    return reply.content


def _rotated(nodes: list[str], position: int) -> list[str]:
    start = position % len(nodes) if nodes else 0
    return nodes[start:] + nodes[:start]


def read_up_to(reader: BinaryIO, size_bytes: int) -> bytes:
    """Up to size_bytes; short only at the end of the input (raw files and pipes return short
    reads)."""
    parts = []
    remaining = size_bytes
    while remaining > 0:
        part = reader.read(remaining)
        if not part:
            break
        parts.append(part)
        remaining -= len(part)
    return b"".join(parts)


class _Transfer:
    """The shared machinery: attempts, timeouts, suspects and the overall deadline."""

    def __init__(self, connections: Connections, deadline_seconds: float, attempt_timeout_seconds: float) -> None:
        self.connections = connections
        self.deadline = time.monotonic() + deadline_seconds
        self.attempt_timeout_seconds = attempt_timeout_seconds
        self.attempts: dict[tuple[str, int], _Attempt] = {}  # by (node, request id)
        self.suspects: set[str] = set()

    def send(self, position: int, chunk: _Chunk, node: str, request_id: int, frames: list) -> None:
        assert node not in chunk.outstanding_nodes
        if not self.connections.send(node, request_id, frames):
            self.suspects.add(node)
            chunk.failures[node] = Unavailable("its request queue is full")
            return
        expires = min(time.monotonic() + self.attempt_timeout_seconds, self.deadline)
        self.attempts[(node, request_id)] = _Attempt(position, node, expires)
        chunk.outstanding_nodes.add(node)

    def report_corrupt(self, node: str, chunk_id: bytes) -> None:
        """Ask `node` to check its copy of a chunk that failed verification here: a corrupt
        copy is then counted, logged and removed there. Best effort: its outcome is ignored."""
        request_id, request = self.connections.new_request("chunk_verify", {"id": chunk_id})
        if self.connections.send(node, request_id, [request]):
            expires = min(time.monotonic() + self.attempt_timeout_seconds, self.deadline)
            self.attempts[(node, request_id)] = _Attempt(REPORT, node, expires)

    def reports_outstanding(self) -> bool:
        return any(attempt.position == REPORT for attempt in self.attempts.values())

    def wait(self, oldest: str) -> list[tuple[_Attempt, object]]:
        """Replies and timed-out attempts, as (attempt, result or SandStoreError). At the
        deadline, Unavailable naming `oldest`, the unfinished chunk the caller waits on most."""
        now = time.monotonic()
        if now >= self.deadline:
            raise Unavailable(f"the deadline passed with {oldest}")
        next_expiry = min((attempt.expires_seconds for attempt in self.attempts.values()), default=self.deadline)
        outcomes = []
        for reply in self.connections.poll(next_expiry - now):
            # A late reply to an expired attempt is dropped by the engine, unless the same
            # request was sent to that node again: then it answers the new attempt just as well.
            attempt = self.attempts.pop((reply.node, reply.request_id), None)
            if attempt is not None:
                outcomes.append((attempt, _result_of(reply)))
        now = time.monotonic()
        for key, attempt in list(self.attempts.items()):
            if attempt.expires_seconds <= now:
                del self.attempts[key]
                self.connections.forget(*key)
                outcomes.append((attempt, _NoReplyInTime(f"no reply within {self.attempt_timeout_seconds:g}s")))
        for attempt, result in outcomes:
            if isinstance(result, (Unavailable, StoreFull)):
                self.suspects.add(attempt.node)
        return outcomes


def put_stream(
    chunk_addresses: dict[str, str],
    reader: BinaryIO,
    *,
    chunk_size_bytes: int,
    replication: int,
    deadline_seconds: float,
    chunks_in_flight_max: int = 4,
    progress: Progress | None = None,
    context: zmq.Context | None = None,
    attempt_timeout_seconds: float = DEFAULT_ATTEMPT_TIMEOUT_SECONDS,
    frame_bytes_max: int = DEFAULT_FRAME_BYTES_MAX,
    min_replicas: int | None = None,
    security=None,  # the client's ClientSecurity (every node refuses a connection without one)
) -> tuple[list[list], int]:
    """Store everything `reader` yields as chunks on `replication` distinct nodes each (capped
    by the node count). Returns ([[chunk id, size, [replica node ids]], ...], total size) in
    file order, once every chunk is durable on all its replicas, or (degraded write) on at
    least min_replicas of them when the others failed: the leader heals the rest. Unavailable
    if a chunk cannot get min_replicas (default: replication) before the deadline (chunks
    already stored are left to GC)."""
    assert chunk_addresses, "no chunk nodes to write to"
    assert chunk_size_bytes > 0 and replication >= 1 and chunks_in_flight_max >= 1
    copies = min(replication, len(chunk_addresses))
    copies_min = copies if min_replicas is None else min(min_replicas, copies)
    assert 1 <= copies_min <= copies
    connections = _connections(chunk_addresses, chunks_in_flight_max, frame_bytes_max, context, security)
    try:
        stream = _PutStream(_Transfer(connections, deadline_seconds, attempt_timeout_seconds), sorted(chunk_addresses),
                            copies, progress, copies_min)
        return stream.run(reader, chunk_size_bytes, chunks_in_flight_max)
    finally:
        connections.close()


class _PutStream:
    """One put: chunks read in order, each sent to `copies` replicas, failed ones replaced."""

    def __init__(self, transfer: _Transfer, nodes: list[str], copies: int, progress: Progress | None,
                 copies_min: int) -> None:
        self.transfer = transfer
        self.nodes = nodes
        self.copies = copies
        self.copies_min = copies_min  # a chunk is done with this many once the others failed
        self.progress = progress
        self.results: list[list | None] = []  # per chunk in file order, once all its replicas have it
        self.pending: dict[int, _Chunk] = {}  # by position
        self.total_bytes = 0

    def run(self, reader: BinaryIO, chunk_size_bytes: int, chunks_in_flight_max: int) -> tuple[list[list], int]:
        end_of_input = False
        while True:
            while not end_of_input and len(self.pending) < chunks_in_flight_max:
                end_of_input = not self._start_next(reader, chunk_size_bytes)
            if not self.pending:
                break
            assert len(self.pending) <= chunks_in_flight_max
            for attempt, result in self.transfer.wait(self._oldest_state()):
                self._on_outcome(attempt, result)
        assert all(result is not None for result in self.results)
        return self.results, self.total_bytes

    def _start_next(self, reader: BinaryIO, chunk_size_bytes: int) -> bool:
        """Read the next chunk and send it to its first replicas; False at the end of input."""
        data = read_up_to(reader, chunk_size_bytes)
        if not data:
            return False
        position = len(self.results)
        self.results.append(None)
        self.total_bytes += len(data)
        chunk_id, size = chunk_id_of(data), len(data)
        request_id, request = self.transfer.connections.new_request("chunk_put", {"id": chunk_id})
        chunk = _Chunk(chunk_id, size, _rotated(self.nodes, position), request_id=request_id, frames=[request, data])
        del data  # only the chunk holds it: one copy of the content per chunk in flight
        self.pending[position] = chunk
        self._fill(position, chunk)
        return True

    def _fill(self, position: int, chunk: _Chunk) -> None:
        """Send the chunk to more nodes until `copies` have it or are being asked."""
        while len(chunk.done_nodes) + len(chunk.outstanding_nodes) < self.copies:
            node = chunk.next_candidate(self.transfer.suspects)
            enough = len(chunk.done_nodes) + len(chunk.outstanding_nodes) >= self.copies_min
            if enough and (node is None or node in self.transfer.suspects):
                return  # degraded: no healthy node left for more copies; the leader heals the rest
            if node is None:
                raise Unavailable(self._describe(position, chunk))
            self.transfer.send(position, chunk, node, chunk.request_id, chunk.frames)

    def _on_outcome(self, attempt: _Attempt, result: object) -> None:
        chunk = self.pending[attempt.position]
        chunk.outstanding_nodes.remove(attempt.node)
        if isinstance(result, SandStoreError):
            chunk.failures[attempt.node] = result
        elif attempt.node not in chunk.done_nodes:
            chunk.done_nodes.append(attempt.node)
        if len(chunk.done_nodes) < self.copies:
            self._fill(attempt.position, chunk)
            if chunk.outstanding_nodes or len(chunk.done_nodes) < self.copies_min:
                return
        replicas = [node for node in chunk.candidates if node in chunk.done_nodes]
        self.results[attempt.position] = [chunk.chunk_id, chunk.size, replicas]
        del self.pending[attempt.position]
        if self.progress is not None:
            self.progress(chunk.size)

    def _oldest_state(self) -> str:
        position = min(self.pending)
        return self._describe(position, self.pending[position])

    def _describe(self, position: int, chunk: _Chunk) -> str:
        return (f"chunk {position} ({chunk.chunk_id.hex()[:16]}) on {len(chunk.done_nodes)} of {self.copies} "
                f"replicas ({chunk.describe_failures()})")


def get_stream(
    chunk_addresses: dict[str, str],
    chunks: list[list],
    writer: BinaryIO,
    *,
    deadline_seconds: float,
    chunks_in_flight_max: int = 4,
    progress: Progress | None = None,
    context: zmq.Context | None = None,
    attempt_timeout_seconds: float = DEFAULT_ATTEMPT_TIMEOUT_SECONDS,
    frame_bytes_max: int = DEFAULT_FRAME_BYTES_MAX,
    security=None,  # the client's ClientSecurity (every node refuses a connection without one)
) -> int:
    """Fetch `chunks` ([[chunk id, size, [replica node ids]], ...]) in parallel and write them
    to `writer` in order, each verified against its id; returns the bytes written. A failing
    replica (down, missing, corrupt) is replaced by the next one. When every replica of a chunk
    failed: ChecksumMismatch if any copy was corrupt, NotFound if every replica lacks it,
    otherwise Unavailable; the message names the chunk."""
    assert chunks_in_flight_max >= 1
    for chunk_id, size, replicas in chunks:
        assert type(chunk_id) is bytes and len(chunk_id) == CHUNK_ID_BYTES, "a chunk id is 32 bytes"
        assert type(size) is int and size >= 0 and isinstance(replicas, (list, tuple))
    context = context or shared_context()
    connections = _connections(chunk_addresses, chunks_in_flight_max, frame_bytes_max, context, security)
    helpers = _Helpers(context, VERIFY_THREADS, writer)
    connections.add_wakeup(helpers.wakeup)
    try:
        stream = _GetStream(_Transfer(connections, deadline_seconds, attempt_timeout_seconds), helpers,
                            chunk_addresses, chunks, progress)
        return stream.run(chunks_in_flight_max)
    finally:
        helpers.close()
        connections.close()


class _GetStream:
    """One get: up to chunks_in_flight_max chunks fetched ahead of the writer (a chunk counts
    until it is written), each verified by the helper threads, written strictly in order by
    the helpers' writer."""

    def __init__(self, transfer: _Transfer, helpers: _Helpers, chunk_addresses: dict[str, str], chunks: list[list],
                 progress: Progress | None) -> None:
        self.transfer = transfer
        self.helpers = helpers
        self.known_nodes = set(chunk_addresses)
        self.chunks = chunks
        self.progress = progress
        self.active: dict[int, _Chunk] = {}  # being fetched or verified, by position
        self.fetched: dict[int, memoryview] = {}  # verified, waiting for the chunks before them
        self.next_to_fetch = self.next_to_write = self.written_bytes = 0
        self.next_to_submit = 0  # chunks before it are with the writer or written

    def run(self, chunks_in_flight_max: int) -> int:
        while self.next_to_write < len(self.chunks) or self.transfer.reports_outstanding():
            while (self.next_to_fetch < len(self.chunks)
                   and self.next_to_fetch - self.next_to_write < chunks_in_flight_max):
                self._start_next()
            assert len(self.active) + len(self.fetched) + self.next_to_submit - self.next_to_write <= chunks_in_flight_max
            for attempt, result in self.transfer.wait(self._waiting_for()):
                self._on_outcome(attempt, result)
            for outcome in self.helpers.results():
                if outcome[0] == "verified":
                    self._on_verified(*outcome[1:])
                else:
                    self._on_written(*outcome[1:])
            self._submit_ready()
        return self.written_bytes

    def _start_next(self) -> None:
        position = self.next_to_fetch
        chunk_id, size, replicas = self.chunks[position]
        known = sorted(node for node in replicas if node in self.known_nodes)
        chunk = _Chunk(chunk_id, size, _rotated(known, position))
        self.active[position] = chunk
        self._try_next(position, chunk)
        self.next_to_fetch += 1

    def _try_next(self, position: int, chunk: _Chunk) -> None:
        """Ask the next candidate replica; _give_up's error when none is left."""
        while not chunk.outstanding_nodes:
            node = chunk.next_candidate(self.transfer.suspects)
            if node is None:
                raise _give_up(position, chunk)
            request_id, request = self.transfer.connections.new_request("chunk_get", {"id": chunk.chunk_id,
                                                                                       "verify": False})
            self.transfer.send(position, chunk, node, request_id, [request])

    def _failed(self, position: int, node: str, error: SandStoreError) -> None:
        chunk = self.active[position]
        chunk.outstanding_nodes.remove(node)
        chunk.failures[node] = error
        self._try_next(position, chunk)

    def _on_outcome(self, attempt: _Attempt, result: object) -> None:
        if attempt.position == REPORT:
            return
        if isinstance(result, SandStoreError):
            self._failed(attempt.position, attempt.node, result)
        else:
            # The node stays outstanding for this chunk until its content is checked.
            self.helpers.verify(attempt.position, attempt.node, self.active[attempt.position], result)

    def _on_verified(self, position: int, node: str, content: memoryview, error: SandStoreError | None) -> None:
        if error is None:
            del self.active[position]
            self.fetched[position] = content
            return
        if isinstance(error, ChecksumMismatch):
            self.transfer.report_corrupt(node, self.active[position].chunk_id)
        self._failed(position, node, error)

    def _submit_ready(self) -> None:
        while self.next_to_submit in self.fetched:
            self.helpers.write(self.next_to_submit, self.fetched.pop(self.next_to_submit))
            self.next_to_submit += 1

    def _on_written(self, position: int, size: int, error: BaseException | None) -> None:
        if error is not None:
            raise error  # the caller's writer raised it: the same exception, for the caller
        assert position == self.next_to_write, "the writer writes in order"
        self.written_bytes += size
        self.next_to_write += 1
        if self.progress is not None:
            self.progress(size)

    def _waiting_for(self) -> str:
        if self.next_to_submit < len(self.chunks) and self.next_to_submit in self.active:
            oldest = self.active[self.next_to_submit]  # everything before it is verified, so it is being fetched
            return f"chunk {self.next_to_submit} not fetched ({oldest.describe_failures()})"
        if self.next_to_write < len(self.chunks):
            return f"chunk {self.next_to_write} not written yet"
        return "reports of corrupt replicas unanswered"


def _verify(chunk: _Chunk, result: object) -> SandStoreError | None:
    if type(result) is not memoryview:
        return SandStoreError("malformed chunk_get reply")
    if len(result) != chunk.size or not chunk_matches(chunk.chunk_id, result):
        return ChecksumMismatch("content does not hash to the chunk id")
    return None


def _give_up(position: int, chunk: _Chunk) -> SandStoreError:
    name = f"chunk {position} ({chunk.chunk_id.hex()})"
    if not chunk.candidates:
        return NotFound(f"{name}: none of its replicas is a known node")
    failures = chunk.describe_failures()
    errors = list(chunk.failures.values())
    if any(isinstance(error, ChecksumMismatch) for error in errors):
        return ChecksumMismatch(f"{name}: no replica has an intact copy ({failures})")
    if all(isinstance(error, NotFound) for error in errors):
        return NotFound(f"{name}: no replica has it ({failures})")
    return Unavailable(f"{name}: no replica could serve it ({failures})")
