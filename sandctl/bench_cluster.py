"""A throwaway local cluster for `sandctl bench --local` and the benchmark's tests.

It writes a config with free 127.0.0.1 ports into its own directory and drives the nodes
through sandctl.cluster (the same supervisor as `sandctl cluster start`), so it only ever
signals the pids it started. It never touches the remembered cluster state (~/.sandstore).
"""

from __future__ import annotations

from pathlib import Path

from node.config import ClusterConfig, load_config, render_config

from sandctl import cluster

LOCAL_NODE_COUNT = 3
START_DEADLINE_SECONDS = 30.0
CONFIG_FILE_NAME = "bench-cluster.toml"


class LocalCluster:
    """Nodes started from `directory` (config, data and logs all inside it)."""

    def __init__(self, directory: Path, node_count: int = LOCAL_NODE_COUNT,
                 template: ClusterConfig | None = None) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        config_path = self.directory / CONFIG_FILE_NAME
        config_path.write_text(render_config(cluster.loopback_config(node_count, template)))
        self.config = load_config(config_path)
        # The config file sits in the data directory, so a client given only the config finds
        # the cluster's keys beside it (<data dir>/keys), as for a grown cluster's cluster.toml.
        self.data_dir = self.directory
        self.pids: dict[str, int] = {}  # the current process of each node
        self.pids_started: list[int] = []  # every process ever started here, restarts included
        self.started = False

    def start(self, deadline_seconds: float = START_DEADLINE_SECONDS) -> str:
        """Start every node; returns the first leader's id."""
        assert not self.started
        self.started = True  # set first: a failed start still gets stopped
        self.pids, leader = cluster.start_cluster(self.config, self.data_dir, deadline_seconds)
        self.pids_started.extend(self.pids.values())
        return leader

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
        return pid

    def stop(self) -> None:
        if self.started:
            cluster.stop_cluster(self.config, self.data_dir)
            self.started = False

    def __enter__(self) -> "LocalCluster":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
