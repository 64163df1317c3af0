"""Clusters on real network namespaces: each node its own host and address, clients on another.

These tests need root (CI runs as root) and iproute2; elsewhere they are skipped. Everything a test creates -- the
namespaces (and with them their links, routes and cut rules) and the processes, by pid -- is
removed in teardown, also when the test fails. Names start with the pid and a counter, so
parallel runs on one machine do not collide, and nothing is created in the root namespace.
"""

from __future__ import annotations

import os
import shutil

import pytest

from sandctl.bench_partition import CLIENT_HOST, NetCluster
from sandctl.netlab import NetLab, is_root

UNAVAILABLE = None if is_root() and shutil.which("ip") else "network namespace tests need root and iproute2"


@pytest.fixture(autouse=True)
def _needs_root(request):
    """Skip (only) where namespaces cannot be made; a module with NEEDS_ROOT = False runs anyway."""
    if UNAVAILABLE and getattr(request.module, "NEEDS_ROOT", True):
        pytest.skip(UNAVAILABLE)


LOG_LINES_SHOWN_ON_FAILURE = 60


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Remember whether the test itself failed, for the netns fixture's teardown."""
    outcome = yield
    report = outcome.get_result()
    if report.when == "call":
        item.netns_call_failed = report.failed


@pytest.fixture
def netns(tmp_path, monkeypatch, request):
    """make(node_count, extra_hosts=0, ipv6=False, settings=None) -> (lab, cluster, agent):
    the cluster started, a leader elected, the agent ready in the client namespace. When the
    test fails, the end of each node's log is printed (CI keeps no files: the log is the only
    account of what the cluster did)."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    made: list[tuple[NetLab, list]] = []
    clusters: list[NetCluster] = []

    def make(node_count: int, *, extra_hosts: int = 0, ipv6: bool = False, settings: dict | None = None):
        hosts = [f"h{i}" for i in range(1, node_count + extra_hosts + 1)] + [CLIENT_HOST]
        lab = NetLab(hosts, ipv6=ipv6)
        agents: list = []
        made.append((lab, agents))
        cluster = NetCluster(lab, tmp_path / f"cluster{len(made)}", node_count, settings)
        clusters.append(cluster)
        cluster.start_all()
        agent = cluster.agent()
        agents.append(agent)
        agent.wait_for_leader()
        return lab, cluster, agent

    yield make
    if getattr(request.node, "netns_call_failed", False):
        for cluster in clusters:
            for log_file in sorted(cluster.logs_dir.glob("*.log")):
                lines = log_file.read_text(errors="replace").splitlines()[-LOG_LINES_SHOWN_ON_FAILURE:]
                print(f"----- {log_file} (last {len(lines)} lines)", *lines, sep="\n")
    for lab, agents in made:
        try:
            for agent in agents:
                agent.close()
        finally:
            lab.close()
    left = os.listdir("/run/netns") if os.path.isdir("/run/netns") else []
    assert not [name for name in left for lab, _ in made if name.startswith(lab.prefix + "-")]
