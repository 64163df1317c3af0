"""The SandStore client library: the CLI, the tests and the benchmarks all talk to a cluster
through `Client`.

One ZeroMQ DEALER per node, created on first use. Every request carries an id and replies are
matched by id, so a late reply to an abandoned attempt is recognised (and still accepted if
it answers the same call). Writes carry the client's session (client id, seq); a retried
write reuses its seq, so the state machine applies it at most once.

Failover: try the last known leader, else the nodes in config order; NOT_LEADER with a hint
goes straight to the hinted node; NO_LEADER, an unreachable node or a silent one backs off
and tries the next node, until the call's deadline. Then the caller learns whether anything
may have changed: TimedOut (a write reached a node and its outcome is unknown) or
Unavailable (nothing could have changed).
"""

from __future__ import annotations

import itertools
import secrets
import time
from collections.abc import Callable, Iterable
from typing import BinaryIO

import zmq

from node import protocol
from sandctl import transfer
from node.config import ClusterConfig
from node.errors import (
    ERRORS_BY_CODE,
    AlreadyExists,
    BadRequest,
    NoLeader,
    NotFound,
    NotLeader,
    SandStoreError,
    TimedOut,
    TooLarge,
    Unavailable,
    error_from_code,
)

# How long one attempt waits for its reply before the next node is tried (capped by the
# call's deadline). Writes commit in milliseconds on a healthy cluster, so a second of
# silence means the node is stuck or partitioned.
ATTEMPT_TIMEOUT_SECONDS = 1.0
# How long to wait for a connection to a node before counting it as down for this attempt.
# The socket keeps connecting in the background, so a slow handshake succeeds next round.
CONNECT_WAIT_SECONDS = 0.25
BACKOFF_SECONDS_MIN = 0.01
BACKOFF_SECONDS_MAX = 0.2
RECONNECT_INTERVAL_MS = 50
RECONNECT_INTERVAL_MS_MAX = 500
# Pause between status rounds while waiting for a leader, so an all-follower cluster that
# answers at once is not polled in a busy loop.
LEADER_POLL_SECONDS = 0.02
STATUS_ROUND_SECONDS_MAX = 0.5

# Error codes that say "this attempt changed nothing, ask again (elsewhere)".
_RETRY_NOTHING_CHANGED = frozenset(code for code, error in ERRORS_BY_CODE.items() if error.retryable)
# A node that gave up waiting for its own commit: the write may still be applied; retrying
# with the same seq is safe and finds out.
_RETRY_OUTCOME_UNKNOWN = frozenset({"TIMEOUT"})

# Large files. A transfer's deadline is the call's deadline plus the time its bytes take at
# this floor rate, so --timeout bounds how long a stuck transfer hangs, not how big a file may be.
TRANSFER_BYTES_PER_SECOND_MIN = 1 << 20
CHUNKS_IN_FLIGHT = 3  # per transfer: memory stays within a few chunks whatever the file size
# Input of unknown length (stdin) is stored in segments of this many chunks, each with its own
# deadline, so a long pipe is not cut off by a deadline fixed when it started.
SEGMENT_CHUNKS_UNKNOWN_SIZE = 64
CHUNK_PROBE_ROUND_SECONDS = 0.5  # a chunk node that does not answer a probe within this is down

assert BACKOFF_SECONDS_MIN < BACKOFF_SECONDS_MAX
assert CONNECT_WAIT_SECONDS <= ATTEMPT_TIMEOUT_SECONDS
assert CHUNKS_IN_FLIGHT <= SEGMENT_CHUNKS_UNKNOWN_SIZE

Progress = Callable[[int], None]  # called with the byte count of each piece stored or written


class _PrefixedReader:
    """`head` (already read to decide inline or chunked) and then the rest of `reader`."""

    def __init__(self, head: bytes, reader: BinaryIO) -> None:
        self._head = memoryview(head)
        self._reader = reader

    def read(self, size: int) -> bytes:
        assert size > 0
        if self._head:
            part, self._head = bytes(self._head[:size]), self._head[size:]
            return part
        return self._reader.read(size)


class _LimitedReader:
    """At most `limit` bytes of `reader`; `exhausted` once the underlying reader ended."""

    def __init__(self, reader, limit: int) -> None:
        assert limit > 0
        self._reader = reader
        self.remaining = limit
        self.exhausted = False

    def read(self, size: int) -> bytes:
        if self.remaining <= 0:
            return b""
        part = self._reader.read(min(size, self.remaining))
        if not part:
            self.exhausted = True
        self.remaining -= len(part)
        return part


