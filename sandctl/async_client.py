"""An asyncio client beside the blocking `Client`: many requests in flight on one DEALER per node.

Same wire engine (sandctl/connection.py: socket options, request ids, reply parsing), same
failover decisions (sandctl/failover.py: CallPlan and LeaderTracker), so the two clients retry
alike and raise the same named errors. The sockets live on the process's one ZeroMQ context
(an asyncio shadow of shared_context()).

Sessions: a write carries (client id, seq), and the state machine refuses a seq below the last
one it applied for that client id. Writes in flight at once may be applied in any order, so
each gets a session of its own from a pool: a session is lent to one write at a time (its
retries reuse its seq) and returned when the write is over, so the pool grows to the number of
writes ever in flight at once.

Use one AsyncClient per event loop, from that loop only.
"""

from __future__ import annotations

import asyncio
import math
import secrets
import time
from collections.abc import Coroutine
from dataclasses import dataclass

from collections import deque

import msgpack
import zmq
import zmq.backend

from node import protocol
from node.config import ClusterConfig
from node.errors import BadRequest, SandStoreError, TooLarge

from node.security import ClientSecurity

from sandctl.client import client_security
from sandctl.connection import (RECEIVE_BATCH_MAX, Reply, SocketOptions, connect_dealer, parse_reply, receive_rest,
                                shared_context)
from sandctl.failover import ATTEMPT_TIMEOUT_SECONDS, LEADER_CONFIRMATION_SECONDS, CallPlan, LeaderTracker

SESSIONS_MAX = 4096  # writes in flight at once per AsyncClient
CONNECT_POLL_SECONDS = 0.005  # how often a request waiting for a connection looks again
# The deadline sweep runs at most this often: a first attempt's timeout is noticed up to this
# late. Swept at each earliest deadline instead, the timer fired once every request or two:
# a timer and a loop round per request, most of a 1-outstanding request's client CPU.
SWEEP_INTERVAL_SECONDS = 0.01
# Plain ints: testing zmq.EVENTS against pyzmq's enum flags runs enum code on every request.
_POLLIN = int(zmq.POLLIN)
_POLLOUT = int(zmq.POLLOUT)
_EVENTS = int(zmq.EVENTS)
_NOBLOCK = int(zmq.NOBLOCK)
# zmq_poll with no wait reads a socket's events without pyzmq's getsockopt, which looks its
# option up in an enum on every call (about twice the cost).
_zmq_poll = zmq.zmq_poll


class _NotSent:
    __slots__ = ()


NOT_SENT = _NotSent()  # a queued first attempt that could not be sent (immediate socket: nothing queued)
_unpackb = msgpack.unpackb
# pyzmq's Socket.send is a Python wrapper (routing ids, groups) around the extension's send.
_send = zmq.backend.Socket.send
_Future = asyncio.Future
_monotonic = time.monotonic

# What a call needs to know of its op: (schema, carries a write session, counts as a write).
_OP_KINDS: dict[str, tuple] = {
    op: (schema, op in protocol.WRITE_OPS, op in protocol.WRITE_OPS or op in protocol.ADMIN_OPS)
    for op, schema in protocol.OPS.items()
}


def new_event_loop() -> asyncio.AbstractEventLoop:
    """uvloop's event loop when it is installed, else asyncio's default one. uvloop runs the
    loop's own work (ready callbacks, timers, reader callbacks) in C: about a sixth of a
    small request's client instructions at 1 outstanding. The client runs on either."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def run(main: Coroutine):
    """asyncio.run(main) on new_event_loop() (the bench's load runs on it)."""
    loop = new_event_loop()
    try:
        asyncio.set_event_loop(loop)
        return loop.run_until_complete(main)
    finally:
        try:
            _cancel_all_tasks(loop)
            loop.run_until_complete(loop.shutdown_asyncgens())
        finally:
            asyncio.set_event_loop(None)
            loop.close()


def _cancel_all_tasks(loop: asyncio.AbstractEventLoop) -> None:
    """What asyncio.run does with the tasks main left running: cancel them and let them end."""
    tasks = [task for task in asyncio.all_tasks(loop) if not task.done()]
    for task in tasks:
        task.cancel()
    if tasks:
        loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))


