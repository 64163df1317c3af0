"""Prometheus metrics of one node, over HTTP on its optional `metrics` address.

prometheus_client serves them (its own HTTP server on a daemon thread, bound to the configured
address only) from one custom Collector that builds every metric at scrape time from the
node's own readings: the `status` op's record (role, term, indexes, log and snapshot sizes,
latency histograms, transport counters), the requests it served by op, the chunk store's and
chunk service's counters and the store's use of its LMDB map. Nothing is counted twice and
nothing is added to the hot path; the latency histograms are the ones node/stats.py keeps.

Why the readings are taken on the driver thread: status reads the Raft core and the peer
transport's ZeroMQ sockets, which only the driver thread may touch. A scrape therefore asks
for fresh readings and waits (at most READINGS_WAIT_SECONDS) until the driver's housekeeping
(every few tens of milliseconds) builds them; a node that is idle with nobody scraping pays one
flag test per housekeeping turn.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Callable, Iterator

from prometheus_client import start_http_server
from prometheus_client.core import CollectorRegistry, CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

from node import protocol
from node.errors import ConfigError
from node.raft.types import Role
from node.transport.address import AddressError, parse_host_port

log = logging.getLogger("sandstore.metrics")

READINGS_WAIT_SECONDS = 2.0  # a scrape waits this long for the driver thread, then uses the last readings
PREFIX = "sandstore_"
ROLE_NAMES = tuple(role.name.lower() for role in Role)
# Peer messages dropped or refused, by reason: transport counter -> reason label.
PEER_DROPS = {"dropped_full": "queue_full", "dropped_unknown_peer": "unknown_peer",
              "dropped_oversized": "oversized"}
PEER_REJECTS = {"invalid_frames": "invalid_frame", "spoofed": "spoofed", "misdirected": "misdirected"}
CHUNK_OPERATIONS = ("puts", "dedup_puts", "gets", "get_misses", "deletes", "checksum_mismatches", "gc_deleted",
                    "fetches")
CHUNK_OPERATION_BYTES = {"put_bytes": "put", "get_bytes": "get", "gc_deleted_bytes": "gc_deleted",
                         "fetched_bytes": "fetch"}


@dataclass(frozen=True)
class NodeReadings:
    """Everything one scrape reports, taken at once on the driver thread."""

    status: dict  # what the `status` op answers
    requests_by_op: dict[str, int]  # client requests served, by op
    chunk_counters: dict[str, int]  # the chunk store's and the chunk service's counters
    store_used_fraction: float
    store_map_size_bytes: int
    taken_at: float  # time.monotonic()


class _Exchange:
    """Hands readings from the driver thread to scrapes on the HTTP threads."""

    def __init__(self) -> None:
        self._condition = threading.Condition()
        self._wanted = False
        self._generation = 0
        self._readings: NodeReadings | None = None

    def request(self, wait_seconds: float) -> NodeReadings | None:
        """Fresh readings, or the last ones if the driver did not answer in time (None: never)."""
        with self._condition:
            generation = self._generation
            self._wanted = True
            self._condition.wait_for(lambda: self._generation > generation, wait_seconds)
            return self._readings

    def serve_pending(self, read: Callable[[], NodeReadings]) -> None:
        """Driver thread: build readings if a scrape waits for them."""
        if not self._wanted:  # a plain bool read; a flag set meanwhile is served next turn
            return
        readings = read()
        with self._condition:
            self._readings = readings
            self._wanted = False
            self._generation += 1
            self._condition.notify_all()


class NodeCollector(Collector):
    def __init__(self, node_id: str, exchange: _Exchange) -> None:
        self._node_id = node_id
        self._exchange = exchange

    def collect(self) -> Iterator:
        readings = self._exchange.request(READINGS_WAIT_SECONDS)
        up = GaugeMetricFamily(PREFIX + "up", "1 if the node's driver answered this scrape", labels=["node"])
        fresh = readings is not None and time.monotonic() - readings.taken_at < READINGS_WAIT_SECONDS
        up.add_metric([self._node_id], 1 if fresh else 0)
        yield up
        if readings is not None:
            yield from describe(self._node_id, readings)


def describe(node_id: str, readings: NodeReadings) -> Iterator:
    """The metric families of one node's readings (a pure function of them)."""
    status = readings.status
    labels = ["node"]
    node = [node_id]

    def gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
        family = GaugeMetricFamily(PREFIX + name, documentation, labels=labels)
        family.add_metric(node, value)
        return family

    def counter(name: str, documentation: str, value: float) -> CounterMetricFamily:
        family = CounterMetricFamily(PREFIX + name, documentation, labels=labels)
        family.add_metric(node, value)
        return family

    def counters(name: str, documentation: str, label: str, values: dict[str, float]) -> CounterMetricFamily:
        family = CounterMetricFamily(PREFIX + name, documentation, labels=labels + [label])
        for key, value in values.items():
            family.add_metric(node + [key], value)
        return family

    yield gauge("raft_term", "Current Raft term", status["term"])
    role = GaugeMetricFamily(PREFIX + "raft_role", "1 for the node's current Raft role", labels=labels + ["role"])
    for name in ROLE_NAMES:
        role.add_metric(node + [name], 1 if status["role"] == name else 0)
    yield role
    yield counter("raft_leader_changes", "Leader changes this node has seen since it started",
                  status.get("elections_seen", 0))
    yield gauge("raft_commit_index", "Highest log index known committed", status["commit"])
    yield gauge("raft_applied_index", "Highest log index applied to the namespace", status["applied"])
    yield gauge("raft_log_first_index", "First index still in the log", status.get("first_index", 0))
    yield gauge("raft_log_last_index", "Last index in the log", status.get("last_index", 0))
    yield gauge("raft_log_entries", "Entries in the log", status.get("log_entries", 0))
    yield gauge("raft_log_bytes", "LMDB pages the log occupies, in bytes", status.get("log_bytes", 0))
    yield gauge("raft_snapshot_index", "Index of the latest snapshot", status.get("snapshot_index", 0))
    yield gauge("raft_snapshot_bytes", "Size of the latest snapshot", status.get("snapshot_bytes", 0))
    yield counter("raft_snapshots_installed", "Snapshots received from a leader and installed",
                  status.get("snapshots_installed", 0))
    yield counter("raft_snapshots_sent", "Snapshots sent to followers", status.get("snapshots_sent", 0))
    writes = sum(count for op, count in readings.requests_by_op.items() if op in protocol.WRITE_OPS)
    yield counter("raft_proposals", "Writes received here and proposed (or forwarded to the leader)", writes)
    yield _histogram("raft_commit_latency_seconds", "From proposal to applied, on the leader",
                     status.get("commit_latency_ms", {}), node_id)
    yield _histogram("store_fsync_latency_seconds", "Time to persist one batch (LMDB commit and sync)",
                     status.get("fsync_latency_ms", {}), node_id)
    yield counters("client_requests", "Client requests served, by op (reads and writes)", "op",
                   readings.requests_by_op)
    yield gauge("chunks_stored", "Chunks in this node's chunk store", status.get("chunks_stored", 0))
    yield gauge("chunk_stored_bytes", "Bytes of the chunks in this node's chunk store", status.get("chunk_bytes", 0))
    chunk = readings.chunk_counters
    yield counters("chunk_operations", "Chunk store operations, by kind", "kind",
                   {kind: chunk[kind] for kind in CHUNK_OPERATIONS if kind in chunk})
    yield counters("chunk_operation_bytes", "Bytes moved by chunk store operations, by kind", "kind",
                   {kind: chunk[key] for key, kind in CHUNK_OPERATION_BYTES.items() if key in chunk})
    transport = status.get("transport", {})
    yield counters("peer_messages", "Raft peer messages, by direction", "direction",
                   {"sent": transport.get("sent", 0), "received": transport.get("received", 0)})
    yield counters("peer_messages_dropped", "Raft peer messages dropped before sending, by reason", "reason",
                   {reason: transport.get(key, 0) for key, reason in PEER_DROPS.items()})
    server_counters = status.get("counters", {})
    rejected = {reason: transport.get(key, 0) for key, reason in PEER_REJECTS.items()}
    rejected.update({
        "peer_contradicts_state": status.get("peer_messages_rejected", 0),
        "peer_forward_malformed": status.get("forwards_dropped", 0),
        "client_bad_request": server_counters.get("client_bad_requests", 0),
        "chunk_bad_request": chunk.get("bad_requests", 0),
    })
    yield counters("rejected_messages", "Messages refused or dropped as invalid, by reason", "reason", rejected)
    used_bytes = readings.store_used_fraction * readings.store_map_size_bytes
    yield gauge("store_used_bytes", "Bytes of the node's LMDB map in use (log, namespace, snapshot)", used_bytes)
    yield gauge("store_map_size_bytes", "Size of the node's LMDB map (lmdb_map_size_bytes)",
                readings.store_map_size_bytes)
    yield gauge("store_used_ratio", "Share of the LMDB map in use; writes are refused above 0.9",
                readings.store_used_fraction)


