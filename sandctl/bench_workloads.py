"""The small-request workloads of `sandctl bench`: write, read and small.

Each workload returns report rows (plain dicts, JSON-ready). Every row names its workload,
mode and outstanding requests, the counts, the rate, the latency percentiles and the client's
own CPU use, so a saturated load generator is visible next to the figure it limits.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable
from dataclasses import dataclass

from node.config import ClusterConfig

from sandctl.bench_nodes import sample_nodes, step_figures
from sandctl.bench_load import Lane, LoadResult, Operation, ResultHandler, run_load
from sandctl.bench_stats import latency_summary_ms, rate_per_second
from sandctl.client import Client

WRITE_FILE_BYTES = 100
SMALL_FILE_BYTES = 4096
SMALL_OUTSTANDING = 16
READ_FILE_COUNT = 256  # the existing files the read workload picks from
WRITE_CONCURRENCY_DEFAULT = (1, 16, 64)
READ_CONCURRENCY_DEFAULT = (1, 16)
MISMATCH_CODE = "CONTENT_MISMATCH"  # a read that returned other bytes than were written


@dataclass
class BenchContext:
    """What every workload needs: the cluster, a Client for setup, and this run's directory."""

    config: ClusterConfig
    client: Client
    root: str  # e.g. /bench/20250101T120000-ab12cd: every file of this run lives below it
    duration_seconds: float
    request_timeout_seconds: float

    def load(self, make_operation, *, outstanding: int, duration_seconds: float,
             on_result: ResultHandler | None = None, requests_max: int | None = None) -> LoadResult:
        """Run concurrent calls through the asyncio client (sandctl/bench_load.py), once a
        leader is known, so a step does not start in the middle of an election."""
        leader = self.client.wait_for_leader(self.request_timeout_seconds)
        before = sample_nodes(self.client)
        result = run_load(self.config, make_operation, outstanding=outstanding, duration_seconds=duration_seconds,
                          on_result=on_result, requests_max=requests_max,
                          request_timeout_seconds=self.request_timeout_seconds, leader=leader)
        result.node_figures = step_figures(before, sample_nodes(self.client), result.operations)
        return result

    def directory(self, name: str) -> str:
        path = f"{self.root}/{name}"
        self.client.mkdir(path, parents=True)
        return path


def result_row(workload: str, mode: str, outstanding: int, load: LoadResult, rate_name: str) -> dict:
    row = {
        "workload": workload,
        "mode": mode,
        "outstanding": outstanding,
        "operations": load.operations,
        "errors": load.errors,
        "errors_by_code": dict(load.errors_by_code),
        rate_name: rate_per_second(load.operations, load.elapsed_seconds),
        "elapsed_seconds": round(load.elapsed_seconds, 3),
        "client_cpu_percent": load.client_cpu_percent,
        "host_steal_percent": load.host_steal_percent,
    }
    row.update(latency_summary_ms(load.latencies_seconds))
    row.update(load.node_figures)
    return row


def _file_writer(directory: str, payload_of: Callable[[str], bytes], written: dict[str, bytes] | None):
    """make_operation for unique-path writes; on_result remembers each path's bytes if asked."""
    numbers = itertools.count()

    def make_operation(lane: Lane) -> Operation:
        path = f"{directory}/f{next(numbers)}"
        data = payload_of(path)
        return lambda client: client.write_file(path, data)

    def on_result(lane: Lane, stat: object) -> None:
        if written is not None:
            written[stat["path"]] = payload_of(stat["path"])

    return make_operation, on_result


def _payload(size_bytes: int):
    """Distinct bytes per path (so a read can prove it got this file), padded to size."""
    filler = os.urandom(size_bytes)

    def payload_of(path: str) -> bytes:
        head = path.encode()[-size_bytes:]
        return head + filler[len(head):]

    return payload_of