@dataclass
class _Session:
    client_id: str
    seq: int = 0


class _Replies:
    """The replies of one call's attempts, as they arrive, and a wait for the next one."""

    __slots__ = ("arrived", "_waiter")

    def __init__(self) -> None:
        self.arrived: deque[Reply] = deque()
        self._waiter: asyncio.Future | None = None

    def put(self, reply: Reply) -> None:
        self.arrived.append(reply)
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def next(self, timeout_seconds: float) -> Reply | None:
        """The next reply, or None after timeout_seconds (a timer, not a task per wait)."""
        if not self.arrived:
            loop = asyncio.get_running_loop()
            self._waiter = loop.create_future()
            timer = loop.call_later(timeout_seconds, _wake, self._waiter)
            try:
                await self._waiter
            finally:
                timer.cancel()
                self._waiter = None
        return self.arrived.popleft() if self.arrived else None


# What a first attempt's future holds when the call did not succeed at once; anything else is
# a success's result (decoded msgpack: never one of these types).
_NOT_RESULTS = frozenset({Reply, _Replies, _NotSent})


def _parse_reply_map(node: str, message: object, frame_bytes_max: int) -> Reply | None:
    """parse_reply for one decoded reply map (alone in its frame, or one of a batch): the rare
    path of error replies, so packed again rather than checked a second way."""
    try:
        frame = msgpack.packb(message, use_bin_type=True)
    except Exception:  # noqa: BLE001 -- whatever msgpack decoded packs again; garbage is None
        return None
    return parse_reply(node, [frame], frame_bytes_max)


def _wake(waiter: asyncio.Future) -> None:
    if not waiter.done():
        waiter.set_result(None)


