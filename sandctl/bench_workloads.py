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

from sandctl.bench_load import Lane, LoadResult, PipelinedLoad
from sandctl.bench_stats import latency_summary_ms, rate_per_second
from sandctl.client import Client
from sandctl.connection import Reply

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

    def leader_endpoints(self) -> list[str]:
        leader = self.client.wait_for_leader(self.request_timeout_seconds)
        return ["tcp://" + self.client.addresses[leader]]

    def all_endpoints(self) -> list[str]:
        return ["tcp://" + address for address in self.client.addresses.values()]

    def load(self, endpoints: list[str]) -> PipelinedLoad:
        return PipelinedLoad(endpoints, max_frame_bytes=self.config.max_frame_bytes,
                             request_timeout_seconds=self.request_timeout_seconds)

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
    }
    row.update(latency_summary_ms(load.latencies_seconds))
    return row


def _file_writer(directory: str, payload_of: Callable[[str], bytes], written: dict[str, bytes] | None):
    """make_request for unique-path writes; remembers each path's bytes if asked."""
    numbers = itertools.count()

    def make_request(lane: Lane) -> tuple[str, dict]:
        path = f"{directory}/f{next(numbers)}"
        data = payload_of(path)
        return "write_file", {"path": path, "data": data, "size": len(data)}

    def on_reply(lane: Lane, op: str, args: dict, reply: Reply) -> None:
        if written is not None and reply.ok:
            written[args["path"]] = args["data"]

    return make_request, on_reply


def _payload(size_bytes: int):
    """Distinct bytes per path (so a read can prove it got this file), padded to size."""
    filler = os.urandom(size_bytes)

    def payload_of(path: str) -> bytes:
        head = path.encode()[-size_bytes:]
        return head + filler[len(head):]

    return payload_of


def _file_reader(paths: list[str], expected: dict[str, bytes], stale: bool, once: bool):
    """make_request for reads of existing paths (cycled, or each once); on_reply checks bytes."""
    order = iter(paths) if once else itertools.cycle(paths)
    mismatches = [0]

    def make_request(lane: Lane) -> tuple[str, dict] | None:
        path = next(order, None)
        if path is None:
            return None
        return "read", {"path": path, "stale": stale}

    def on_reply(lane: Lane, op: str, args: dict, reply: Reply) -> None:
        if reply.ok and (reply.result or {}).get("data") != expected[args["path"]]:
            mismatches[0] += 1

    return make_request, on_reply, mismatches


def write_workload(context: BenchContext, concurrency_levels: tuple[int, ...]) -> list[dict]:
    """100-byte files at unique paths, for each number of outstanding requests."""
    rows = []
    payload_of = _payload(WRITE_FILE_BYTES)
    for outstanding in concurrency_levels:
        directory = context.directory(f"write-{outstanding}")
        make_request, on_reply = _file_writer(directory, payload_of, None)
        with context.load(context.leader_endpoints()) as load:
            result = load.run(make_request, outstanding=outstanding, duration_seconds=context.duration_seconds,
                              on_reply=on_reply)
        rows.append(result_row("write", f"{WRITE_FILE_BYTES} B", outstanding, result, "ops_per_second"))
    return rows


def _populate(context: BenchContext, directory: str, count: int, size_bytes: int) -> dict[str, bytes]:
    """Write count files (pipelined, bounded by count, not by time); returns path -> bytes."""
    written: dict[str, bytes] = {}
    make_request, on_reply = _file_writer(directory, _payload(size_bytes), written)
    with context.load(context.leader_endpoints()) as load:
        # A generous time budget: the count, not the clock, ends this phase.
        load.run(make_request, outstanding=SMALL_OUTSTANDING, duration_seconds=max(30.0, context.duration_seconds),
                 on_reply=on_reply, max_requests=count)
    return written


def read_workload(context: BenchContext, concurrency_levels: tuple[int, ...]) -> list[dict]:
    """Linearizable reads (to the leader) and stale reads (spread over every node) of
    existing small files; every reply's bytes are checked."""
    written = _populate(context, context.directory("read"), READ_FILE_COUNT, WRITE_FILE_BYTES)
    paths = sorted(written)
    rows = []
    for stale in (False, True):
        for outstanding in concurrency_levels:
            make_request, on_reply, mismatches = _file_reader(paths, written, stale, once=False)
            endpoints = context.all_endpoints() if stale else context.leader_endpoints()
            with context.load(endpoints) as load:
                result = load.run(make_request, outstanding=outstanding, duration_seconds=context.duration_seconds,
                                  on_reply=on_reply)
            if mismatches[0]:
                result.errors_by_code[MISMATCH_CODE] += mismatches[0]
            mode = "stale" if stale else "linearizable"
            rows.append(result_row("read", mode, outstanding, result, "ops_per_second"))
    return rows


def small_workload(context: BenchContext) -> list[dict]:
    """4 KiB files: put for the run's duration, then get each of them once."""
    directory = context.directory("small")
    written: dict[str, bytes] = {}
    make_request, on_reply = _file_writer(directory, _payload(SMALL_FILE_BYTES), written)
    with context.load(context.leader_endpoints()) as load:
        put = load.run(make_request, outstanding=SMALL_OUTSTANDING, duration_seconds=context.duration_seconds,
                       on_reply=on_reply)
    rows = [result_row("small", "put 4 KiB", SMALL_OUTSTANDING, put, "files_per_second")]
    paths = sorted(written)
    if not paths:
        return rows
    make_request, on_reply, mismatches = _file_reader(paths, written, stale=False, once=True)
    with context.load(context.leader_endpoints()) as load:
        # Each file once; the budget only guards against a stalled cluster.
        get = load.run(make_request, outstanding=SMALL_OUTSTANDING, duration_seconds=max(30.0, 10 * context.duration_seconds),
                       on_reply=on_reply)
    if mismatches[0]:
        get.errors_by_code[MISMATCH_CODE] += mismatches[0]
    rows.append(result_row("small", "get 4 KiB", SMALL_OUTSTANDING, get, "files_per_second"))
    return rows