def _file_reader(paths: list[str], expected: dict[str, bytes], stale: bool, once: bool,
                 nodes: list[str] | None = None):
    """make_operation for reads of existing paths (cycled, or each once), lane i pinned to
    nodes[i % len(nodes)] when nodes are given; on_result checks the bytes."""
    order = iter(paths) if once else itertools.cycle(paths)
    mismatches = [0]

    def make_operation(lane: Lane) -> Operation | None:
        path = next(order, None)
        if path is None:
            return None
        node = nodes[lane.index % len(nodes)] if nodes else None
        lane.under_way = path
        return lambda client: client.read(path, stale, node)

    def on_result(lane: Lane, stat_and_data: object) -> None:
        _stat, data = stat_and_data
        mismatches[0] += data != expected[lane.under_way]

    return make_operation, on_result, mismatches


def write_workload(context: BenchContext, concurrency_levels: tuple[int, ...]) -> list[dict]:
    """100-byte files at unique paths, for each number of outstanding requests."""
    rows = []
    payload_of = _payload(WRITE_FILE_BYTES)
    for outstanding in concurrency_levels:
        directory = context.directory(f"write-{outstanding}")
        make_operation, on_result = _file_writer(directory, payload_of, None)
        result = context.load(make_operation, outstanding=outstanding, duration_seconds=context.duration_seconds,
                              on_result=on_result)
        rows.append(result_row("write", f"{WRITE_FILE_BYTES} B", outstanding, result, "ops_per_second"))
    return rows


def _populate(context: BenchContext, directory: str, count: int, size_bytes: int) -> dict[str, bytes]:
    """Write count files (pipelined, bounded by count, not by time); returns path -> bytes."""
    written: dict[str, bytes] = {}
    make_operation, on_result = _file_writer(directory, _payload(size_bytes), written)
    # A generous time budget: the count, not the clock, ends this phase.
    context.load(make_operation, outstanding=SMALL_OUTSTANDING, duration_seconds=max(30.0, context.duration_seconds),
                 on_result=on_result, requests_max=count)
    return written


def read_workload(context: BenchContext, concurrency_levels: tuple[int, ...]) -> list[dict]:
    """Linearizable reads (to the leader) and stale reads (spread over every node) of
    existing small files; every reply's bytes are checked."""
    written = _populate(context, context.directory("read"), READ_FILE_COUNT, WRITE_FILE_BYTES)
    paths = sorted(written)
    rows = []
    for stale in (False, True):
        for outstanding in concurrency_levels:
            # Stale reads spread over every node (lanes pinned round-robin); linearizable ones
            # go where the client sends them: the leader.
            nodes = sorted(context.client.addresses) if stale else None
            make_operation, on_result, mismatches = _file_reader(paths, written, stale, once=False, nodes=nodes)
            result = context.load(make_operation, outstanding=outstanding, duration_seconds=context.duration_seconds,
                                  on_result=on_result)
            if mismatches[0]:
                result.errors_by_code[MISMATCH_CODE] += mismatches[0]
            mode = "stale" if stale else "linearizable"
            rows.append(result_row("read", mode, outstanding, result, "ops_per_second"))
    return rows


def small_workload(context: BenchContext) -> list[dict]:
    """4 KiB files: put for the run's duration, then get each of them once."""
    directory = context.directory("small")
    written: dict[str, bytes] = {}
    make_operation, on_result = _file_writer(directory, _payload(SMALL_FILE_BYTES), written)
    put = context.load(make_operation, outstanding=SMALL_OUTSTANDING, duration_seconds=context.duration_seconds,
                       on_result=on_result)
    rows = [result_row("small", "put 4 KiB", SMALL_OUTSTANDING, put, "files_per_second")]
    paths = sorted(written)
    if not paths:
        return rows
    make_operation, on_result, mismatches = _file_reader(paths, written, stale=False, once=True)
    # Each file once; the budget only guards against a stalled cluster.
    get = context.load(make_operation, outstanding=SMALL_OUTSTANDING,
                       duration_seconds=max(30.0, 10 * context.duration_seconds), on_result=on_result)
    if mismatches[0]:
        get.errors_by_code[MISMATCH_CODE] += mismatches[0]
    rows.append(result_row("small", "get 4 KiB", SMALL_OUTSTANDING, get, "files_per_second"))
    return rows
