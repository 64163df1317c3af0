"""The one request engine of the client side: every request any sandctl code sends to a node
(metadata calls, chunk transfers, the benchmark's load) goes through `Connections`.

Connections owns one DEALER per node, opened on first use, and the request ids: a request is
pending from its send until its reply arrives or its sender forgets it, and a reply is matched
by (node, request id), so a late reply to an abandoned request is dropped and one request (a
chunk_put with its content frame) may be sent to several nodes. Any number of requests may be
in flight on a socket; poll() returns replies in arrival order, already parsed into `Reply`.

Every blocking client of a process shares one ZeroMQ context (shared_context): a context owns
I/O threads, and a context per client object cost a core under many clients. Sockets stay per
Connections, so two Clients never read each other's replies.

The failover policy for metadata calls (which node to ask, leader hints, retries) is
sandctl/failover.py; the chunk transfer's replica policy is sandctl/transfer.py.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import NamedTuple

import zmq
import zmq.backend

from node import protocol
from node.errors import SandStoreError, error_from_code
from node.security import ClientSecurity, HandshakeWatch
from node.transport.address import connect_socket

RECONNECT_INTERVAL_MS = 50
RECONNECT_INTERVAL_MS_MAX = 500
HIGH_WATER_MESSAGES_DEFAULT = 1000
# Frames read from one socket per poll round: one busy socket cannot starve the caller's sends.
RECEIVE_BATCH_MAX = 1000

assert RECONNECT_INTERVAL_MS <= RECONNECT_INTERVAL_MS_MAX
assert RECEIVE_BATCH_MAX >= 1

# The per-request path of the blocking client avoids what costs several times the work itself:
# a recv on an empty socket raises zmq.Again (whose __init__ imports and formats a message), so
# zmq_poll with no wait asks first; Socket.poll builds a Poller and runs enum code; and
# send_multipart and recv_multipart loop in Python with flag enums around the backend's calls.
_zmq_poll = zmq.zmq_poll
_backend_send = zmq.backend.Socket.send
_POLLIN = int(zmq.POLLIN)
_POLLOUT = int(zmq.POLLOUT)
_NOBLOCK = int(zmq.NOBLOCK)
assert issubclass(zmq.Socket, zmq.backend.Socket)


def receive_rest(socket: zmq.Socket, frame: zmq.Frame, copy: bool = False) -> list:
    """The frames of a message whose first frame is `frame` (received with copy=False): their
    buffers, or bytes copies if `copy`. Frame.more instead of recv_multipart's
    getsockopt(RCVMORE) per frame, which runs enum code."""
    frames = [frame.bytes if copy else frame.buffer]
    while frame.more:
        frame = socket.recv(_NOBLOCK, copy=False)
        frames.append(frame.bytes if copy else frame.buffer)
    return frames


def shared_context() -> zmq.Context:
    """The process's one ZeroMQ context (a new one after fork). Never terminated by a client."""
    return zmq.Context.instance()


class Reply(NamedTuple):
    """A well-formed reply. ok: result holds the result (and content the raw frame that followed
    the reply map, for chunk_get). Not ok: error is the named exception rebuilt from its code."""

    node: str
    request_id: int
    ok: bool
    result: object = None
    error: SandStoreError | None = None
    content: memoryview | None = None

    @property
    def code(self) -> str:
        """The error's wire code, "" for a success."""
        return "" if self.ok else self.error.code


@dataclass(frozen=True)
class SocketOptions:
    """How the DEALERs of one Connections behave.

    immediate: queue a request only on a live connection. A request to a down node then fails
    to send instead of being delivered later, when it may be stale: "not sent" proves "not
    applied" (the metadata client relies on it).
    zero_copy: receive frames without copying them (a chunk_get's content is handed on as a
    memoryview of the received frame); small replies are cheaper copied.
    security: the keys the DEALERs present and expect of each node (CurveZMQ, or the cluster
    id in plain-text mode). None connects unauthenticated: every node refuses that, so only
    tests of a bare ChunkService (which authorizes nothing) leave it out.
    """

    frame_bytes_max: int
    immediate: bool = False
    zero_copy: bool = False
    send_high_water_messages: int = HIGH_WATER_MESSAGES_DEFAULT
    receive_high_water_messages: int = HIGH_WATER_MESSAGES_DEFAULT
    security: ClientSecurity | None = None


