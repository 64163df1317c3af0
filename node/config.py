"""Cluster configuration: one TOML file describes the whole cluster, every node reads it.

Every setting has a unit in its name. An invalid file raises ConfigError with one sentence
naming the key, which the CLIs print as `Error: ...`.
"""

from __future__ import annotations

import ipaddress
import os
import sys
from dataclasses import dataclass, fields, replace
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

from node.errors import ConfigError

CONFIGS_DIR = Path(__file__).resolve().parent.parent / "configs"
DEFAULT_CONFIG_PATH = CONFIGS_DIR / "local-3.toml"

REPLICATORS = ("raft", "none")


@dataclass(frozen=True)
class NodeAddress:
    id: str
    raft: str  # host:port for peer (Raft) traffic
    client: str  # host:port for client requests
    chunk: str  # host:port for chunk reads and writes (served off the Raft thread)

    def endpoint(self, which: str) -> str:
        return "tcp://" + getattr(self, which)


@dataclass(frozen=True)
class ClusterConfig:
    nodes: tuple[NodeAddress, ...]
    path: str = ""
    replicator: str = "raft"
    tick_ms: int = 10
    heartbeat_ticks: int = 5
    election_ticks_min: int = 15
    election_ticks_max: int = 30
    max_inflight_messages: int = 64
    max_message_bytes: int = 4 << 20
    max_frame_bytes: int = 64 << 20
    inline_max_bytes: int = 64 << 10
    chunk_size_bytes: int = 4 << 20
    replication: int = 3
    snapshot_threshold_entries: int = 8192
    snapshot_trailing_entries: int = 1024
    snapshot_chunk_bytes: int = 1 << 20
    gc_grace_seconds: float = 600.0
    session_ttl_seconds: float = 3600.0
    lmdb_map_size_bytes: int = 8 << 30
    chunk_map_size_bytes: int = 64 << 30
    request_timeout_seconds: float = 10.0

    def node(self, node_id: str) -> NodeAddress:
        for address in self.nodes:
            if address.id == node_id:
                return address
        known = ", ".join(address.id for address in self.nodes)
        raise ConfigError(f"node id {node_id!r} is not in {self.path or 'the config'} (known: {known})")

    def node_ids(self) -> list[str]:
        return [address.id for address in self.nodes]

    def with_node(self, address: NodeAddress) -> "ClusterConfig":
        return replace(self, nodes=tuple(n for n in self.nodes if n.id != address.id) + (address,))


_INT_KEYS = {
    "tick_ms": 1,
    "heartbeat_ticks": 1,
    "election_ticks_min": 2,
    "election_ticks_max": 3,
    "max_inflight_messages": 1,
    "max_message_bytes": 1024,
    "max_frame_bytes": 1 << 16,
    "inline_max_bytes": 0,
    "chunk_size_bytes": 1024,
    "replication": 1,
    "snapshot_threshold_entries": 2,
    "snapshot_trailing_entries": 0,
    "snapshot_chunk_bytes": 1024,
    "lmdb_map_size_bytes": 1 << 20,
    "chunk_map_size_bytes": 1 << 20,
}
_FLOAT_KEYS = {"gc_grace_seconds": 0.0, "session_ttl_seconds": 1.0, "request_timeout_seconds": 0.01}


def check_address(key: str, value: object) -> str:
    if not isinstance(value, str) or value.count(":") != 1:
        raise ConfigError(f"{key} must be \"host:port\", got {value!r}")
    host, port_text = value.split(":")
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ConfigError(f"{key} has an invalid port in {value!r}")
    if host != "localhost":
        try:
            ipaddress.ip_address(host)
        except ValueError:
            raise ConfigError(f"{key} must name an IP address or localhost, got {host!r}") from None
    return value


