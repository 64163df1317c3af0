"""A throwaway local cluster for `sandctl bench --local` and the benchmark's tests.

It writes a config with free 127.0.0.1 ports into its own directory and drives the nodes
through sandctl.cluster (the same supervisor as `sandctl cluster start`), so it only ever
signals the pids it started. It never touches the remembered cluster state (~/.sandstore).
"""

from __future__ import annotations

import socket
import time
from dataclasses import replace
from pathlib import Path

from node.config import ClusterConfig, NodeAddress, load_config, render_config

from sandctl import cluster
from sandctl.client import Client

LOCAL_NODE_COUNT = 3
START_DEADLINE_SECONDS = 30.0
CONFIG_FILE_NAME = "bench-cluster.toml"
EXEC_POLL_SECONDS = 0.001


def _wait_command_line_visible(pid: int, deadline: float) -> None:
    """Wait (bounded) until /proc/PID/cmdline is non-empty, i.e. execve has finished."""
    path = f"/proc/{pid}/cmdline"
    while time.monotonic() < deadline:
        try:
            if open(path, "rb").read():
                return
        except FileNotFoundError:
            return  # exited: the liveness check that follows reports it with the log tail
        except OSError:
            return  # no /proc: nothing to wait for
        time.sleep(EXEC_POLL_SECONDS)  # a few microseconds of execve; not test synchronisation


def free_ports(count: int) -> list[int]:
    """count distinct free TCP ports on 127.0.0.1 (all held open at once so none repeats)."""
    assert count >= 1
    sockets = []
    try:
        for _ in range(count):
            held = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            held.bind(("127.0.0.1", 0))
            sockets.append(held)
        ports = [held.getsockname()[1] for held in sockets]
    finally:
        for held in sockets:
            held.close()
    assert len(set(ports)) == count
    return ports


def local_config(node_count: int, template: ClusterConfig | None = None) -> ClusterConfig:
    """A config of node_count nodes on free loopback ports, with the template's settings."""
    assert node_count >= 1
    ports = free_ports(3 * node_count)
    nodes = tuple(
        NodeAddress(
            id=f"n{i + 1}",
            raft=f"127.0.0.1:{ports[3 * i]}",
            client=f"127.0.0.1:{ports[3 * i + 1]}",
            chunk=f"127.0.0.1:{ports[3 * i + 2]}",
        )
        for i in range(node_count)
    )
    if template is None:
        return ClusterConfig(nodes=nodes)
    return replace(template, nodes=nodes, path="")


class LocalCluster:
    """Nodes started from `directory` (config, data and logs all inside it)."""

    def __init__(self, directory: Path, node_count: int = LOCAL_NODE_COUNT,
                 template: ClusterConfig | None = None) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        config_path = self.directory / CONFIG_FILE_NAME
        config_path.write_text(render_config(local_config(node_count, template)))
        self.config = load_config(config_path)
        self.data_dir = self.directory / "data"
        self.pids: dict[str, int] = {}  # the current process of each node
        self.pids_started: list[int] = []  # every process ever started here, restarts included
        self.started = False

    def start(self, deadline_seconds: float = START_DEADLINE_SECONDS) -> str:
        """Start every node; returns the first leader's id.

        Not cluster.start_cluster: right after a vfork-based spawn, /proc/PID/cmdline can read
        empty for a moment (the kernel sets the new argument area late in execve), and its
        liveness check then takes a starting node for an exited one. So: spawn, wait until
        each node's command line is visible, then wait for a leader with the same check.
        """
        assert not self.started
        self.started = True  # set first: a failed start still gets stopped
        for node_id in self.config.node_ids():
            self.restart(node_id)
        deadline = time.monotonic() + deadline_seconds
        for pid in self.pids.values():
            _wait_command_line_visible(pid, deadline)
        with Client(self.config, timeout_seconds=deadline_seconds) as client:
            return cluster.wait_for_leader_while_alive(client, self.data_dir, dict(self.pids),
                                                       max(0.001, deadline - time.monotonic()))

    def kill(self, node_id: str) -> int:
        """SIGKILL one node we started; returns its pid."""
        assert node_id in self.pids, f"{node_id} was not started here"
        pid = cluster.kill_node(self.data_dir, node_id)
        assert pid == self.pids[node_id]
        return pid

    def restart(self, node_id: str) -> int:
        pid = cluster.spawn_node(self.config, self.data_dir, node_id)
        self.pids[node_id] = pid
        self.pids_started.append(pid)
        _wait_command_line_visible(pid, time.monotonic() + START_DEADLINE_SECONDS)
        return pid

    def log_tail(self, node_id: str, lines: int = 5) -> str:
        """The end of a node's log, for error messages when a node does not come back."""
        try:
            text = cluster.log_file(self.data_dir, node_id).read_text(errors="replace")
        except FileNotFoundError:
            return "(no log)"
        return " | ".join(line.strip() for line in text.splitlines()[-lines:])

    def stop(self) -> None:
        if self.started:
            cluster.stop_cluster(self.config, self.data_dir)
            self.started = False

    def __enter__(self) -> "LocalCluster":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
