"""The failover workload: continuous writes while the leader is SIGKILLed and restarted.

For each kill it reports the milliseconds from the SIGKILL to the first acknowledged write
that was *sent after* the kill (a write acknowledged just after the kill may have committed
before it, so it would prove nothing). Afterwards every acknowledged write is read back with
a linearizable read; one that is missing or has other bytes counts as lost (must be 0).
"""

from __future__ import annotations

import os
import statistics
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from node.errors import NotFound, SandStoreError, TimedOut

from sandctl.bench_cluster import LocalCluster
from sandctl.bench_load import Lane
from sandctl.bench_stats import CpuMeter
from sandctl.bench_workloads import BenchContext
from sandctl.client import Client

KILL_COUNT_DEFAULT = 10  # the median of fewer kills says little
WRITER_THREADS = 4
PAYLOAD_BYTES = 100
# A writer notices a dead leader after this long without an answer and tries another node. The
# client does not watch its connections, so this bounds kill->ack from below: short enough not to
# hide the cluster's own failover (tens of ms), long enough that a slow write on a loaded machine
# is not abandoned (a retry is safe either way: the session dedups it).
WRITER_ATTEMPT_TIMEOUT_SECONDS = 0.1
WRITER_CALL_TIMEOUT_SECONDS = 10.0
RECOVERY_DEADLINE_SECONDS = 30.0  # a kill with no acknowledged write after this is a failure
CATCH_UP_POLL_SECONDS = 0.02
NEW_LEADER_POLL_SECONDS = 0.005  # pacing of the status polls that time kill -> new leader
VERIFY_OUTSTANDING = 16
VERIFY_RETRIES = 3

assert WRITER_ATTEMPT_TIMEOUT_SECONDS < WRITER_CALL_TIMEOUT_SECONDS


@dataclass
class AcknowledgedWrites:
    """Shared by the writer threads (guarded by condition): what the cluster acknowledged."""

    condition: threading.Condition = field(default_factory=threading.Condition)
    data_by_path: dict[str, bytes] = field(default_factory=dict)
    # (sent_at, acknowledged_at) in acknowledgement order, so a waiter scans only the tail.
    acknowledgements: list[tuple[float, float]] = field(default_factory=list)
    outcome_unknown: int = 0
    refused: int = 0

    def first_acknowledgement_sent_after(self, moment: float, start_index: int) -> float | None:
        """acknowledged_at of the first write sent at or after moment, looking from start_index."""
        for sent_at, acknowledged_at in self.acknowledgements[start_index:]:
            if sent_at >= moment:
                return acknowledged_at
        return None


def _writer(config, directory: str, number: int, writes: AcknowledgedWrites, stop: threading.Event) -> None:
    """Write unique files one at a time until stop; record each acknowledgement."""
    filler = os.urandom(PAYLOAD_BYTES)
    with Client(config, timeout_seconds=WRITER_CALL_TIMEOUT_SECONDS,
                attempt_timeout_seconds=WRITER_ATTEMPT_TIMEOUT_SECONDS) as client:
        sequence = 0
        while not stop.is_set():
            sequence += 1
            path = f"{directory}/w{number}-{sequence}"
            data = (path.encode() + filler)[:PAYLOAD_BYTES]
            sent_at = time.monotonic()
            try:
                client.write_file(path, data)
            except TimedOut:
                with writes.condition:
                    writes.outcome_unknown += 1  # may or may not exist: neither acked nor lost
                continue
            except SandStoreError:
                with writes.condition:
                    writes.refused += 1
                continue
            acknowledged_at = time.monotonic()
            with writes.condition:
                writes.data_by_path[path] = data
                writes.acknowledgements.append((sent_at, acknowledged_at))
                writes.condition.notify_all()


def _median_or_none(values: list[float | None]) -> float | None:
    known = [value for value in values if value is not None]
    return statistics.median(known) if known else None


def verify_acknowledged(context: BenchContext, data_by_path: dict[str, bytes]) -> dict:
    """Read every acknowledged path back (linearizable). Returns counts: lost (missing or
    other bytes) and unverified (no definite answer even after retries)."""
    paths = sorted(data_by_path)
    answers: dict[str, object] = {}  # path -> its bytes, or the SandStoreError the read raised
    order = iter(paths)

    def make_operation(lane: Lane):
        path = next(order, None)
        return None if path is None else (lambda client: _read_or_error(client, path, answers))

    if paths:
        context.load(make_operation, outstanding=VERIFY_OUTSTANDING, duration_seconds=RECOVERY_DEADLINE_SECONDS)
    lost = unverified = 0
    for path in paths:
        answer = answers.get(path)
        if isinstance(answer, bytes):
            lost += answer != data_by_path[path]
            continue
        if isinstance(answer, NotFound):
            lost += 1
            continue
        # No reply, or "ask elsewhere": the failover-aware client settles it.
        for _ in range(VERIFY_RETRIES):
            try:
                _, data = context.client.read(path)
            except NotFound:
                lost += 1
                break
            except SandStoreError:
                continue
            lost += data != data_by_path[path]
            break
        else:
            unverified += 1
    assert lost + unverified <= len(paths)
    return {"writes_acknowledged": len(paths), "writes_lost": lost, "writes_unverified": unverified}


async def _read_or_error(client, path: str, answers: dict[str, object]) -> None:
    """Read path (linearizable) into answers: its bytes, or the error (a definite NotFound
    counts as lost; anything else is settled by the blocking client's retries)."""
    try:
        _stat, answers[path] = await client.read(path)
    except SandStoreError as error:
        answers[path] = error