def _with_target_options(args: dict, into_directory: str | None, overwrite: bool) -> dict:
    """write_file's args plus the target options that differ from the node's defaults."""
    if into_directory is not None:
        args["into_directory"] = into_directory
    if not overwrite:
        args["overwrite"] = False
    return args


class Client:
    """A connection to one SandStore cluster. Not thread-safe: use one Client per thread.

    node=ID pins every call to that node (no failover), for debugging and tests.
    timeout_seconds is the default deadline of each call (config.request_timeout_seconds).
    unreachable_seconds: if set, a call that could not connect to any node for that long fails
    with Unavailable at once instead of retrying until its deadline (the CLI uses this so that
    "no cluster running" is reported quickly; programs riding out a restart leave it unset).
    """

    def __init__(
        self,
        config: ClusterConfig,
        *,
        node: str | None = None,
        timeout_seconds: float | None = None,
        client_id: str | None = None,
        attempt_timeout_seconds: float = ATTEMPT_TIMEOUT_SECONDS,
        unreachable_seconds: float | None = None,
    ) -> None:
        assert unreachable_seconds is None or unreachable_seconds > 0
        self.unreachable_seconds = unreachable_seconds
        if node is not None:
            config.node(node)  # raises ConfigError naming the known ids
        self.config = config
        self.node = node
        self.timeout_seconds = config.request_timeout_seconds if timeout_seconds is None else timeout_seconds
        if self.timeout_seconds <= 0:
            raise BadRequest(f"timeout must be positive, got {self.timeout_seconds}")
        self.attempt_timeout_seconds = attempt_timeout_seconds
        self.client_id = client_id or "sandctl-" + secrets.token_hex(8)
        assert 0 < len(self.client_id.encode()) <= protocol.MAX_CLIENT_ID_BYTES
        self.leader: str | None = None  # last node that served a leader-only request
        # Client addresses by node id: the config's, plus members learned from status replies.
        self.addresses: dict[str, str] = {address.id: address.client for address in config.nodes}
        # Chunk addresses by node id, learned the same way.
        self.chunk_addresses: dict[str, str] = {address.id: address.chunk for address in config.nodes}
        self._context = zmq.Context()
        self._sockets: dict[str, zmq.Socket] = {}
        self._request_ids = itertools.count(1)
        self._seq = 0
        self._pending: dict[int, str] = {}  # request id -> node, for requests someone awaits
        self._replies: dict[int, dict] = {}  # replies that arrived while awaiting another id
        self._closed = False

    # ------------------------------------------------------------------ lifecycle

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for socket in self._sockets.values():
            socket.close(linger=0)
        self._sockets.clear()
        self._context.term()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # ------------------------------------------------------------------ the one request path

    def call(
        self,
        op: str,
        args: dict,
        *,
        write: bool = False,
        deadline_seconds: float | None = None,
        node: str | None = None,
    ) -> object:
        """Send one request and return its result, retrying as the module docstring says.

        write=True marks a call whose outcome can be unknown (implied for WRITE_OPS and
        ADMIN_OPS). node pins this call to one node (no failover); so does Client(node=...).
        """
        assert not self._closed, "call on a closed Client"
        if op not in protocol.OPS:
            raise BadRequest(f"unknown op {op!r}")
        args = dict(args)
        if op in protocol.WRITE_OPS:
            self._seq += 1  # once per call: every retry of this write reuses it
            args["client"] = self.client_id
            args["seq"] = self._seq
        write = write or op in protocol.WRITE_OPS or op in protocol.ADMIN_OPS
        # Validate here so a programming error fails fast instead of as a server reply.
        protocol.validate_request({"v": protocol.PROTOCOL_VERSION, "id": 1, "op": op, "args": args})
        pinned = node or self.node
        if pinned is not None and pinned not in self.addresses:
            self.config.node(pinned)  # raises ConfigError naming the known ids
        timeout_seconds = self.timeout_seconds if deadline_seconds is None else deadline_seconds
        deadline = time.monotonic() + timeout_seconds

        attempts: set[int] = set()  # every request id sent for this call
        unresolved: set[int] = set()  # sent writes with no answer saying "nothing changed"
        last_problem = "no node answered"
        backoff_seconds = BACKOFF_SECONDS_MIN
        redirect: str | None = None
        redirects_in_a_row = 0  # hints can chase each other during an election: bound that
        rotation = self._rotation(pinned)
        call_started = time.monotonic()
        connected_any = False
        try:
            while True:
                now = time.monotonic()
                if now >= deadline:
                    break
                target = redirect or next(rotation)
                redirect = None
                request_id = self._send(target, op, args, min(CONNECT_WAIT_SECONDS, deadline - now))
                if request_id is None:
                    last_problem = f"cannot connect to {target} ({self.addresses[target]})"
                    if (self.unreachable_seconds is not None and not connected_any
                            and time.monotonic() - call_started >= self.unreachable_seconds):
                        # Nothing was sent, so nothing changed: say so now rather than at the deadline.
                        raise Unavailable(self._unreachable_message(pinned))
                    self._sleep_until(deadline, backoff_seconds)
                    backoff_seconds = min(backoff_seconds * 2, BACKOFF_SECONDS_MAX)
                    continue
                connected_any = True
                attempts.add(request_id)
                if write:
                    unresolved.add(request_id)
                attempt_deadline = min(deadline, time.monotonic() + self.attempt_timeout_seconds)
                answer = self._await_attempt(request_id, attempts, unresolved, attempt_deadline)
                if answer is None:
                    last_problem = f"{target} did not answer within {self.attempt_timeout_seconds:g} s"
                    continue
                answered_id, reply = answer
                if reply.get("ok"):
                    if pinned is None:
                        self.leader = self._pending.get(answered_id, target)
                    return reply.get("result")
                error = reply.get("error") or {}
                code = str(error.get("code", "INTERNAL"))
                message = str(error.get("message", ""))
                hint = str(error.get("leader") or "")
                last_problem = f"{target}: {message or code}"
                if code not in _RETRY_NOTHING_CHANGED and code not in _RETRY_OUTCOME_UNKNOWN:
                    raise self._finish_error(reply)
                if code == "NOT_LEADER":
                    if pinned is not None:
                        raise NotLeader(f"{pinned} is not the leader" + (f" (the leader is {hint})" if hint else ""), hint)
                    if self.leader == target:
                        self.leader = None
                    if hint and hint != target and hint in self.addresses and redirects_in_a_row < len(self.addresses):
                        redirects_in_a_row += 1
                        redirect = hint
                        continue
                redirects_in_a_row = 0
                self._sleep_until(deadline, backoff_seconds)
                backoff_seconds = min(backoff_seconds * 2, BACKOFF_SECONDS_MAX)
        finally:
            for request_id in attempts:
                self._pending.pop(request_id, None)
                self._replies.pop(request_id, None)
        if unresolved:
            raise TimedOut(
                f"{op} got no answer within {timeout_seconds:g} s; it may or may not have been applied ({last_problem})"
            )
        if write:
            raise Unavailable(f"{op} was not applied: no leader answered within {timeout_seconds:g} s ({last_problem})")
        raise Unavailable(f"no node answered {op} within {timeout_seconds:g} s ({last_problem})")

    def _unreachable_message(self, pinned: str | None) -> str:
        names = [pinned] if pinned is not None else list(self.addresses)
        where = ", ".join(f"{name} ({self.addresses[name]})" for name in names)
        return (f"cannot connect to {where} for {self.unreachable_seconds:g} s: is the cluster running? "
                "(start it with `sandctl cluster start`)")

    def _rotation(self, pinned: str | None) -> Iterable[str]:
        """Targets in the order to try: the pinned node forever, or the last known leader
        first and then every known node in config order, round and round."""
        if pinned is not None:
            return itertools.repeat(pinned)

        def targets() -> Iterable[str]:
            if self.leader is not None:
                yield self.leader
            while True:
                yield from list(self.addresses)

        return iter(targets())

    def _await_attempt(
        self, request_id: int, attempts: set[int], unresolved: set[int], attempt_deadline: float
    ) -> tuple[int, dict] | None:
        """Wait for the current attempt's reply, or a success or final answer to an earlier
        attempt of the same call. Answers that say "nothing changed" for earlier attempts
        only clear their unresolved mark."""
        while True:
            answer = self._receive(attempts, attempt_deadline)
            if answer is None:
                return None
            answered_id, reply = answer
            code = "" if reply.get("ok") else str((reply.get("error") or {}).get("code", ""))
            if code in _RETRY_NOTHING_CHANGED:
                unresolved.discard(answered_id)
            if answered_id == request_id:
                return answer
            if reply.get("ok") or (code not in _RETRY_NOTHING_CHANGED and code not in _RETRY_OUTCOME_UNKNOWN):
                return answer
            # An old attempt's "try elsewhere": that attempt is over; keep waiting for ours.
            attempts.discard(answered_id)
            self._pending.pop(answered_id, None)

    def _finish_error(self, reply: dict) -> SandStoreError:
        error = reply.get("error") or {}
        return error_from_code(str(error.get("code", "INTERNAL")), str(error.get("message", "")), str(error.get("leader") or ""))

    # ------------------------------------------------------------------ sockets

    def _socket(self, node_id: str) -> zmq.Socket:
        socket = self._sockets.get(node_id)
        if socket is None:
            socket = self._context.socket(zmq.DEALER)
            socket.setsockopt(zmq.LINGER, 0)
            # IMMEDIATE: queue only to a live connection, so a request to a down node is never
            # sent (and delivered later, when it may be stale); "not sent" then proves "not applied".
            socket.setsockopt(zmq.IMMEDIATE, 1)
            socket.setsockopt(zmq.RECONNECT_IVL, RECONNECT_INTERVAL_MS)
            socket.setsockopt(zmq.RECONNECT_IVL_MAX, RECONNECT_INTERVAL_MS_MAX)
            socket.setsockopt(zmq.MAXMSGSIZE, self.config.max_frame_bytes)
            socket.connect("tcp://" + self.addresses[node_id])
            self._sockets[node_id] = socket
        return socket

    def _send(self, node_id: str, op: str, args: dict, connect_wait_seconds: float) -> int | None:
        """Send one request to node_id; None if no connection came up within the wait."""
        socket = self._socket(node_id)
        if not socket.poll(max(0, int(connect_wait_seconds * 1000)), zmq.POLLOUT):
            return None
        return self._send_now(node_id, socket, op, args)

    def _send_now(self, node_id: str, socket: zmq.Socket, op: str, args: dict) -> int | None:
        request_id = next(self._request_ids)
        try:
            socket.send(protocol.request(request_id, op, args), zmq.NOBLOCK)
        except zmq.Again:
            return None
        self._pending[request_id] = node_id
        return request_id

    def _receive(self, request_ids: set[int], deadline: float) -> tuple[int, dict] | None:
        """The first reply to any of request_ids, or None at the deadline."""
        while True:
            for request_id in request_ids:
                reply = self._replies.pop(request_id, None)
                if reply is not None:
                    return request_id, reply
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            nodes = {self._pending[request_id] for request_id in request_ids if request_id in self._pending}
            if not nodes:
                return None
            poller = zmq.Poller()
            for node_id in nodes:
                poller.register(self._socket(node_id), zmq.POLLIN)
            for socket, _ in poller.poll(max(1, int(remaining * 1000))):
                self._drain(socket)

    def _drain(self, socket: zmq.Socket) -> None:
        """Read every waiting reply; keep those someone awaits, drop the rest."""
        while True:
            try:
                frame = socket.recv(zmq.NOBLOCK)
            except zmq.Again:
                return
            try:
                reply = protocol.decode(frame, self.config.max_frame_bytes)
            except BadRequest:
                continue  # a garbled reply is treated like a lost one: the attempt times out
            if not isinstance(reply, dict):
                continue
            request_id = reply.get("id")
            if isinstance(request_id, int) and request_id in self._pending:
                self._replies[request_id] = reply

    @staticmethod
    def _sleep_until(deadline: float, seconds: float) -> None:
        time.sleep(max(0.0, min(seconds, deadline - time.monotonic())))

    # ------------------------------------------------------------------ many nodes at once

    def broadcast(
        self,
        op: str,
        args: dict,
        node_ids: Iterable[str] | None = None,
        *,
        timeout_seconds: float | None = None,
        until: Callable[[dict[str, object]], bool] | None = None,
    ) -> dict[str, object]:
        """Send a read-only op to several nodes at once (no retries, no failover).

        Returns {node: result, or the SandStoreError it replied, or None if it was silent}.
        Returns early when every node answered or until(answers so far) is true.
        """
        assert op in protocol.OPS and op not in protocol.WRITE_OPS, "writes need a session: use call()"
        node_ids = list(self.addresses if node_ids is None else node_ids)
        timeout_seconds = self.timeout_seconds if timeout_seconds is None else timeout_seconds
        deadline = time.monotonic() + timeout_seconds
        answers: dict[str, object] = {node_id: None for node_id in node_ids}
        unsent = set(node_ids)
        sent: dict[int, str] = {}
        try:
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                poller = zmq.Poller()
                for node_id in node_ids:
                    flags = (zmq.POLLOUT if node_id in unsent else 0) | (zmq.POLLIN if node_id in sent.values() else 0)
                    if flags:
                        poller.register(self._socket(node_id), flags)
                for socket, events in poller.poll(max(1, int(remaining * 1000))):
                    node_id = next(n for n, s in self._sockets.items() if s is socket)
                    if events & zmq.POLLOUT and node_id in unsent:
                        request_id = self._send_now(node_id, socket, op, args)
                        if request_id is not None:
                            unsent.discard(node_id)
                            sent[request_id] = node_id
                    if events & zmq.POLLIN:
                        self._drain(socket)
                for request_id in list(sent):
                    reply = self._replies.pop(request_id, None)
                    if reply is None:
                        continue
                    node_id = sent.pop(request_id)
                    self._pending.pop(request_id, None)
                    answers[node_id] = reply.get("result") if reply.get("ok") else self._finish_error(reply)
                if not unsent and not sent:
                    break
                if until is not None and until(answers):
                    break
        finally:
            for request_id in sent:
                self._pending.pop(request_id, None)
                self._replies.pop(request_id, None)
        return answers

    # ------------------------------------------------------------------ cluster state

    def status(self, node_id: str) -> dict:
        result = self.call("status", {}, node=node_id)
        self._learn_addresses(result)
        return result

    def status_all(self, timeout_seconds: float | None = None) -> dict[str, dict | None]:
        """Every known node's status; None for a node that did not answer in time."""
        if timeout_seconds is None:
            timeout_seconds = min(self.timeout_seconds, ATTEMPT_TIMEOUT_SECONDS)
        answers = self.broadcast("status", {}, timeout_seconds=timeout_seconds)
        statuses = {node_id: answer if isinstance(answer, dict) else None for node_id, answer in answers.items()}
        for answer in statuses.values():
            if answer is not None:
                self._learn_addresses(answer)
        return statuses

    def wait_for_leader(self, deadline_seconds: float | None = None, *, exclude: Iterable[str] = ()) -> str:
        """Poll every node's status until one reports itself leader; returns its id.

        exclude: ids not to accept (a leader that was just killed or asked to step down).
        Raises NoLeader if nodes answered but none led, Unavailable if none answered.
        """
        excluded = set(exclude)
        timeout_seconds = self.timeout_seconds if deadline_seconds is None else deadline_seconds
        deadline = time.monotonic() + timeout_seconds
        answered = False

        def leaders(answers: dict[str, object]) -> list[tuple[int, str]]:
            return [
                (answer.get("term", 0), node_id)
                for node_id, answer in answers.items()
                if isinstance(answer, dict) and answer.get("role") == "leader" and node_id not in excluded
            ]

        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            answers = self.broadcast(
                "status", {}, timeout_seconds=min(STATUS_ROUND_SECONDS_MAX, remaining),
                until=lambda so_far: bool(leaders(so_far)),
            )
            for answer in answers.values():
                if isinstance(answer, dict):
                    answered = True
                    self._learn_addresses(answer)
            found = leaders(answers)
            if found:
                self.leader = max(found)[1]  # the highest term wins over a deposed leader
                return self.leader
            self._sleep_until(deadline, LEADER_POLL_SECONDS)
        if answered:
            raise NoLeader(f"no leader was elected within {timeout_seconds:g} s")
        raise Unavailable(f"no node answered within {timeout_seconds:g} s")

    def _learn_addresses(self, status: dict) -> None:
        addresses = status.get("addresses")
        if not isinstance(addresses, dict):
            return
        for node_id, address in addresses.items():
            if not isinstance(address, dict):
                continue
            if node_id not in self.addresses and isinstance(address.get("client"), str):
                self.addresses[node_id] = address["client"]
            if node_id not in self.chunk_addresses and isinstance(address.get("chunk"), str):
                self.chunk_addresses[node_id] = address["chunk"]

    # ------------------------------------------------------------------ namespace

    def mkdir(self, path: str, parents: bool = False) -> dict:
        return self.call("mkdir", {"path": path, "parents": parents})

    def write_file(self, path: str, data: bytes, mode: int = 0o644, parents: bool = False, *,
                   into_directory: str | None = None, overwrite: bool = True) -> dict:
        """Store data as the file at path, inline (up to the config's inline_max_bytes; use
        put_file for content of any size); returns its stat, whose "path" is where it went.

        into_directory: a file name; if path is an existing directory, the file is written
        inside it under that name (decided by the write itself: one consensus round, no stat).
        overwrite=False refuses with AlreadyExists if the target exists."""
        if len(data) > self.config.inline_max_bytes:
            raise TooLarge(
                f"{path}: {len(data)} bytes exceed inline_max_bytes ({self.config.inline_max_bytes}); "
                "store larger content with put_file"
            )
        args = {"path": path, "data": bytes(data), "size": len(data), "mode": mode, "parents": parents}
        return self.call("write_file", _with_target_options(args, into_directory, overwrite))

    def stat(self, path: str, stale: bool = False) -> dict:
        return self.call("stat", {"path": path, "stale": stale})

    def ls(self, path: str, recursive: bool = False, stale: bool = False) -> list[dict]:
        return self.call("ls", {"path": path, "recursive": recursive, "stale": stale})

    def read(self, path: str, stale: bool = False) -> tuple[dict, bytes]:
        """(stat, content) of an inline file."""
        result = dict(self.call("read", {"path": path, "stale": stale}))
        data = result.pop("data", None)
        if data is None:
            raise TooLarge(f"{path} is stored in chunks; read it with get_file")
        return result, data

    # ------------------------------------------------------------------ files of any size

    def replication(self) -> int:
        """How many nodes each chunk is stored on: the config's, capped by the known nodes."""
        return min(self.config.replication, len(self.chunk_addresses))

    def put_file(
        self,
        path: str,
        reader: BinaryIO,
        *,
        size_hint: int | None = None,
        mode: int = 0o644,
        parents: bool = False,
        progress: Progress | None = None,
        into_directory: str | None = None,
        overwrite: bool = True,
    ) -> dict:
        """Store everything `reader` yields as the file at path; returns the file's stat.
        into_directory and overwrite as for write_file: both are decided by the one write that
        commits the file record, never by a stat before it.

        Input of at most inline_max_bytes (by size_hint, or by reading one byte more than that)
        is stored inline in the file record. Larger input is streamed in chunks of
        chunk_size_bytes to replication() nodes each, CHUNKS_IN_FLIGHT at a time (memory stays
        within a few chunks), and the file record is committed once every chunk is durable:
        readers see the old content or the new, never a mix. While fewer than replication()
        chunk nodes answer, the put waits, and at the deadline raises Unavailable with nothing
        visible (chunks already stored are orphans that garbage collection removes).
        """
        assert size_hint is None or size_hint >= 0
        inline_max_bytes = self.config.inline_max_bytes
        head = b""
        if size_hint is None or size_hint <= inline_max_bytes:
            head = transfer.read_up_to(reader, inline_max_bytes + 1)
            if len(head) <= inline_max_bytes:
                result = self.write_file(path, head, mode, parents, into_directory=into_directory, overwrite=overwrite)
                if progress is not None and head:
                    progress(len(head))
                return result
        if not overwrite:
            self._refuse_early_if_exists(path, into_directory)
        chunks, size_bytes = self._store_chunks(_PrefixedReader(head, reader) if head else reader, size_hint, progress)
        assert sum(chunk[1] for chunk in chunks) == size_bytes
        args = {"path": path, "chunks": chunks, "size": size_bytes, "mode": mode, "parents": parents}
        return self.call("write_file", _with_target_options(args, into_directory, overwrite))

    def _refuse_early_if_exists(self, path: str, into_directory: str | None) -> None:
        """Before streaming a large file that must not replace anything: AlreadyExists if the
        target exists now, so a refused put does not first upload every chunk. A stale read
        (no consensus round): the write's own overwrite check stays the one that decides."""
        try:
            info = self.stat(path, stale=True)
            if into_directory is not None and info.get("type") == "dir":
                path = path.rstrip("/") + "/" + into_directory
                info = self.stat(path, stale=True)
        except NotFound:
            return
        if info.get("type") != "dir":
            raise AlreadyExists(f"{path} already exists (not overwritten)")

    def _store_chunks(self, reader, size_hint: int | None, progress: Progress | None) -> tuple[list[list], int]:
        copies = self.replication()
        if size_hint is not None:
            return self._put_stream(reader, copies, size_hint, progress)
        segment_bytes = self.config.chunk_size_bytes * SEGMENT_CHUNKS_UNKNOWN_SIZE
        chunks: list[list] = []
        size_bytes = 0
        while True:
            segment = _LimitedReader(reader, segment_bytes)
            segment_chunks, segment_size_bytes = self._put_stream(segment, copies, segment_bytes, progress)
            chunks.extend(segment_chunks)
            size_bytes += segment_size_bytes
            if segment.exhausted or segment.remaining > 0:
                return chunks, size_bytes

    def _put_stream(self, reader, copies: int, size_bytes_expected: int,
                    progress: Progress | None) -> tuple[list[list], int]:
        reachable = self.wait_for_chunk_nodes(copies)
        return transfer.put_stream(
            {node_id: self.chunk_addresses[node_id] for node_id in reachable}, reader,
            chunk_size_bytes=self.config.chunk_size_bytes, replication=copies,
            deadline_seconds=self._transfer_deadline_seconds(size_bytes_expected),
            max_chunks_in_flight=CHUNKS_IN_FLIGHT, progress=progress, context=self._context,
            attempt_timeout_seconds=min(transfer.DEFAULT_ATTEMPT_TIMEOUT_SECONDS, self.timeout_seconds),
            max_frame_bytes=self.config.max_frame_bytes,
        )

    def get_file(self, path: str, writer: BinaryIO, *, progress: Progress | None = None, stale: bool = False) -> dict:
        """Write the file's content to `writer`; returns its stat. The record comes from a
        linearizable read; chunks are fetched in parallel, each verified against its id, and
        any failing replica (down, missing, corrupt) is replaced by the next one. Raises
        ChecksumMismatch / NotFound / Unavailable naming the chunk when no replica can serve it
        (the writer may then hold part of the content: write to a temporary file). stale=True
        takes the record from the contacted node's local state instead."""
        record = dict(self.call("read", {"path": path, "stale": stale}))
        data = record.pop("data", None)
        if data is not None:
            writer.write(data)
            if progress is not None and data:
                progress(len(data))
            return record
        chunks = record.get("chunks") or []
        replica_ids = {node_id for _chunk_id, _size, replicas in chunks for node_id in replicas}
        if not replica_ids <= set(self.chunk_addresses):
            self.status_all()  # a replica joined after the config was written: learn its address
        addresses = self.chunk_addresses
        if chunks:
            # Skip replicas that do not answer now (a dead node would cost an attempt timeout),
            # unless that would leave a chunk with none.
            reachable = self._probe_chunk_nodes(replica_ids & set(addresses), CHUNK_PROBE_ROUND_SECONDS)
            if all(reachable & set(replicas) for _chunk_id, _size, replicas in chunks):
                addresses = {node_id: addresses[node_id] for node_id in reachable}
        transfer.get_stream(
            addresses, chunks, writer, deadline_seconds=self._transfer_deadline_seconds(record.get("size", 0)),
            max_chunks_in_flight=CHUNKS_IN_FLIGHT, progress=progress, context=self._context,
            attempt_timeout_seconds=min(transfer.DEFAULT_ATTEMPT_TIMEOUT_SECONDS, self.timeout_seconds),
            max_frame_bytes=self.config.max_frame_bytes,
        )
        return record

    def _transfer_deadline_seconds(self, size_bytes: int) -> float:
        return self.timeout_seconds + size_bytes / TRANSFER_BYTES_PER_SECOND_MIN

    def wait_for_chunk_nodes(self, count: int, deadline_seconds: float | None = None) -> list[str]:
        """The ids of the chunk nodes that answer, once at least `count` do; Unavailable if
        fewer answer until the deadline (the client's timeout unless given)."""
        assert count >= 1
        timeout_seconds = self.timeout_seconds if deadline_seconds is None else deadline_seconds
        deadline = time.monotonic() + timeout_seconds
        backoff_seconds = BACKOFF_SECONDS_MIN
        while True:
            remaining = deadline - time.monotonic()
            reachable = self._probe_chunk_nodes(set(self.chunk_addresses),
                                                max(0.01, min(CHUNK_PROBE_ROUND_SECONDS, remaining)))
            if len(reachable) >= count:
                return sorted(reachable)
            if time.monotonic() + backoff_seconds >= deadline:
                down = sorted(set(self.chunk_addresses) - reachable)
                raise Unavailable(
                    f"only {len(reachable)} of {len(self.chunk_addresses)} nodes accept chunks (no answer from "
                    f"{', '.join(down)}) and each chunk needs {count} replicas; nothing was stored "
                    f"(waited {timeout_seconds:g} s)")
            self._sleep_until(deadline, backoff_seconds)
            backoff_seconds = min(backoff_seconds * 2, BACKOFF_SECONDS_MAX)

    def _probe_chunk_nodes(self, node_ids: set[str], round_seconds: float) -> set[str]:
        """The nodes among node_ids whose chunk service answers a no-op within round_seconds."""
        sockets: dict[zmq.Socket, str] = {}
        poller = zmq.Poller()
        answered: set[str] = set()
        try:
            for node_id in sorted(node_ids):
                socket = self._context.socket(zmq.DEALER)
                socket.setsockopt(zmq.LINGER, 0)
                socket.connect("tcp://" + self.chunk_addresses[node_id])
                socket.send(protocol.request(1, "chunk_has", {"ids": []}), zmq.NOBLOCK)
                sockets[socket] = node_id
                poller.register(socket, zmq.POLLIN)
            deadline = time.monotonic() + round_seconds
            while len(answered) < len(sockets):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                for socket, _ in poller.poll(max(1, int(remaining * 1000))):
                    try:
                        reply = protocol.decode(socket.recv(zmq.NOBLOCK), self.config.max_frame_bytes)
                    except (zmq.Again, BadRequest):
                        continue
                    if isinstance(reply, dict) and reply.get("ok") is True:
                        answered.add(sockets[socket])
                    poller.unregister(socket)
        finally:
            for socket in sockets:
                socket.close(linger=0)
        return answered

    def rm(self, path: str, recursive: bool = False) -> dict:
        return self.call("rm", {"path": path, "recursive": recursive})

    def mv(self, src: str, dst: str, *, overwrite: bool = True) -> dict:
        """Rename src to dst (into dst if it is a directory); overwrite=False refuses with
        AlreadyExists if the target exists."""
        return self.call("mv", {"src": src, "dst": dst} if overwrite else {"src": src, "dst": dst, "overwrite": False})

    def du(self, path: str) -> dict:
        return self.call("du", {"path": path})

    # ------------------------------------------------------------------ inspection and admin

    def inspect_log(self, node: str | None = None, from_index: int | None = None, limit: int | None = None) -> dict:
        """Raw log entries of one node (the leader's when node is None)."""
        return self.call("inspect_log", {"from_index": from_index, "limit": limit}, node=self._node_or_leader(node))

    def inspect_term(self, node: str | None = None) -> dict:
        return self.call("inspect_term", {}, node=self._node_or_leader(node))

    def add_learner(self, node: str, raft: str, client: str, chunk: str) -> dict:
        result = self.call("add_learner", {"node": node, "raft": raft, "client": client, "chunk": chunk})
        self.addresses.setdefault(node, client)
        return result

    def promote(self, node: str) -> dict:
        return self.call("promote", {"node": node})

    def remove_node(self, node: str) -> dict:
        return self.call("remove_node", {"node": node})

    def transfer_leader(self, node: str | None = None) -> dict:
        return self.call("transfer_leader", {"node": node})

    def snapshot(self, node: str | None = None) -> dict:
        """Snapshot and compact one node's log (the leader's when node is None)."""
        return self.call("snapshot", {}, node=self._node_or_leader(node))

    def gc(self, node: str | None = None, dry_run: bool = False, grace_seconds: float | None = None) -> dict:
        """Collect one node's unreferenced chunks (every node has its own chunk store)."""
        return self.call("gc", {"dry_run": dry_run, "grace_seconds": grace_seconds}, node=self._node_or_leader(node))

    def _node_or_leader(self, node: str | None) -> str:
        # These ops are answered by whichever node receives them, so "the leader" must be
        # looked up rather than found by redirects.
        if node is not None:
            return node
        return self.node if self.node is not None else self.wait_for_leader()