def parse_config(document: dict, path: str = "") -> ClusterConfig:
    """Validate a parsed TOML document. Raises ConfigError naming the offending key."""
    if not isinstance(document, dict):
        raise ConfigError("the config must be a TOML table")
    unknown = set(document) - {"cluster", "nodes"}
    if unknown:
        raise ConfigError(f"unknown top-level key {sorted(unknown)[0]!r} (expected [cluster] and [[nodes]])")
    cluster = document.get("cluster", {})
    if not isinstance(cluster, dict):
        raise ConfigError("[cluster] must be a table")
    settings: dict = {}
    known = {f.name for f in fields(ClusterConfig)} - {"nodes", "path"}
    for key, value in cluster.items():
        if key not in known:
            raise ConfigError(f"unknown setting cluster.{key}")
        if key in _INT_KEYS:
            if isinstance(value, bool) or not isinstance(value, int):
                raise ConfigError(f"cluster.{key} must be an integer, got {value!r}")
            if value < _INT_KEYS[key]:
                raise ConfigError(f"cluster.{key} must be at least {_INT_KEYS[key]}, got {value}")
        elif key in _FLOAT_KEYS:
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ConfigError(f"cluster.{key} must be a number, got {value!r}")
            if value < _FLOAT_KEYS[key]:
                raise ConfigError(f"cluster.{key} must be at least {_FLOAT_KEYS[key]}, got {value}")
            value = float(value)
        elif key == "replicator":
            if value not in REPLICATORS:
                raise ConfigError(f"cluster.replicator must be one of {', '.join(REPLICATORS)}, got {value!r}")
        settings[key] = value

    raw_nodes = document.get("nodes")
    if not isinstance(raw_nodes, list) or not raw_nodes:
        raise ConfigError("the config needs at least one [[nodes]] entry")
    nodes: list[NodeAddress] = []
    seen_ids: set[str] = set()
    seen_addresses: set[str] = set()
    for position, raw in enumerate(raw_nodes):
        where = f"nodes[{position}]"
        if not isinstance(raw, dict):
            raise ConfigError(f"{where} must be a table")
        extra_keys = set(raw) - {"id", "raft", "client", "chunk"}
        if extra_keys:
            raise ConfigError(f"unknown setting {where}.{sorted(extra_keys)[0]}")
        node_id = raw.get("id")
        if not isinstance(node_id, str) or not node_id or len(node_id) > 64 or not node_id.replace("-", "").replace("_", "").isalnum():
            raise ConfigError(f"{where}.id must be a short name of letters, digits, - or _, got {node_id!r}")
        if node_id in seen_ids:
            raise ConfigError(f"{where}.id {node_id!r} appears twice")
        seen_ids.add(node_id)
        addresses = {}
        for which in ("raft", "client", "chunk"):
            if which not in raw:
                raise ConfigError(f"{where}.{which} is missing")
            address = check_address(f"{where}.{which}", raw[which])
            if address in seen_addresses:
                raise ConfigError(f"{where}.{which} {address} is used twice")
            seen_addresses.add(address)
            addresses[which] = address
        nodes.append(NodeAddress(id=node_id, **addresses))

    config = ClusterConfig(nodes=tuple(nodes), path=path, **settings)
    if config.election_ticks_min <= config.heartbeat_ticks:
        raise ConfigError("cluster.election_ticks_min must be larger than cluster.heartbeat_ticks")
    if config.election_ticks_max <= config.election_ticks_min:
        raise ConfigError("cluster.election_ticks_max must be larger than cluster.election_ticks_min")
    if config.inline_max_bytes > config.chunk_size_bytes:
        raise ConfigError("cluster.inline_max_bytes must not exceed cluster.chunk_size_bytes")
    if config.replicator == "none" and len(config.nodes) != 1:
        raise ConfigError("cluster.replicator = \"none\" needs exactly one [[nodes]] entry")
    return config


def load_config(path: str | os.PathLike) -> ClusterConfig:
    """Read and validate a config file. Raises ConfigError with one readable line."""
    path = Path(path)
    try:
        text = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except OSError as error:
        raise ConfigError(f"cannot read config file {path}: {error.strerror}") from None
    try:
        document = tomllib.loads(text.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        raise ConfigError(f"{path} is not valid TOML: {error}") from None
    return parse_config(document, str(path))


def render_config(config: ClusterConfig) -> str:
    """TOML text for a config (used when a cluster grows: the new member list is written out)."""
    lines = ["[cluster]"]
    for f in fields(ClusterConfig):
        if f.name in ("nodes", "path"):
            continue
        value = getattr(config, f.name)
        lines.append(f"{f.name} = {value!r}" if not isinstance(value, str) else f'{f.name} = "{value}"')
    for address in config.nodes:
        lines += ["", "[[nodes]]", f'id = "{address.id}"', f'raft = "{address.raft}"',
                  f'client = "{address.client}"', f'chunk = "{address.chunk}"']
    return "\n".join(lines) + "\n"


def default_data_dir(config_path: str | os.PathLike) -> Path:
    """Where a cluster keeps its data when no --data-dir is given: $SANDSTORE_DATA_DIR, else
    ~/.sandstore/data/<config file stem>. Each node uses <data dir>/<node id>/."""
    explicit = os.environ.get("SANDSTORE_DATA_DIR")
    if explicit:
        return Path(explicit)
    return Path.home() / ".sandstore" / "data" / Path(config_path).stem


def node_data_dir(data_dir: str | os.PathLike, node_id: str) -> Path:
    return Path(data_dir) / node_id
