"""What encryption costs a cluster, on vs off in one run: a CurveZMQ cluster and a plain-text
cluster (local, 3 nodes each) run side by side, and every step runs on one and then the other,
the order alternating per round, so both see the same background load of a shared machine.

    .venv/bin/python -m tests.chunks.measure_encryption_cost [--rounds 8] [--file-size-mib 64]

Not a test (nothing is asserted); the figures go into the README's Security section. Per step:
the rate, and CPU per operation or per MB summed over the client and the cluster's nodes (the
robust figure on a busy machine: a transfer whose CPU share is the limit slows by that ratio),
less what the idle cluster burns meanwhile.
Each figure's on/off ratio is the median of the per-round ratios.
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

from node.config import ClusterConfig, NodeAddress

from sandctl.bench_cluster import LocalCluster
from sandctl.bench_load import run_load
from sandctl.bench_nodes import process_cpu_seconds
from sandctl.bench_workloads import _file_reader, _file_writer, _payload
from sandctl.client import Client

MODES = ("curve", "plaintext")
SMALL_FILE_BYTES = 100
READ_FILES = 256
WRITE_OUTSTANDING = (1, 16)
READ_OUTSTANDING = 16
MB = 1e6
IDLE_SECONDS = 1.0  # per side and round: the idle cluster's CPU rate, subtracted from each step's CPU


class Side:
    """One cluster, its client and the files the read step reads."""

    def __init__(self, directory: Path, mode: str) -> None:
        template = ClusterConfig(nodes=(NodeAddress(id="n1", raft="127.0.0.1:1", client="127.0.0.1:2",
                                                    chunk="127.0.0.1:3"),), replication=3, security=mode)
        self.cluster = LocalCluster(directory, 3, template)
        self.cluster.start()
        self.client = Client(self.cluster.config, timeout_seconds=30)
        self.client.mkdir("/measure/read", parents=True)
        self.files: dict[str, bytes] = {}
        make_operation, on_result = _file_writer("/measure/read", _payload(SMALL_FILE_BYTES), self.files)
        run_load(self.cluster.config, make_operation, outstanding=16, duration_seconds=60, on_result=on_result,
                 requests_max=READ_FILES, leader=self.client.wait_for_leader(10))

        self.idle_cpu_per_second = 0.0

    def measure_idle(self, seconds: float) -> None:
        """The cluster's CPU per second doing nothing (heartbeats, scrub, housekeeping)."""
        nodes = self._node_cpu_seconds()
        time.sleep(seconds)
        self.idle_cpu_per_second = (self._node_cpu_seconds() - nodes) / seconds

    def _node_cpu_seconds(self) -> float:
        return sum(process_cpu_seconds(pid, node_id) or 0.0 for node_id, pid in self.cluster.pids.items())

    def cpu_seconds(self) -> float:
        """CPU of this process (the client, every thread) plus the cluster's node processes."""
        return time.process_time() + self._node_cpu_seconds()

    def cpu_since(self, cpu_seconds: float, wall_started: float) -> float:
        """CPU spent since cpu_seconds = cpu_seconds() at wall_started, less the idle cluster's
        share of that time: a step that took longer is not charged more heartbeats."""
        return self.cpu_seconds() - cpu_seconds - self.idle_cpu_per_second * (time.monotonic() - wall_started)

    def close(self) -> None:
        self.client.close()
        self.cluster.stop()


def one_round(side: Side, round_number: int, step_seconds: float, content: bytes, record) -> None:
    leader = side.client.wait_for_leader(10)
    config = side.cluster.config
    for outstanding in WRITE_OUTSTANDING:
        directory = f"/measure/write-{round_number}-{outstanding}"
        side.client.mkdir(directory, parents=True)
        make_operation, _ = _file_writer(directory, _payload(SMALL_FILE_BYTES), None)
        cpu, started = side.cpu_seconds(), time.monotonic()
        load = run_load(config, make_operation, outstanding=outstanding, duration_seconds=step_seconds, leader=leader)
        record(f"writes/s, {outstanding} outstanding", load.operations / load.elapsed_seconds)
        record(f"  CPU us per write ({outstanding})", side.cpu_since(cpu, started) / max(load.operations, 1) * 1e6)
    make_operation, on_result, mismatches = _file_reader(sorted(side.files), side.files, False, once=False)
    cpu, started = side.cpu_seconds(), time.monotonic()
    load = run_load(config, make_operation, outstanding=READ_OUTSTANDING, duration_seconds=step_seconds,
                    on_result=on_result, leader=leader)
    assert not mismatches[0], "a read returned other bytes"
    record(f"reads/s, {READ_OUTSTANDING} outstanding", load.operations / load.elapsed_seconds)
    record("  CPU us per read", side.cpu_since(cpu, started) / max(load.operations, 1) * 1e6)

    path = f"/measure/large-{round_number}"
    cpu, started = side.cpu_seconds(), time.monotonic()
    side.client.put_file(path, io.BytesIO(content), size_hint=len(content))
    record("put MB/s", len(content) / MB / (time.monotonic() - started))
    record("  CPU ms per MB put", side.cpu_since(cpu, started) / (len(content) / MB) * 1e3)
    sink = io.BytesIO()
    cpu, started = side.cpu_seconds(), time.monotonic()
    side.client.get_file(path, sink)
    record("get MB/s", len(content) / MB / (time.monotonic() - started))
    record("  CPU ms per MB get", side.cpu_since(cpu, started) / (len(content) / MB) * 1e3)
    assert sink.getvalue() == content, "get returned other bytes"


def fresh_content(base: bytearray, round_number: int, chunk_size_bytes: int) -> bytes:
    """The base bytes with the round number at the head of every chunk: new chunks each round,
    so no put is answered from the store's dedup."""
    for offset in range(0, len(base), chunk_size_bytes):
        base[offset:offset + 8] = round_number.to_bytes(8, "big")
    return bytes(base)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--file-size-mib", type=int, default=64)
    parser.add_argument("--step-seconds", type=float, default=2.0)
    arguments = parser.parse_args()
    figures: dict[str, dict[str, list[float]]] = {mode: defaultdict(list) for mode in MODES}
    base = bytearray(os.urandom(arguments.file_size_mib << 20))
    directory = Path(tempfile.mkdtemp(prefix="measure-encryption-"))
    sides: dict[str, Side] = {}
    try:
        for mode in MODES:  # one after the other: each picks its free ports just before starting
            sides[mode] = Side(directory / mode, mode)
        for round_number in range(arguments.rounds):
            content = fresh_content(base, round_number + 1, sides[MODES[0]].cluster.config.chunk_size_bytes)
            for mode in MODES if round_number % 2 == 0 else MODES[::-1]:
                sides[mode].measure_idle(IDLE_SECONDS)
                one_round(sides[mode], round_number, arguments.step_seconds, content,
                          lambda name, value, mode=mode: figures[mode][name].append(value))
            print(f"round {round_number + 1} of {arguments.rounds} done", file=sys.stderr, flush=True)
    finally:
        for side in sides.values():
            side.close()
        shutil.rmtree(directory, ignore_errors=True)
    on, off = figures["curve"], figures["plaintext"]
    print(f"{'figure (medians)':30} {'curve':>10} {'plaintext':>10} {'on/off':>7}  per-round on/off")
    for name in on:
        ratios = [a / b for a, b in zip(on[name], off[name])]
        print(f"{name:30} {statistics.median(on[name]):10.1f} {statistics.median(off[name]):10.1f} "
              f"{statistics.median(ratios):7.2f}  {' '.join(f'{ratio:.2f}' for ratio in ratios)}")


if __name__ == "__main__":
    main()
