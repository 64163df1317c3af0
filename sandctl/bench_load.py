"""A pipelined load generator: many requests in flight on each socket of the client request engine.

`sandctl.client.Client` waits for each reply before sending the next request, which would
make the benchmark measure the client's round trips instead of the cluster. Here one thread
keeps `outstanding` requests in flight through the same engine the Client uses
(sandctl/connection.py: sockets, request ids, reply parsing), matched to replies by request id.

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

from node import protocol

from sandctl.bench_stats import CpuMeter
from sandctl.connection import Connections, Reply, SocketOptions

# An unanswered request frees its lane after this long and counts as an error, so one lost
# reply cannot stall a lane for the rest of the run.
REQUEST_TIMEOUT_SECONDS_DEFAULT = 5.0
# After the run's duration, in-flight requests get this long to finish before being dropped.
DRAIN_SECONDS_MAX = 10.0
SOCKET_HIGH_WATER_MARK = 100_000  # far above OUTSTANDING_MAX: a send never finds a full queue
OUTSTANDING_MAX = 4096
CLIENT_TIMEOUT_CODE = "CLIENT_TIMEOUT"
CLIENT_QUEUE_FULL_CODE = "CLIENT_QUEUE_FULL"

assert OUTSTANDING_MAX < SOCKET_HIGH_WATER_MARK


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
# on_reply(lane, op, args, reply): every reply (ok or not), as the engine parsed it.
ReplyHandler = Callable[[Lane, str, dict, Reply], None]


@dataclass
class _InFlight:
    lane: Lane
    op: str
    args: dict
    sent_at: float


class PipelinedLoad:
    """Drive `outstanding` lanes over one socket per endpoint (lanes spread round-robin)."""

    def __init__(self, endpoints: list[str], *, max_frame_bytes: int,
                 request_timeout_seconds: float = REQUEST_TIMEOUT_SECONDS_DEFAULT,
                 client_prefix: str = "bench") -> None:
        assert endpoints, "at least one endpoint"
        assert request_timeout_seconds > 0
        self.endpoints = list(endpoints)
        self.request_timeout_seconds = request_timeout_seconds
        self.client_prefix = client_prefix + "-" + secrets.token_hex(4)
        self._nodes = [f"endpoint-{number}" for number in range(len(self.endpoints))]
        options = SocketOptions(max_frame_bytes=max_frame_bytes, send_high_water_messages=SOCKET_HIGH_WATER_MARK,
                                receive_high_water_messages=SOCKET_HIGH_WATER_MARK)
        self._connections = Connections(dict(zip(self._nodes, self.endpoints)), options)
        for node in self._nodes:
            self._connections.socket(node)  # connect every endpoint now, not on the first request
        self._lanes_created = 0

    def close(self) -> None:
        self._connections.close()

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
            lanes.append(Lane(index, f"{self.client_prefix}-{index}", index % len(self._nodes)))
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
        while True:
            now = time.monotonic()
            sending = now < send_until and (max_requests is None or requests_sent < max_requests)
            while sending and idle:
                if max_requests is not None and requests_sent >= max_requests:
                    break
                lane = idle.popleft()
                made = make_request(lane)
                if made is None:
                    continue  # this lane is finished; it stays out of the idle queue
                requests_sent += 1
                self._send(lane, *made, in_flight, idle, result)
            if not in_flight and (not sending or not idle):
                break
            if now >= drain_until:
                break
            wait_until = min(send_until if sending else drain_until,
                             min(item.sent_at for item in in_flight.values()) + self.request_timeout_seconds
                             if in_flight else drain_until)
            for reply in self._connections.poll(wait_until - time.monotonic()):
                received_at = time.monotonic()
                item = in_flight.pop(reply.request_id)
                last_completion = received_at
                item.lane.requests_completed += 1
                if reply.ok:
                    result.latencies_seconds.append(received_at - item.sent_at)
                else:
                    result.errors_by_code[reply.code] += 1
                if on_reply is not None:
                    on_reply(item.lane, item.op, item.args, reply)
                idle.append(item.lane)
            self._expire(in_flight, idle, result, time.monotonic())
        for request_id, item in in_flight.items():  # still unanswered when the drain ended
            result.errors_by_code[CLIENT_TIMEOUT_CODE] += 1
            self._connections.forget(self._nodes[item.lane.socket_index], request_id)
        meter.stop()
        result.elapsed_seconds = max(last_completion - started, 1e-9)
        result.client_cpu_percent = meter.cpu_percent
        return result

    def _send(self, lane: Lane, op: str, args: dict, in_flight: dict[int, _InFlight], idle: deque[Lane],
              result: LoadResult) -> None:
        if op in protocol.WRITE_OPS:
            lane.seq += 1
            args = {**args, "client": lane.client_id, "seq": lane.seq}
        request_id = self._connections.request(self._nodes[lane.socket_index], op, args)
        if request_id is None:  # cannot happen below the high-water mark; counted, not hidden
            result.errors_by_code[CLIENT_QUEUE_FULL_CODE] += 1
            idle.append(lane)
            return
        in_flight[request_id] = _InFlight(lane, op, args, time.monotonic())

    def _expire(self, in_flight: dict[int, _InFlight], idle: deque[Lane], result: LoadResult, now: float) -> None:
        expired = [rid for rid, item in in_flight.items() if now - item.sent_at >= self.request_timeout_seconds]
        for request_id in expired:
            item = in_flight.pop(request_id)
            self._connections.forget(self._nodes[item.lane.socket_index], request_id)
            result.errors_by_code[CLIENT_TIMEOUT_CODE] += 1
            idle.append(item.lane)
