"""Real node processes on 127.0.0.1 for end-to-end tests.

Every test gets its own HOME, config (free ports) and data dir under tmp_path. Teardown
SIGKILLs exactly the pids this test started (recorded in the handle or in the test's own
pid files), even when the test failed, and never looks for processes by name.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from node.config import ClusterConfig, load_config, render_config
from sandctl import cluster as supervisor
from sandctl import state
from sandctl.client import Client

START_DEADLINE_SECONDS = 30.0
SANDCTL = str(Path(sys.executable).parent / "sandctl")
KILL_WAIT_SECONDS = 10.0


def write_config(path: Path, node_count: int = 3, replicator: str = "raft", **settings) -> ClusterConfig:
    """A config with free 127.0.0.1 ports; replicator "none" needs node_count 1. settings
    override ClusterConfig fields (e.g. chunk_size_bytes=1 << 20)."""
    path.write_text(render_config(supervisor.loopback_config(node_count, replicator=replicator, **settings)))
    return load_config(path)


def recorded_pids(data_dir: Path) -> dict[int, str]:
    """{pid: node id} from the pid files under a test's own data dir."""
    pids = {}
    if data_dir.is_dir():
        for pid_file in data_dir.glob(f"*/{supervisor.PID_FILE_NAME}"):
            text = pid_file.read_text().strip()
            if text.isdigit():
                pids[int(text)] = pid_file.parent.name
    return pids


def kill_exactly(pids: dict[int, str]) -> None:
    """SIGKILL each pid that is still the sandstore node we started, then wait for it."""
    for pid, node_id in pids.items():
        if supervisor.is_node_process(pid, node_id):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    deadline = time.monotonic() + KILL_WAIT_SECONDS
    for pid, node_id in pids.items():
        while supervisor.is_node_process(pid, node_id):
            assert time.monotonic() < deadline, f"pid {pid} ({node_id}) survived SIGKILL"
            time.sleep(0.01)


@dataclass
class ProcessLedger:
    """Every node pid a test started, for teardown."""

    data_dir: Path
    pids: dict[int, str] = field(default_factory=dict)

    def collect(self) -> None:
        self.pids.update(recorded_pids(self.data_dir))

    def kill_all(self) -> None:
        self.collect()
        kill_exactly(self.pids)


@dataclass
class ClusterHandle:
    config_path: Path
    config: ClusterConfig
    data_dir: Path
    home: Path
    client: Client
    pids: dict[str, int]  # node id -> pid of the running process (tests update it on restart)
    ledger: ProcessLedger

    def env(self) -> dict[str, str]:
        return sandctl_env(self.home)

    def sandctl(self, *args: str, input: bytes | None = None, timeout_seconds: float = 60) -> subprocess.CompletedProcess:
        return run_sandctl(self.home, *args, input=input, timeout_seconds=timeout_seconds)


def sandctl_env(home: Path) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("SANDSTORE_")}
    env["HOME"] = str(home)
    return env


def run_sandctl(home: Path, *args: str, input: bytes | None = None, timeout_seconds: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([SANDCTL, *args], env=sandctl_env(home), input=input, capture_output=True,
                          timeout=timeout_seconds, check=False)


@pytest.fixture
def e2e_home(isolated_home) -> Path:
    """tests/conftest.py's isolated_home, by the name these tests use."""
    return isolated_home


@pytest.fixture
def ledger(tmp_path, monkeypatch) -> ProcessLedger:
    """Teardown kills every node recorded under tmp_path/data, and any pid a test adds.
    The clusters a test starts share one keys directory, tmp_path/data/keys (created by the
    first start), which this process's clients find through $SANDSTORE_KEYS_DIR."""
    ledger = ProcessLedger(tmp_path / "data")
    monkeypatch.setenv("SANDSTORE_KEYS_DIR", str(tmp_path / "data" / "keys"))
    yield ledger
    ledger.kill_all()


CLUSTER_KINDS = {"raft-3": (3, "raft"), "none-1": (1, "none"), "raft-3-chunks-1mib": (3, "raft"),
                 "raft-3-ticks-100ms": (3, "raft")}
# Config overrides of a kind (small chunks keep large-file tests quick; long ticks make a
# follower's apply hold, APPLY_HOLD_TICKS, last seconds).
CLUSTER_SETTINGS = {"raft-3-chunks-1mib": {"chunk_size_bytes": 1 << 20}, "raft-3-ticks-100ms": {"tick_ms": 100}}


@pytest.fixture
def cluster(request, tmp_path, e2e_home, ledger) -> ClusterHandle:
    """A running cluster started through sandctl.cluster and remembered in this test's HOME,
    so `sandctl VERB` subprocesses need no flags. Three Raft nodes by default; parametrize
    indirectly with a key of CLUSTER_KINDS for another shape."""
    kind = getattr(request, "param", "raft-3")
    node_count, replicator = CLUSTER_KINDS[kind]
    config_path = tmp_path / "cluster.toml"
    config = write_config(config_path, node_count, replicator, **CLUSTER_SETTINGS.get(kind, {}))
    data_dir = ledger.data_dir
    pids, _leader = supervisor.start_cluster(config, data_dir, START_DEADLINE_SECONDS)
    ledger.pids.update({pid: node_id for node_id, pid in pids.items()})
    state.remember(config_path, data_dir)
    client = Client(config, timeout_seconds=10)
    try:
        yield ClusterHandle(config_path, config, data_dir, e2e_home, client, dict(pids), ledger)
    finally:
        client.close()


class E2ETools:
    """The helpers above, handed to tests as a fixture (test modules must not import conftest)."""

    write_config = staticmethod(write_config)
    free_ports = staticmethod(supervisor.free_ports)
    recorded_pids = staticmethod(recorded_pids)
    run_sandctl = staticmethod(run_sandctl)
    is_node_process = staticmethod(supervisor.is_node_process)


@pytest.fixture
def e2e_tools() -> E2ETools:
    return E2ETools()