class Connections:
    """One DEALER per node of `addresses` (node id -> host:port; the mapping is read on each
    first use, so a caller may add members it learns). Not thread-safe: one owner thread."""

    def __init__(self, addresses: Mapping[str, str], options: SocketOptions,
                 context: zmq.Context | None = None) -> None:
        self.addresses = addresses
        self.options = options
        self._context = context or shared_context()
        self._sockets: dict[str, zmq.Socket] = {}
        self._node_of_socket: dict[zmq.Socket, str] = {}
        self._watches: dict[str, HandshakeWatch] = {}  # why a node refused our handshake
        self._node_of_monitor: dict[zmq.Socket, str] = {}  # each watch's monitor, polled beside the DEALERs
        self._lost: set[str] = set()  # nodes whose connection closed since take_lost()
        self._poller = zmq.Poller()
        self._wakeup: zmq.Socket | None = None
        self._next_request_id = 1
        self._pending: set[tuple[str, int]] = set()
        self._closed = False

    # ----- sockets

    def socket(self, node: str) -> zmq.Socket:
        socket = self._sockets.get(node)
        if socket is None:
            assert not self._closed, "Connections used after close"
            socket = self._context.socket(zmq.DEALER)
            watch = connect_dealer(socket, self.addresses[node], self.options, node, watch=True)
            if watch is not None:
                self._watches[node] = watch
                self._node_of_monitor[watch.monitor] = node
                self._poller.register(watch.monitor, zmq.POLLIN)
            self._sockets[node] = socket
            self._node_of_socket[socket] = node
            self._poller.register(socket, zmq.POLLIN)
        return socket

    def add_wakeup(self, socket: zmq.Socket) -> None:
        """Also return from poll() when `socket` has messages (they are read and dropped)."""
        assert self._wakeup is None
        self._wakeup = socket
        self._poller.register(socket, zmq.POLLIN)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for watch in self._watches.values():
            watch.close()
        self._watches.clear()
        self._node_of_monitor.clear()
        for socket in self._sockets.values():
            socket.close(linger=0)
        self._sockets.clear()
        self._node_of_socket.clear()
        self._pending.clear()

    def refusal(self) -> str | None:
        """Why a node refused our handshake, if one did (a key of another cluster, a revoked
        key, a node of another security mode): one line, for an Unavailable error."""
        for node in sorted(self._watches):
            reason = self._watches[node].refusal()
            if reason is not None:
                return reason
        return None

    def take_lost(self) -> set[str]:
        """Nodes whose connection closed since the last call: a request pending there will
        get no reply (a killed node's kernel closes its connections at
        once), so its sender need not wait out the attempt timeout."""
        # Events not polled yet (a caller about to send): one zmq_poll says which monitors have
        # any; draining each (usually empty) monitor ended in a zmq.Again, twice per call.
        if self._node_of_monitor:
            for monitor, _ in _zmq_poll([(monitor, _POLLIN) for monitor in self._node_of_monitor], 0):
                self._note_monitor(monitor)
        if not self._lost:
            return set()
        lost, self._lost = self._lost, set()
        return lost

    def _note_monitor(self, monitor: zmq.Socket) -> None:
        node = self._node_of_monitor[monitor]
        if self._watches[node].take_disconnects():
            self._lost.add(node)

    # ----- requests

    def new_request(self, op: str, args: dict) -> tuple[int, bytes]:
        """(request id, encoded request map), not sent yet: send() it to one node or several."""
        request_id = self._next_request_id
        self._next_request_id += 1
        return request_id, protocol.request(request_id, op, args)

    def send(self, node: str, request_id: int, frames: list, connect_wait_seconds: float = 0.0) -> bool:
        """Send one request's frames to node; it is pending there until its reply or forget().
        False when it could not be queued: with immediate sockets, no connection came up within
        connect_wait_seconds; otherwise the node's queue is full."""
        socket = self.socket(node)
        if connect_wait_seconds > 0 and self.options.immediate and not _zmq_poll([(socket, _POLLOUT)], 0):
            # Not writable yet (no connection up): wait for one, up to connect_wait_seconds.
            if not socket.poll(math.ceil(connect_wait_seconds * 1000), zmq.POLLOUT):
                return False
        try:
            if len(frames) == 1:  # a metadata request: one frame, small (copied either way)
                _backend_send(socket, frames[0], _NOBLOCK)
            else:
                # copy=False: ZeroMQ references a chunk's content instead of copying it (small
                # frames are copied anyway). The high-water mark is checked on the first frame only.
                socket.send_multipart(frames, zmq.NOBLOCK, copy=False)
        except zmq.Again:
            return False
        self._pending.add((node, request_id))
        return True

    def request(self, node: str, op: str, args: dict, connect_wait_seconds: float = 0.0) -> int | None:
        """new_request + send to one node: the request id, or None if it was not sent."""
        request_id, frame = self.new_request(op, args)
        return request_id if self.send(node, request_id, [frame], connect_wait_seconds) else None

    def forget(self, node: str, request_id: int) -> None:
        """Stop waiting for this request: a reply that still comes is dropped."""
        self._pending.discard((node, request_id))

    def is_pending(self, node: str, request_id: int) -> bool:
        return (node, request_id) in self._pending

    @property
    def pending_count(self) -> int:
        return len(self._pending)

    # ----- replies

    def poll(self, timeout_seconds: float) -> list[Reply]:
        """Replies to pending requests that arrived within the timeout (returns as soon as any
        socket is readable). Frames that are not a well-formed reply are dropped: their request
        stays pending until its sender's own timeout."""
        replies: list[Reply] = []
        # Rounded up: pyzmq truncates float milliseconds, which would busy-loop the last one.
        for socket, _ in self._poller.poll(timeout=math.ceil(max(0.0, timeout_seconds) * 1000)):
            if socket is self._wakeup:
                _drain(socket)
                continue
            if socket in self._node_of_monitor:
                self._note_monitor(socket)
                continue
            self._receive(socket, replies)
        return replies

    def _receive(self, socket: zmq.Socket, replies: list[Reply]) -> None:
        node = self._node_of_socket[socket]
        copy = not self.options.zero_copy
        poll_items = [(socket, _POLLIN)]
        recv = socket.recv
        for received in range(RECEIVE_BATCH_MAX):
            # The poll said the first is there; after it, ask before each recv (see _zmq_poll).
            if received and not _zmq_poll(poll_items, 0):
                return
            try:
                frame = recv(_NOBLOCK, copy=False)
            except zmq.Again:  # (edge-triggered readiness may report a socket with nothing left)
                return
            reply = parse_reply(node, receive_rest(socket, frame, copy), self.options.frame_bytes_max)
            if reply is not None and (node, reply.request_id) in self._pending:
                self._pending.discard((node, reply.request_id))
                replies.append(reply)

    # ----- many nodes at once

    def broadcast(self, nodes: Iterable[str], op: str, args: dict, timeout_seconds: float,
                  until: Callable[[dict[str, object]], bool] | None = None) -> dict[str, object]:
        """Send one request to each node as soon as its connection is up (no retries).
        Returns {node: result, or the SandStoreError it replied, or None if it was silent}, early
        once every node answered or until(answers so far) is true."""
        nodes = list(nodes)
        deadline = time.monotonic() + timeout_seconds
        answers: dict[str, object] = {node: None for node in nodes}
        unsent = list(nodes)
        sent: dict[str, int] = {}
        try:
            while unsent or sent:
                for node in list(unsent):
                    request_id = self.request(node, op, args)
                    if request_id is not None:
                        unsent.remove(node)
                        sent[node] = request_id
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                for reply in self._poll_for_broadcast(unsent, remaining):
                    if sent.get(reply.node) == reply.request_id:
                        del sent[reply.node]
                        answers[reply.node] = reply.result if reply.ok else reply.error
                if until is not None and until(answers):
                    break
        finally:
            for node, request_id in sent.items():
                self.forget(node, request_id)
        return answers

    def _poll_for_broadcast(self, unsent: list[str], timeout_seconds: float) -> list[Reply]:
        """poll(), also returning (with no replies) when a connection of `unsent` comes up."""
        if not unsent:
            return self.poll(timeout_seconds)
        for node in unsent:
            self._poller.modify(self.socket(node), zmq.POLLIN | zmq.POLLOUT)
        try:
            replies: list[Reply] = []
            for socket, events in self._poller.poll(timeout=math.ceil(timeout_seconds * 1000)):
                if socket is self._wakeup:
                    _drain(socket)
                elif socket in self._node_of_monitor:
                    self._note_monitor(socket)
                elif events & zmq.POLLIN:
                    self._receive(socket, replies)
            return replies
        finally:
            for node in unsent:
                self._poller.modify(self._sockets[node], zmq.POLLIN)


