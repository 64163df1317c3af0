"""A pipelined load generator: many requests in flight on each non-blocking DEALER socket.

`sandctl.client.Client` waits for each reply before sending the next request, which would
make the benchmark measure the client's round trips instead of the cluster. Here one thread
keeps `outstanding` requests in flight, matched to replies by request id.

Each outstanding slot is a Lane with its own client id and seq counter: the state machine
treats a write whose seq is below its client's last seq as stale, and replies may be applied
in any order across slots, so slots must never share a session. Within a lane there is at
most one write in flight, so its seqs reach the leader in order.
"""

from __future__ import annotations

import secrets
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field

import zmq

from node import protocol
from node.errors import BadRequest
from sandctl.bench_stats import CpuMeter

# An unanswered request frees its lane after this long and counts as an error, so one lost
# reply cannot stall a lane for the rest of the run.
REQUEST_TIMEOUT_SECONDS_DEFAULT = 5.0
# After the run's duration, in-flight requests get this long to finish before being dropped.
DRAIN_SECONDS_MAX = 10.0
# Frames read from one socket per poll round: bounded so one busy socket cannot starve sending.
RECEIVE_BATCH_MAX = 1000
SOCKET_HIGH_WATER_MARK = 100_000
OUTSTANDING_MAX = 4096
CLIENT_TIMEOUT_CODE = "CLIENT_TIMEOUT"

assert RECEIVE_BATCH_MAX >= 1


@dataclass
class Lane:
    """One outstanding-request slot: its own write session and its own socket."""

    index: int
    client_id: str
    socket_index: int
    seq: int = 0
    requests_completed: int = 0


@dataclass
class LoadResult:
    latencies_seconds: list[float] = field(default_factory=list)
    errors_by_code: Counter = field(default_factory=Counter)
    elapsed_seconds: float = 0.0
    client_cpu_percent: float = 0.0

    @property
    def operations(self) -> int:
        return len(self.latencies_seconds)

    @property
    def errors(self) -> int:
        return sum(self.errors_by_code.values())


# make_request(lane) -> (op, args), or None when the lane has nothing more to send.
RequestMaker = Callable[[Lane], "tuple[str, dict] | None"]
# on_reply(lane, op, args, reply): every reply (ok or not); reply is the decoded map.
ReplyHandler = Callable[[Lane, str, dict, dict], None]


@dataclass
class _InFlight:
    lane: Lane
    op: str
    args: dict
    sent_at: float


