"""The benchmark's concurrent load: `outstanding` requests in flight through the asyncio client.

The blocking `sandctl.client.Client` waits for each reply before sending the next request, which
would make the benchmark measure the client's round trips instead of the cluster. Here one event
loop runs `outstanding` lanes, each awaiting one AsyncClient call at a time, so exactly what a
program using sandctl's asyncio API runs is measured: the same engine, failover and retries,
each write in a session of its own (sandctl/async_client.py).

A lane asks make_operation(lane) for its next call; a call that raises a named error counts by
its code (an unanswered one ends with the client's TimedOut or Unavailable at the request
timeout), and on_result sees every success, to check the bytes a read returned.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from node.config import ClusterConfig
from node.errors import SandStoreError

from sandctl.async_client import AsyncClient, run
from sandctl.bench_stats import CpuMeter

REQUEST_TIMEOUT_SECONDS_DEFAULT = 5.0
OUTSTANDING_MAX = 4096


@dataclass
class Lane:
    """One outstanding-request slot."""

    index: int
    requests_completed: int = 0
    # What make_operation left for on_result about the call under way (a read's path), so an
    # operation can be the client's own coroutine rather than one more wrapped around it.
    under_way: object = None


@dataclass
class LoadResult:
    latencies_seconds: list[float] = field(default_factory=list)
    errors_by_code: Counter = field(default_factory=Counter)
    elapsed_seconds: float = 0.0
    client_cpu_percent: float = 0.0
    host_steal_percent: float | None = None  # sandctl.bench_stats.steal_percent
    node_figures: dict = field(default_factory=dict)  # sandctl.bench_nodes.step_figures, set by the caller

    @property
    def operations(self) -> int:
        return len(self.latencies_seconds)

    @property
    def errors(self) -> int:
        return sum(self.errors_by_code.values())


Operation = Callable[[AsyncClient], Awaitable[object]]
# make_operation(lane) -> the lane's next call, or None when the lane has nothing more to do.
OperationMaker = Callable[[Lane], "Operation | None"]
# on_result(lane, result): every successful call's result.
ResultHandler = Callable[[Lane, object], None]


def run_load(config: ClusterConfig, make_operation: OperationMaker, *, outstanding: int, duration_seconds: float,
             on_result: ResultHandler | None = None, requests_max: int | None = None,
             request_timeout_seconds: float = REQUEST_TIMEOUT_SECONDS_DEFAULT, leader: str | None = None) -> LoadResult:
    """Keep every lane busy until duration_seconds have passed (or make_operation returns None
    for every lane, or requests_max were started); calls under way then finish (each within
    its request timeout). leader: the node known to lead, asked first."""
    assert 1 <= outstanding <= OUTSTANDING_MAX
    assert duration_seconds > 0 and request_timeout_seconds > 0
    return run(_run(config, make_operation, outstanding, duration_seconds, on_result, requests_max,
                    request_timeout_seconds, leader))


async def _run(config: ClusterConfig, make_operation: OperationMaker, outstanding: int, duration_seconds: float,
               on_result: ResultHandler | None, requests_max: int | None,
               request_timeout_seconds: float, leader: str | None) -> LoadResult:
    result = LoadResult()
    started_requests = [0]
    async with AsyncClient(config, timeout_seconds=request_timeout_seconds) as client:
        client.leader = leader
        meter = CpuMeter().start()
        send_until = meter.wall_started + duration_seconds
        last_completion = [meter.wall_started]

        latencies_seconds = result.latencies_seconds
        monotonic = time.monotonic

        async def lane_loop(lane: Lane) -> None:
            # Two clock reads per call: the end of one is the loop's check before the next.
            now = monotonic()
            while now < send_until and (requests_max is None or started_requests[0] < requests_max):
                operation = make_operation(lane)
                if operation is None:
                    return
                started_requests[0] += 1
                sent_at = monotonic()
                try:
                    answer = await operation(client)
                except SandStoreError as error:
                    now = monotonic()
                    result.errors_by_code[error.code] += 1
                else:
                    now = monotonic()
                    latencies_seconds.append(now - sent_at)
                    if on_result is not None:
                        on_result(lane, answer)
                lane.requests_completed += 1
                last_completion[0] = now

        await asyncio.gather(*(lane_loop(Lane(index)) for index in range(outstanding)))
        meter.stop()
    result.elapsed_seconds = max(last_completion[0] - meter.wall_started, 1e-9)
    result.client_cpu_percent = meter.cpu_percent
    result.host_steal_percent = meter.host_steal_percent
    return result
