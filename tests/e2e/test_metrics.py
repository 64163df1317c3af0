"""The Prometheus endpoint of real node processes: scraped over HTTP, parsed with
prometheus_client's own parser, with plausible values that follow the cluster's state."""

from __future__ import annotations

import dataclasses
import socket
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from node.config import ConfigError, load_config, parse_config, render_config
from sandctl import cluster as supervisor
from sandctl.client import Client

from e2e_workload import wait_until

pytestmark = pytest.mark.e2e

START_DEADLINE_SECONDS = 30.0
SCRAPE_TIMEOUT_SECONDS = 10.0
EXPECTED_FAMILIES = {
    "sandstore_up", "sandstore_raft_term", "sandstore_raft_role", "sandstore_raft_leader_changes",
    "sandstore_raft_commit_index", "sandstore_raft_applied_index", "sandstore_raft_proposals",
    "sandstore_raft_commit_latency_seconds", "sandstore_store_fsync_latency_seconds", "sandstore_raft_log_entries",
    "sandstore_raft_log_bytes", "sandstore_raft_snapshot_index", "sandstore_raft_snapshot_bytes",
    "sandstore_chunks_stored", "sandstore_chunk_stored_bytes", "sandstore_chunk_operations",
    "sandstore_chunk_operation_bytes", "sandstore_client_requests", "sandstore_peer_messages",
    "sandstore_rejected_messages", "sandstore_store_used_bytes", "sandstore_store_map_size_bytes",
    "sandstore_store_used_ratio",
}


def scrape(address: str) -> dict[str, dict[tuple, float]]:
    """{family name: {sorted label items (+ sample name for histograms): value}} of one scrape."""
    with urllib.request.urlopen(f"http://{address}/metrics", timeout=SCRAPE_TIMEOUT_SECONDS) as response:
        assert response.status == 200
        text = response.read().decode()
    families: dict[str, dict[tuple, float]] = {}
    for family in text_string_to_metric_families(text):
        samples = families.setdefault(family.name, {})
        for sample in family.samples:
            labels = tuple(sorted((k, v) for k, v in sample.labels.items() if k != "node"))
            samples[(sample.name, *labels)] = sample.value
    return families


def value(families: dict, family: str, sample: str | None = None, **labels: str) -> float:
    return families[family][(sample or family, *sorted(labels.items()))]


@pytest.fixture
def metrics_cluster(tmp_path, e2e_home, ledger):
    """Three Raft nodes, each with a metrics address on 127.0.0.1 and a free port."""
    template = supervisor.loopback_config(3)
    ports = supervisor.free_ports(3)
    nodes = tuple(dataclasses.replace(node, metrics=f"127.0.0.1:{port}") for node, port in zip(template.nodes, ports))
    config_path = tmp_path / "metrics.toml"
    config_path.write_text(render_config(dataclasses.replace(template, nodes=nodes)))
    config = load_config(config_path)
    pids, _leader = supervisor.start_cluster(config, ledger.data_dir, START_DEADLINE_SECONDS)
    ledger.pids.update({pid: node_id for node_id, pid in pids.items()})
    return config


def test_every_node_serves_metrics_that_follow_the_cluster(metrics_cluster):
    config = metrics_cluster
    addresses = {node.id: node.metrics for node in config.nodes}

    def leader_in_scrapes():
        scrapes = {node_id: scrape(address) for node_id, address in addresses.items()}
        leaders = [node_id for node_id, families in scrapes.items()
                   if value(families, "sandstore_raft_role", role="leader") == 1]
        return (leaders[0], scrapes) if len(leaders) == 1 else None

    leader, scrapes = wait_until(leader_in_scrapes, "exactly one node reporting role leader")
    for node_id, families in scrapes.items():
        assert EXPECTED_FAMILIES <= set(families), (node_id, EXPECTED_FAMILIES - set(families))
        assert value(families, "sandstore_up") == 1
        assert value(families, "sandstore_raft_term") >= 1
        assert sum(value(families, "sandstore_raft_role", role=role)
                   for role in ("follower", "pre_candidate", "candidate", "leader")) == 1
        assert value(families, "sandstore_raft_leader_changes", "sandstore_raft_leader_changes_total") >= 1
        assert value(families, "sandstore_store_map_size_bytes") == config.lmdb_map_size_bytes
        assert 0 < value(families, "sandstore_store_used_ratio") < 0.9
        assert value(families, "sandstore_raft_applied_index") <= value(families, "sandstore_raft_commit_index")

    before = scrapes[leader]
    commit_before = value(before, "sandstore_raft_commit_index")
    committed_before = value(before, "sandstore_raft_commit_latency_seconds", "sandstore_raft_commit_latency_seconds_count")
    with Client(config, node=leader, timeout_seconds=10) as client:
        client.mkdir("/metrics-test")
        client.write_file("/metrics-test/file", b"x" * 1000)
        client.stat("/metrics-test/file")

    def leader_after_writes():
        families = scrape(addresses[leader])
        committed = value(families, "sandstore_raft_commit_latency_seconds", "sandstore_raft_commit_latency_seconds_count")
        return families if committed >= committed_before + 2 else None

    after = wait_until(leader_after_writes, "the leader's commit latency histogram counting the writes")
    assert value(after, "sandstore_raft_commit_index") >= commit_before + 2
    assert value(after, "sandstore_raft_proposals", "sandstore_raft_proposals_total") >= 2
    assert value(after, "sandstore_client_requests", "sandstore_client_requests_total", op="mkdir") >= 1
    assert value(after, "sandstore_client_requests", "sandstore_client_requests_total", op="write_file") >= 1
    assert value(after, "sandstore_client_requests", "sandstore_client_requests_total", op="stat") >= 1
    fsyncs = value(after, "sandstore_store_fsync_latency_seconds", "sandstore_store_fsync_latency_seconds_count")
    slowest_bucket = value(after, "sandstore_store_fsync_latency_seconds", "sandstore_store_fsync_latency_seconds_bucket",
                           le="+Inf")
    assert fsyncs >= 2 and slowest_bucket == fsyncs


def test_the_endpoint_binds_only_the_configured_address(metrics_cluster):
    address = metrics_cluster.nodes[0].metrics
    port = int(address.rsplit(":", 1)[1])
    assert "sandstore_raft_term" in scrape(address)
    # 127.0.0.2 is this host's loopback too: a server bound to every address would answer there.
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.2", port), timeout=SCRAPE_TIMEOUT_SECONDS).close()


def test_a_metrics_address_is_validated_like_the_others():
    node = {"id": "n1", "raft": "127.0.0.1:7001", "client": "127.0.0.1:8001", "chunk": "127.0.0.1:9001"}
    assert parse_config({"nodes": [{**node, "metrics": "127.0.0.1:9101"}]}).nodes[0].metrics == "127.0.0.1:9101"
    assert parse_config({"nodes": [node]}).nodes[0].metrics == ""
    with pytest.raises(ConfigError, match="nodes\\[0\\].metrics"):
        parse_config({"nodes": [{**node, "metrics": "port 9101"}]})
    with pytest.raises(ConfigError, match="nodes\\[0\\].client already binds"):
        parse_config({"nodes": [{**node, "metrics": "127.0.0.1:8001"}]})