def connect_dealer(socket: zmq.Socket, address: str, options: SocketOptions, node_id: str, *,
                   watch: bool = False) -> HandshakeWatch | None:
    """Set a new DEALER's options and connect it to node `node_id` at "host:port" (bracketed
    IPv6 literals too). The one place client sockets are set up: with options.security, the
    DEALER presents the client's key and accepts only the holder of `node_id`'s key. watch:
    also return a HandshakeWatch that can say why a node refused (close it before the socket)."""
    socket.setsockopt(zmq.LINGER, 0)
    socket.setsockopt(zmq.IMMEDIATE, 1 if options.immediate else 0)
    socket.setsockopt(zmq.RECONNECT_IVL, RECONNECT_INTERVAL_MS)
    socket.setsockopt(zmq.RECONNECT_IVL_MAX, RECONNECT_INTERVAL_MS_MAX)
    socket.setsockopt(zmq.CONNECT_TIMEOUT, RECONNECT_INTERVAL_MS_MAX)  # a SYN lost in a partition is retried soon, not after the kernel's backoff (seconds past the heal)
    socket.setsockopt(zmq.TCP_MAXRT, 4 * RECONNECT_INTERVAL_MS_MAX)  # unacknowledged for 2 s (a partition): reconnect, instead of waiting out TCP's retransmission backoff after the heal
    socket.setsockopt(zmq.SNDHWM, options.send_high_water_messages)
    socket.setsockopt(zmq.RCVHWM, options.receive_high_water_messages)
    # A reply map plus at most one content frame, each up to frame_bytes_max.
    socket.setsockopt(zmq.MAXMSGSIZE, 2 * options.frame_bytes_max)
    handshake_watch = None
    if options.security is not None:
        options.security.configure_dealer(socket, node_id)
        if watch:
            handshake_watch = options.security.watch(socket, node_id, address)
    connect_socket(socket, address)
    return handshake_watch


def parse_reply(node: str, frames: list, frame_bytes_max: int) -> Reply | None:
    """A reply map, and for a success optionally one content frame after it; None for anything
    malformed (a node's bug or garbage must not crash the client)."""
    if len(frames) not in (1, 2):
        return None
    try:
        reply = protocol.decode(frames[0], frame_bytes_max)
    except SandStoreError:
        return None
    if not isinstance(reply, dict):
        return None
    request_id = reply.get("id")
    if type(request_id) is not int:
        return None
    if reply.get("ok") is True and "result" in reply:
        content = frames[1] if len(frames) == 2 else None
        return Reply(node, request_id, True, reply["result"], None,
                     memoryview(content) if content is not None else None)
    error = reply.get("error")
    if reply.get("ok") is False and isinstance(error, dict) and len(frames) == 1:
        code, message, leader = error.get("code"), error.get("message"), error.get("leader") or ""
        if isinstance(code, str) and isinstance(message, str) and isinstance(leader, str):
            return Reply(node, request_id, False, None, error_from_code(code, message, leader))
    return None


def _drain(socket: zmq.Socket) -> None:
    while True:
        try:
            socket.recv(zmq.NOBLOCK)
        except zmq.Again:
            return