class _AsyncConnections:
    """One DEALER per node, read from the event loop: the socket's file descriptor is watched
    with loop.add_reader and every reply waiting is read at once and handed to the call that
    waits for it (by node and request id). Plain sockets rather than zmq.asyncio's: those make
    a future per message sent and received, several times the CPU per request of the blocking
    engine. ZeroMQ's descriptor is edge-triggered, so a socket is also drained after a send
    (a send can consume the edge of a reply that arrived meanwhile): once per loop round, after
    all of that round's sends, not once per send.

    A call's first attempt is queued (queue_first) and a loop round's queued requests are sent
    in one batch frame (protocol.py, Batches), then the socket drained once: ZeroMQ's I/O
    threads and the node's loop then wake once for a batch rather than once per request, which
    is most of a small request's CPU, and the node answers them in batch frames as well (read
    back by _drain as they come). Its waiter is a future,
    resolved with the result of a success, with a Reply for anything else that came back, with
    NOT_SENT if the send was refused (no connection: nothing was queued), or at its deadline
    with a _Replies that collects a late answer. The later attempts of a call that needed
    failover are sent at once (request) and wait on a _Replies.

    Deadlines: first attempts still unanswered are kept in one insertion-ordered map (request
    -> deadline), which an answer leaves; one timer, armed for the earliest deadline in flight
    (at most every SWEEP_INTERVAL_SECONDS), sweeps it. No timer and no heap entry per request:
    under load the earliest deadline is about an attempt timeout away, so a sweep runs about
    once per attempt timeout and looks only at the requests then in flight."""

    def __init__(self, addresses: dict[str, str], options: SocketOptions) -> None:
        assert options.immediate, "failover relies on unsent meaning unapplied"
        self.addresses = addresses
        self.options = options
        self._context = shared_context()
        self.loop = asyncio.get_running_loop()
        self._sockets: dict[str, zmq.Socket] = {}
        self._poll_items: dict[str, list] = {}  # node -> [(its socket, POLLIN)], for _zmq_poll
        self._waiting: dict[tuple[str, int], asyncio.Future | _Replies] = {}
        self._next_request_id = 1
        self._drains_due: set[str] = set()  # nodes whose socket is drained this loop round
        self._outbox: dict[str, list[tuple[int, bytes]]] = {}  # node -> first attempts not sent yet
        # (node, request id) -> deadline (time.monotonic) of the first attempts not answered yet.
        self._first_deadlines: dict[tuple[str, int], float] = {}
        self._sweep_timer: asyncio.TimerHandle | None = None
        self._sweep_at = math.inf  # when the timer fires (inf: not armed)
        # One Packer for the loop's thread: msgpack.packb builds one (and its buffer) per call.
        self._pack = msgpack.Packer(use_bin_type=True).pack
        self._batch_bytes_max = protocol.batch_bytes_max(options.frame_bytes_max)
        # node -> the most requests it takes in one batch frame, once it said it takes them
        # (protocol.py, Batches); first attempts to a node not in it go one per frame.
        self._batch_counts_max: dict[str, int] = {}

    def _socket(self, node: str) -> zmq.Socket:
        socket = self._sockets.get(node)
        if socket is None:
            socket = self._context.socket(zmq.DEALER)
            connect_dealer(socket, self.addresses[node], self.options, node)
            self._sockets[node] = socket
            self._poll_items[node] = [(socket, _POLLIN)]
            self.loop.add_reader(socket.getsockopt(zmq.FD), self._drain, node, socket)
        return socket

    def _encode(self, request_id: int, op: str, args: dict) -> bytes:
        """protocol.request's frame, packed by this loop's Packer."""
        return self._pack({"v": protocol.PROTOCOL_VERSION, "id": request_id, "op": op, "args": args})

    def send(self, node: str, op: str, args: dict) -> int | None:
        """Send op to node if its connection is up and has room; the request id, or None
        (immediate sockets: nothing was queued). The caller registers a waiter before it awaits."""
        socket = self._socket(node)
        request_id = self._next_request_id
        try:
            _send(socket, self._encode(request_id, op, args), _NOBLOCK)
        except zmq.Again:
            return None
        self._next_request_id += 1
        if node not in self._drains_due:
            self._drains_due.add(node)
            self.loop.call_soon(self._due_drain, node, socket)
        return request_id

    def queue_first(self, node: str, op: str, args: dict, future: asyncio.Future, deadline: float) -> int:
        """Queue a call's first attempt for this loop round's send to node; its request id.
        future gets the result or a Reply, NOT_SENT, or at `deadline` (time.monotonic) a
        _Replies that the request's late answer will be put on."""
        request_id = self._next_request_id
        self._next_request_id = request_id + 1
        outbox = self._outbox.get(node)
        if outbox is None:
            outbox = self._outbox[node] = []
            self.loop.call_soon(self._flush, node)
        # _encode, inline (the hot path: a Python call costs about as much as the packing).
        outbox.append((request_id, self._pack({"v": protocol.PROTOCOL_VERSION, "id": request_id, "op": op,
                                                "args": args})))
        key = (node, request_id)
        self._waiting[key] = future
        self._first_deadlines[key] = deadline
        if deadline < self._sweep_at:  # the first, or a shorter deadline than those in flight
            if self._sweep_timer is not None:
                self._sweep_timer.cancel()
            self._sweep_at = deadline
            self._sweep_timer = self.loop.call_at(deadline, self._sweep)
        return request_id

    async def request(self, node: str, op: str, args: dict, replies: _Replies,
                      connect_wait_seconds: float) -> int | None:
        """Send op to node; its reply will be put on `replies`. None if no connection came up
        within connect_wait_seconds (immediate sockets: nothing was queued)."""
        request_id = self.send(node, op, args)
        if request_id is None:
            if not await self._writable(self._socket(node), connect_wait_seconds):
                return None
            request_id = self.send(node, op, args)
            if request_id is None:
                return None
        self._waiting[(node, request_id)] = replies
        return request_id

    @staticmethod
    async def _writable(socket: zmq.Socket, wait_seconds: float) -> bool:
        """Wait for a connection to come up (the rare path: a node just started or is down)."""
        deadline = time.monotonic() + wait_seconds
        while not socket.getsockopt(_EVENTS) & _POLLOUT:
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(CONNECT_POLL_SECONDS)
        return True

    def forget(self, node: str, request_id: int) -> None:
        self._waiting.pop((node, request_id), None)
        self._first_deadlines.pop((node, request_id), None)

    def _sweep(self) -> None:
        """Resolve the first attempts whose deadline has come; arm the timer for the next."""
        self._sweep_timer = None
        self._sweep_at = math.inf
        deadlines = self._first_deadlines
        if not deadlines:
            return  # the next queue_first arms it again
        now = time.monotonic()
        waiting = self._waiting
        for key in [key for key, deadline in deadlines.items() if deadline <= now]:
            del deadlines[key]
            future = waiting.get(key)
            if type(future) is not _Replies and future is not None and not future.done():
                late = _Replies()
                waiting[key] = late
                future.set_result(late)
        if deadlines:
            self._sweep_at = max(min(deadlines.values()), now + SWEEP_INTERVAL_SECONDS)
            self._sweep_timer = self.loop.call_at(self._sweep_at, self._sweep)

    def _flush(self, node: str) -> None:
        """Send node's queued first attempts in batch frames (protocol.py, Batches; a request
        too large for one alone, as a map), then read what has come."""
        outbox = self._outbox.pop(node, None)
        if not outbox:
            return  # closed meanwhile, or queued ahead by _drain and nobody sent
        socket = self._socket(node)
        count_max = self._batch_counts_max.get(node)
        if count_max is None or len(outbox) == 1:
            # Not known to take batches: one request per frame. A lone request (every round at
            # one request outstanding) goes as its map too: a batch of one costs the array's
            # building here and the node's batch handling, and its reply comes alone either way.
            self._send_each(node, socket, outbox)
            return
        bytes_max = self._batch_bytes_max
        first = 0  # the outbox position of the run's first request
        for run in protocol.batch_runs([frame for _, frame in outbox], bytes_max, count_max):
            try:
                _send(socket, run[0] if len(run[0]) > bytes_max else protocol.batch_frame(run), _NOBLOCK)
            except zmq.Again:
                # Not sent, so not queued (immediate socket): not one of the run can be applied.
                for request_id, _ in outbox[first:first + len(run)]:
                    self._first_deadlines.pop((node, request_id), None)
                    future = self._waiting.pop((node, request_id), None)
                    if future is not None and not future.done():
                        future.set_result(NOT_SENT)
            first += len(run)
        self._drain(node, socket)

    def _send_each(self, node: str, socket: zmq.Socket, outbox: list[tuple[int, bytes]]) -> None:
        for request_id, frame in outbox:
            try:
                _send(socket, frame, _NOBLOCK)
            except zmq.Again:
                self._first_deadlines.pop((node, request_id), None)
                future = self._waiting.pop((node, request_id), None)
                if future is not None and not future.done():
                    future.set_result(NOT_SENT)
        self._drain(node, socket)

    def _learn_batches(self, node: str, count_max: object) -> None:
        """A node said it takes batch frames of up to count_max requests (never more than ours)."""
        if type(count_max) is int and count_max >= 1:
            self._batch_counts_max[node] = min(count_max, protocol.REQUESTS_PER_FRAME_MAX)

    def _due_drain(self, node: str, socket: zmq.Socket) -> None:
        self._drains_due.discard(node)
        self._drain(node, socket)

    def _drain(self, node: str, socket: zmq.Socket) -> None:
        # An events check per message: cheaper than the zmq.Again a refused recv raises.
        # A one-frame reply map or batch of them (nearly every reply) is unpacked here and a
        # success's result handed to a first attempt's future as it is; anything else goes
        # through parse_reply. Inline, because a Python call costs about as much as the rest
        # of a reply's handling.
        if socket.closed:
            return
        frame_bytes_max = self.options.frame_bytes_max
        waiting = self._waiting
        first_deadlines = self._first_deadlines
        poll_items = self._poll_items[node]
        recv = socket.recv
        answered = False
        learning = node not in self._batch_counts_max  # whether it said it takes batches
        for _ in range(RECEIVE_BATCH_MAX):
            if not _zmq_poll(poll_items, 0):
                break
            frame = recv(_NOBLOCK, copy=False)
            if frame.more:
                reply = parse_reply(node, receive_rest(socket, frame), frame_bytes_max)
                if reply is None:
                    continue  # malformed: its request times out
                messages = (reply,)
            else:
                buffer = frame.buffer
                try:
                    if len(buffer) > frame_bytes_max:
                        raise ValueError
                    decoded = _unpackb(buffer)  # raw=False, strict_map_key=True: msgpack 1.0's defaults
                except Exception:  # noqa: BLE001 -- msgpack raises several types for garbage
                    continue  # its request times out
                messages = decoded if type(decoded) is list else (decoded,)  # a batch, or one reply
            for message in messages:
                reply = message if type(message) is Reply else None
                if reply is not None:
                    request_id = reply.request_id
                else:
                    try:
                        request_id = message["id"]
                        if message["ok"] is not True or type(request_id) is not int:
                            raise ValueError
                        result = message["result"]
                        if learning and "batches" in message:
                            self._learn_batches(node, message["batches"])
                            learning = False
                    except Exception:  # noqa: BLE001 -- an error reply, or garbage
                        reply = _parse_reply_map(node, message, frame_bytes_max)
                        if reply is None:
                            continue  # malformed: its request times out
                        request_id = reply.request_id
                key = (node, request_id)
                waiter = waiting.pop(key, None)
                if waiter is None:
                    continue  # forgotten: its call is over
                if type(waiter) is _Replies:
                    waiter.put(reply if reply is not None else Reply(node, request_id, True, result))
                elif not waiter.done():
                    first_deadlines.pop(key, None)
                    waiter.set_result(reply if reply is not None else result)
                    answered = True
        else:
            # More are waiting: read them on the next loop round, so one socket cannot starve the loop.
            if node not in self._drains_due:
                self._drains_due.add(node)
                self.loop.call_soon(self._due_drain, node, socket)
        if answered and node not in self._outbox:
            # The calls just answered resume on the next loop round and most send their next
            # request to this node: a flush queued now, after their wake-ups, runs in that same
            # round and sends them (queued by queue_first into this outbox). Queued by their
            # queue_first instead, it would run a round later: one loop round more per request.
            self._outbox[node] = []
            self.loop.call_soon(self._flush, node)

    def close(self) -> None:
        self._outbox.clear()
        if self._sweep_timer is not None:
            self._sweep_timer.cancel()
            self._sweep_timer = None
            self._sweep_at = math.inf
        for socket in self._sockets.values():
            self.loop.remove_reader(socket.getsockopt(zmq.FD))
            socket.close(linger=0)
        self._sockets.clear()
        self._poll_items.clear()
        self._waiting.clear()
        self._first_deadlines.clear()