def _histogram(name: str, documentation: str, summary: dict, node_id: str) -> HistogramMetricFamily:
    """A histogram family from LatencySamples.percentiles()["histogram"] (cumulative counts)."""
    family = HistogramMetricFamily(PREFIX + name, documentation, labels=["node"])
    histogram = summary.get("histogram") or {"buckets": [], "count": 0, "sum_seconds": 0.0}
    buckets = [(repr(float(bound)), count) for bound, count in histogram["buckets"]]
    family.add_metric([node_id], buckets + [("+Inf", histogram["count"])], histogram["sum_seconds"])
    return family


class MetricsEndpoint:
    """The HTTP endpoint of one node, or nothing when its config names no `metrics` address."""

    def __init__(self, address: str, node_id: str) -> None:
        self._exchange = _Exchange()
        self._server = None
        self._thread: threading.Thread | None = None
        if not address:
            return
        try:
            host_port = parse_host_port(address)
        except AddressError as error:
            raise ConfigError(f"metrics address {error}") from None
        registry = CollectorRegistry(auto_describe=False)
        registry.register(NodeCollector(node_id, self._exchange))
        # Raises OSError (e.g. address in use): the node's start reports it in one line.
        self._server, self._thread = start_http_server(host_port.port, host_port.host, registry=registry)
        log.info("node %s serving Prometheus metrics on http://%s/metrics", node_id, address)

    def serve_pending(self, read: Callable[[], NodeReadings]) -> None:
        """Driver thread, every housekeeping turn: answer a waiting scrape."""
        self._exchange.serve_pending(read)

    def close(self) -> None:
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        assert self._thread is not None
        self._thread.join(READINGS_WAIT_SECONDS)
        self._server = None