class PipelinedLoad:
    """Drive `outstanding` lanes over one DEALER socket per endpoint (lanes spread round-robin)."""

    def __init__(self, endpoints: list[str], *, max_frame_bytes: int,
                 request_timeout_seconds: float = REQUEST_TIMEOUT_SECONDS_DEFAULT,
                 client_prefix: str = "bench") -> None:
        assert endpoints, "at least one endpoint"
        assert request_timeout_seconds > 0
        self.endpoints = list(endpoints)
        self.max_frame_bytes = max_frame_bytes
        self.request_timeout_seconds = request_timeout_seconds
        self.client_prefix = client_prefix + "-" + secrets.token_hex(4)
        self._context = zmq.Context()
        self._sockets: list[zmq.Socket] = []
        for endpoint in self.endpoints:
            socket = self._context.socket(zmq.DEALER)
            socket.setsockopt(zmq.LINGER, 0)
            socket.setsockopt(zmq.SNDHWM, SOCKET_HIGH_WATER_MARK)
            socket.setsockopt(zmq.RCVHWM, SOCKET_HIGH_WATER_MARK)
            socket.setsockopt(zmq.MAXMSGSIZE, max_frame_bytes)
            socket.connect(endpoint)
            self._sockets.append(socket)
        self._next_request_id = 1
        self._lanes_created = 0

    def close(self) -> None:
        for socket in self._sockets:
            socket.close(linger=0)
        self._context.term()

    def __enter__(self) -> "PipelinedLoad":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def lanes(self, count: int) -> list[Lane]:
        """Fresh lanes with never-used client ids (a new session per lane and per run)."""
        assert 1 <= count <= OUTSTANDING_MAX
        lanes = []
        for _ in range(count):
            index = self._lanes_created
            self._lanes_created += 1
            lanes.append(Lane(index, f"{self.client_prefix}-{index}", index % len(self._sockets)))
        return lanes

    def run(self, make_request: RequestMaker, *, outstanding: int, duration_seconds: float,
            on_reply: ReplyHandler | None = None, max_requests: int | None = None) -> LoadResult:
        """Keep every lane busy until duration_seconds have passed (or make_request returns
        None for every lane, or max_requests were sent), then wait for the stragglers."""
        assert duration_seconds > 0
        result = LoadResult()
        idle: deque[Lane] = deque(self.lanes(outstanding))
        in_flight: dict[int, _InFlight] = {}
        requests_sent = 0
        meter = CpuMeter().start()
        started = meter.wall_started
        send_until = started + duration_seconds
        drain_until = send_until + DRAIN_SECONDS_MAX
        last_completion = started
        poller = zmq.Poller()
        for socket in self._sockets:
            poller.register(socket, zmq.POLLIN)
        while True:
            now = time.monotonic()
            sending = now < send_until and (max_requests is None or requests_sent < max_requests)
            while sending and idle:
                lane = idle.popleft()
                made = make_request(lane)
                if made is None:
                    continue  # this lane is finished; it stays out of the idle queue
                op, args = made
                if op in protocol.WRITE_OPS:
                    lane.seq += 1
                    args = {**args, "client": lane.client_id, "seq": lane.seq}
                request_id = self._next_request_id
                self._next_request_id += 1
                # NOBLOCK with a huge high-water mark: a send never blocks this loop.
                self._sockets[lane.socket_index].send(protocol.request(request_id, op, args), zmq.NOBLOCK)
                in_flight[request_id] = _InFlight(lane, op, args, time.monotonic())
                requests_sent += 1
                if max_requests is not None and requests_sent >= max_requests:
                    break
            if not in_flight and (not sending or not idle):
                break
            if now >= drain_until:
                break
            wait_until = min(send_until if sending else drain_until,
                             min(item.sent_at for item in in_flight.values()) + self.request_timeout_seconds
                             if in_flight else drain_until)
            timeout_ms = max(0.0, (wait_until - time.monotonic()) * 1000.0)
            for socket, _ in poller.poll(timeout=max(1, int(timeout_ms)) if timeout_ms > 0 else 0):
                for _ in range(RECEIVE_BATCH_MAX):
                    try:
                        frame = socket.recv(zmq.NOBLOCK)
                    except zmq.Again:
                        break
                    received_at = time.monotonic()
                    try:
                        reply = protocol.decode(frame, self.max_frame_bytes)
                    except BadRequest:
                        continue  # a garbled reply is a lost one: its request times out
                    if not isinstance(reply, dict):
                        continue
                    item = in_flight.pop(reply.get("id"), None)
                    if item is None:
                        continue  # a reply to a request we already timed out
                    last_completion = received_at
                    item.lane.requests_completed += 1
                    if reply.get("ok"):
                        result.latencies_seconds.append(received_at - item.sent_at)
                    else:
                        result.errors_by_code[str((reply.get("error") or {}).get("code", "INTERNAL"))] += 1
                    if on_reply is not None:
                        on_reply(item.lane, item.op, item.args, reply)
                    idle.append(item.lane)
            self._expire(in_flight, idle, result, time.monotonic())
        for item in in_flight.values():  # still unanswered when the drain ended
            result.errors_by_code[CLIENT_TIMEOUT_CODE] += 1
        meter.stop()
        result.elapsed_seconds = max(last_completion - started, 1e-9)
        result.client_cpu_percent = meter.cpu_percent
        return result

    def _expire(self, in_flight: dict[int, _InFlight], idle: deque[Lane], result: LoadResult, now: float) -> None:
        expired = [rid for rid, item in in_flight.items() if now - item.sent_at >= self.request_timeout_seconds]
        for request_id in expired:
            item = in_flight.pop(request_id)
            result.errors_by_code[CLIENT_TIMEOUT_CODE] += 1
            idle.append(item.lane)