class AsyncClient:
    """The asyncio counterpart of sandctl.client.Client (namespace and status calls)."""

    def __init__(self, config: ClusterConfig, *, timeout_seconds: float | None = None, client_id: str | None = None,
                 attempt_timeout_seconds: float = ATTEMPT_TIMEOUT_SECONDS,
                 unreachable_seconds: float | None = None, security: ClientSecurity | None = None) -> None:
        """security: the key to present (default: sandctl.client.client_security(config))."""
        self.config = config
        self.security = security or client_security(config)
        self.timeout_seconds = config.request_timeout_seconds if timeout_seconds is None else timeout_seconds
        if self.timeout_seconds <= 0:
            raise BadRequest(f"timeout must be positive, got {self.timeout_seconds}")
        self.client_id = client_id or "sandctl-" + secrets.token_hex(8)
        self.attempt_timeout_seconds = attempt_timeout_seconds
        self.unreachable_seconds = unreachable_seconds
        self.addresses: dict[str, str] = {address.id: address.client for address in config.nodes}
        self._connections: _AsyncConnections | None = None  # made in the event loop, on first use
        self._tracker = LeaderTracker(self.addresses)
        self._free_sessions: list[_Session] = []
        self._sessions_made = 0
        self._probing = False
        self._background: set[asyncio.Task] = set()

    @property
    def leader(self) -> str | None:
        """The node believed to lead; setting it (e.g. from a blocking Client's wait_for_leader)
        sends the next calls there first."""
        return self._tracker.leader

    @leader.setter
    def leader(self, node: str | None) -> None:
        self._tracker.set_leader(node, confirmed=node is not None)

    async def close(self) -> None:
        for task in self._background:
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        if self._connections is not None:
            self._connections.close()

    async def __aenter__(self) -> "AsyncClient":
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # ----- the one request path

    async def call(self, op: str, args: dict, *, write: bool = False, deadline_seconds: float | None = None,
                   node: str | None = None) -> object:
        """As Client.call: one request with failover; the result or the named error.

        The fast path: send to the pinned node or the believed leader at once and await one
        future (no plan, no timer of its own). Anything but a success from that first attempt
        goes on in _drive with a CallPlan told about the attempt, so failover is unchanged."""
        kind = _OP_KINDS.get(op)
        if kind is None:
            raise BadRequest(f"unknown op {op!r}")
        schema, carries_session, counts_as_write = kind
        if node is not None and node not in self.addresses:
            self.config.node(node)  # raises ConfigError naming the known ids
        # What validate_request checks of a request this client builds: only the args can be
        # wrong (validate_args returns a copy: the caller's dict is never changed, and retries
        # send this copy; a call like one seen valid before costs it one lookup).
        session = None
        if carries_session:
            session = self._free_sessions.pop() if self._free_sessions else self._new_session()
            session.seq += 1  # once per call: every retry of this write reuses it
            checked = protocol.validate_args(op, {**args, "client": session.client_id, "seq": session.seq}, schema)
        else:
            checked = protocol.validate_args(op, args, schema)
        try:
            timeout_seconds = self.timeout_seconds if deadline_seconds is None else deadline_seconds
            connections = self._connections
            if connections is None:
                connections = self._connections = _AsyncConnections(
                    self.addresses, SocketOptions(self.config.frame_bytes_max, immediate=True, security=self.security))
            started = _monotonic()
            tracker = self._tracker
            target = node if node is not None else tracker.leader
            outcome, request_id = NOT_SENT, 0
            if target is not None and timeout_seconds > 0:
                future = _Future(loop=connections.loop)
                attempt_seconds = self.attempt_timeout_seconds
                request_id = connections.queue_first(
                    target, op, checked, future,
                    started + (timeout_seconds if timeout_seconds < attempt_seconds else attempt_seconds))
                try:
                    outcome = await future
                except BaseException:
                    connections.forget(target, request_id)
                    raise
                if type(outcome) not in _NOT_RESULTS:  # the result of a one-frame success
                    # Not the leader, or no longer confirmed as leader: served_by decides
                    # whether to ask the serving node who leads.
                    if node is None and (target != tracker.leader or _monotonic() >= tracker.confirmed_until) \
                            and tracker.served_by(target, started) and not self._probing:
                        self._start_probe(target)
                    return outcome
                if type(outcome) is Reply and outcome.ok:  # a success with a content frame
                    return outcome.result
            return await self._failover(op, checked, write or counts_as_write, timeout_seconds, node, started,
                                        target, request_id, outcome)
        finally:
            if session is not None:
                self._free_sessions.append(session)

    async def _failover(self, op: str, args: dict, write: bool, timeout_seconds: float, pinned: str | None,
                        started: float, target: str | None, request_id: int, outcome: object) -> object:
        """The rest of a call whose fast first attempt to `target` did not succeed: outcome is
        NOT_SENT (or no target was known), the _Replies of a timed-out attempt, or an error Reply."""
        if outcome is NOT_SENT:  # the plan waits for a connection, or finds a node to ask
            plan = CallPlan(self._tracker, op, write=write, timeout_seconds=timeout_seconds, pinned=pinned,
                            attempt_timeout_seconds=self.attempt_timeout_seconds,
                            unreachable_seconds=self.unreachable_seconds, started=started)
            return await self._drive(plan, op, args, _Replies())
        plan = CallPlan(self._tracker, op, write=write, timeout_seconds=timeout_seconds, pinned=pinned,
                        attempt_timeout_seconds=self.attempt_timeout_seconds,
                        unreachable_seconds=self.unreachable_seconds, started=started, first_target=target)
        if type(outcome) is _Replies:  # the attempt's deadline came; a late answer still counts
            plan.sent(target, request_id)
            plan.timed_out(target)
            return await self._drive(plan, op, args, outcome)
        plan.sent(target, request_id)
        assert plan.on_reply(outcome), "the current attempt's answer is always acted on"
        return await self._drive(plan, op, args, _Replies(), first_answer=outcome)

    async def _drive(self, plan: CallPlan, op: str, args: dict, replies: _Replies,
                     first_answer: Reply | None = None) -> object:
        """The failover loop (every attempt after a first one that failed, or the first when
        the fast path could not send it); first_answer: that first attempt's error reply."""
        try:
            if first_answer is not None:
                await asyncio.sleep(plan.backoff_until_deadline(plan.answered(first_answer)))
            while plan.time_left() > 0:
                target = plan.next_target()
                request_id = await self._connections.request(target, op, args, replies, plan.connect_wait_seconds(target))
                if request_id is None:
                    await asyncio.sleep(plan.backoff_until_deadline(plan.not_sent(target)))
                    continue
                plan.sent(target, request_id)
                reply = await self._await_attempt(plan, replies)
                if reply is None:
                    plan.timed_out(target)
                    continue
                if reply.ok:
                    if plan.succeeded(reply) and not self._probing:
                        self._start_probe(reply.node)
                    return reply.result
                await asyncio.sleep(plan.backoff_until_deadline(plan.answered(reply)))
        finally:
            for node, request_id in plan.attempts:
                self._connections.forget(node, request_id)
        raise plan.failure()

    @staticmethod
    async def _await_attempt(plan: CallPlan, replies: _Replies) -> Reply | None:
        attempt_deadline = plan.attempt_deadline()
        while True:
            remaining = attempt_deadline - time.monotonic()
            if remaining <= 0:
                return None
            reply = await replies.next(remaining)
            if reply is not None and plan.on_reply(reply):
                return reply

    def _new_session(self) -> _Session:
        """A session for a write when every one made so far is lent out."""
        assert self._sessions_made < SESSIONS_MAX, f"more than {SESSIONS_MAX} writes in flight"
        self._sessions_made += 1
        return _Session(f"{self.client_id}-{self._sessions_made}")

    def _start_probe(self, node: str) -> None:
        """Ask a node that served a call but is not known to lead who leads, in the background."""
        self._probing = True
        task = asyncio.get_running_loop().create_task(self._probe(node))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _probe(self, node: str) -> None:
        try:
            status = await self.call("status", {}, node=node, deadline_seconds=LEADER_CONFIRMATION_SECONDS)
        except SandStoreError:
            return
        finally:
            self._probing = False
        self._tracker.on_status(node, status)

    # ----- namespace and status

    async def status(self, node: str) -> dict:
        return await self.call("status", {}, node=node)

    async def mkdir(self, path: str, parents: bool = False) -> dict:
        return await self.call("mkdir", {"path": path, "parents": parents})

    async def write_file(self, path: str, data: bytes, mode: int = 0o644, parents: bool = False, *,
                         into_directory: str | None = None, overwrite: bool = True) -> dict:
        """As Client.write_file: inline content up to the config's inline_bytes_max."""
        if len(data) > self.config.inline_bytes_max:
            raise TooLarge(f"{path}: {len(data)} bytes exceed inline_bytes_max ({self.config.inline_bytes_max})")
        args = {"path": path, "data": bytes(data), "size": len(data), "mode": mode, "parents": parents}
        if into_directory is not None:
            args["into_directory"] = into_directory
        if not overwrite:
            args["overwrite"] = False
        return await self.call("write_file", args)

    async def stat(self, path: str, stale: bool = False, node: str | None = None) -> dict:
        return await self.call("stat", {"path": path, "stale": stale}, node=node)

    async def ls(self, path: str, recursive: bool = False, stale: bool = False) -> list[dict]:
        return await self.call("ls", {"path": path, "recursive": recursive, "stale": stale})

    async def read(self, path: str, stale: bool = False, node: str | None = None) -> tuple[dict, bytes]:
        """(stat, content) of an inline file; node pins the read to one node (a stale read
        there is served from that node's own state)."""
        result = await self.call("read", {"path": path, "stale": stale}, node=node)
        # Unpacked for this call alone: changed in place, not copied.
        result = result if type(result) is dict else dict(result)
        data = result.pop("data", None)
        if data is None:
            raise TooLarge(f"{path} is stored in chunks; read it with Client.get_file")
        return result, data

    async def rm(self, path: str, recursive: bool = False) -> dict:
        return await self.call("rm", {"path": path, "recursive": recursive})

    async def mv(self, src: str, dst: str, *, overwrite: bool = True) -> dict:
        return await self.call("mv", {"src": src, "dst": dst} if overwrite else {"src": src, "dst": dst,
                                                                                 "overwrite": False})