def _wait_new_leader(context: BenchContext, killed: str, deadline: float) -> float | None:
    """When a surviving node first reported itself leader (monotonic seconds), or None by the
    deadline: the cluster's own part of kill->ack, without the client's attempt timeout."""
    survivors = [node for node in context.config.node_ids() if node != killed]

    def has_leader(answers: dict[str, object]) -> bool:
        return any(isinstance(answer, dict) and answer.get("role") == "leader" for answer in answers.values())

    while time.monotonic() < deadline:
        answers = context.client.broadcast("status", {}, survivors, timeout_seconds=0.2, until=has_leader)
        if has_leader(answers):
            return time.monotonic()
        time.sleep(NEW_LEADER_POLL_SECONDS)  # pacing a poll of other processes, not test synchronisation
    return None


def _wait_caught_up(context: BenchContext, node_id: str, deadline: float) -> None:
    """Wait until a restarted node answers and has applied what the leader had committed."""
    leader = context.client.wait_for_leader(max(0.001, deadline - time.monotonic()))
    target = context.client.status(leader).get("commit", 0)
    while time.monotonic() < deadline:
        answer = context.client.broadcast("status", {}, [node_id], timeout_seconds=0.5).get(node_id)
        if isinstance(answer, dict) and answer.get("applied", 0) >= target:
            return
        time.sleep(CATCH_UP_POLL_SECONDS)  # pacing a poll of another process, not test synchronisation
    raise SandStoreError(f"restarted node {node_id} did not catch up within {RECOVERY_DEADLINE_SECONDS:g} s")


def failover_workload(context: BenchContext, cluster: LocalCluster | None,
                      before_verify: Callable[[BenchContext, dict[str, bytes]], None] | None = None,
                      kill_count: int = KILL_COUNT_DEFAULT) -> list[dict]:
    """before_verify(context, acknowledged) runs after the writers stop and before the read
    back: the tests use it to drop an acknowledged write and see it counted."""
    if cluster is None:
        return [{"workload": "failover", "mode": "", "outstanding": WRITER_THREADS,
                 "unavailable": "needs --local (the benchmark only kills nodes it started)"}]
    directory = context.directory("failover")
    writes = AcknowledgedWrites()
    stop = threading.Event()
    threads = [threading.Thread(target=_writer, args=(context.config, directory, number, writes, stop),
                                name=f"bench-failover-writer-{number}", daemon=True)
               for number in range(WRITER_THREADS)]
    assert kill_count >= 1
    steady_seconds = context.duration_seconds / (kill_count + 1)
    kills = []
    meter = CpuMeter().start()
    for thread in threads:
        thread.start()
    try:
        for _ in range(kill_count):
            stop.wait(steady_seconds)  # steady writes before each kill
            leader = context.client.wait_for_leader(RECOVERY_DEADLINE_SECONDS)
            with writes.condition:
                seen_before_kill = len(writes.acknowledgements)
            cluster.kill(leader)
            # After the kill returned, not before: a write sent in between (the pid lookup takes
            # a few ms) could still be answered by the dying leader (one kill measured 3.2 ms).
            killed_at = time.monotonic()
            new_leader_at = _wait_new_leader(context, leader, killed_at + RECOVERY_DEADLINE_SECONDS)
            with writes.condition:
                recovered = writes.condition.wait_for(
                    lambda: writes.first_acknowledgement_sent_after(killed_at, seen_before_kill) is not None,
                    timeout=RECOVERY_DEADLINE_SECONDS)
                acknowledged_at = writes.first_acknowledgement_sent_after(killed_at, seen_before_kill)
            if not recovered:
                raise SandStoreError(f"no write was acknowledged within {RECOVERY_DEADLINE_SECONDS:g} s "
                                     f"of killing leader {leader}")
            kills.append({"killed": leader, "kill_to_ack_ms": round((acknowledged_at - killed_at) * 1000.0, 1),
                          "kill_to_leader_ms": None if new_leader_at is None
                          else round((new_leader_at - killed_at) * 1000.0, 1)})
            cluster.restart(leader)
            _wait_caught_up(context, leader, time.monotonic() + RECOVERY_DEADLINE_SECONDS)
        stop.wait(steady_seconds)
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    meter.stop()
    with writes.condition:
        acknowledged = dict(writes.data_by_path)
        outcome_unknown, refused = writes.outcome_unknown, writes.refused
    if before_verify is not None:
        before_verify(context, acknowledged)
    row = {
        "workload": "failover",
        "mode": f"{kill_count} leader kills",
        "outstanding": WRITER_THREADS,
        "operations": len(acknowledged),
        "errors": outcome_unknown + refused,
        "errors_by_code": {"TIMEOUT": outcome_unknown, "REFUSED": refused},
        "ops_per_second": round(len(acknowledged) / max(meter.wall_seconds, 1e-9), 1),
        "elapsed_seconds": round(meter.wall_seconds, 3),
        "client_cpu_percent": meter.cpu_percent,
        "host_steal_percent": meter.host_steal_percent,
        "kills": kills,
        "kill_to_ack_ms": [kill["kill_to_ack_ms"] for kill in kills],
        "kill_to_ack_ms_median": statistics.median(kill["kill_to_ack_ms"] for kill in kills),
        # The cluster's part: kill -> a survivor reports itself leader (the first status poll
        # that sees it, so an upper bound); kill->ack adds the client noticing the dead node.
        "kill_to_leader_ms": [kill["kill_to_leader_ms"] for kill in kills],
        "kill_to_leader_ms_median": _median_or_none([kill["kill_to_leader_ms"] for kill in kills]),
        "writes_outcome_unknown": outcome_unknown,
    }
    row.update(verify_acknowledged(context, acknowledged))
    return [row]
