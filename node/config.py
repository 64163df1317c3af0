"""Cluster configuration: one TOML file describes the whole cluster, every node reads it.

Every setting has a unit in its name. An invalid file raises ConfigError with one sentence
naming the key, which the CLIs print as `Error: ...`.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, fields, replace
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

from node.errors import ConfigError
from node.names import NODE_ID_RULE, is_valid_node_id
from node.security.sockets import check_security_mode
from node.transport.address import AddressError, HostPort, bind_socket, parse_host_port, tcp_endpoint

CONFIGS_DIR = Path(__file__).resolve().parent.parent / "configs"
DEFAULT_CONFIG_PATH = CONFIGS_DIR / "local-3.toml"

REPLICATORS = ("raft", "none")


ROLES = ("raft", "client", "chunk")


@dataclass(frozen=True)
class NodeAddress:
    """Where one node is reached (advertised) and where it listens (bind), per role.

    `raft`, `client` and `chunk` are ADVERTISED: what peers and clients connect to, and what
    travels in membership changes. The `*_bind` fields are this host's own business (empty:
    bind the advertised address), e.g. "0.0.0.0:7001" behind NAT or in a container."""

    id: str
    raft: str  # host:port peers connect to for Raft traffic
    client: str  # host:port clients connect to for requests
    chunk: str  # host:port for chunk reads and writes (served off the Raft thread)
    raft_bind: str = ""
    client_bind: str = ""
    chunk_bind: str = ""
    metrics: str = ""  # optional host:port where this node serves Prometheus metrics over HTTP (bound as given)

    def advertised(self, role: str) -> str:
        assert role in ROLES, role
        return getattr(self, role)

    def bind_address(self, role: str) -> str:
        assert role in ROLES, role
        return getattr(self, role + "_bind") or getattr(self, role)

    def endpoint(self, role: str) -> str:
        """The ZeroMQ endpoint others connect to for `role`."""
        return tcp_endpoint(self.advertised(role))

    def bind_endpoint(self, role: str) -> str:
        """The ZeroMQ endpoint this node binds for `role` (use with transport.address.bind_socket)."""
        return tcp_endpoint(self.bind_address(role))

    def bind(self, socket, role: str) -> None:
        """Bind a ZeroMQ socket where this node listens for `role` (IPv6 enabled when needed)."""
        bind_socket(socket, self.bind_address(role))


@dataclass(frozen=True)
class ClusterConfig:
    nodes: tuple[NodeAddress, ...]
    path: str = ""
    replicator: str = "raft"
    security: str = "curve"  # CurveZMQ on every port; "plaintext" only when a config says so (README: Security)
    tick_ms: int = 10
    # Heartbeat 20 ms, election timeout 500-1000 ms. The long election timeout is for silent
    # failures only (partition, pause, power): a loaded 2-core machine can stall a node's loop for
    # a few hundred ms, and 150-300 ms let such a stall depose a healthy leader. A crashed
    # leader's closed connections start a pre-vote after a heartbeat and a tick of silence
    # instead, the followers one after another in id order (campaign_on_leader_unreachable), so
    # the heartbeat interval, not the election timeout, sets how fast a crash fails over: 20 ms
    # gives a new leader 25-50 ms after the kill here.
    heartbeat_ticks: int = 2
    election_ticks_min: int = 50
    election_ticks_max: int = 100
    campaign_on_leader_unreachable: bool = True
    inflight_messages_max: int = 64
    message_bytes_max: int = 4 << 20
    frame_bytes_max: int = 64 << 20
    inline_bytes_max: int = 64 << 10
    chunk_size_bytes: int = 4 << 20
    replication: int = 3
    snapshot_threshold_entries: int = 8192
    snapshot_trailing_entries: int = 1024
    # A snapshot also waits until the log holds this share of the last snapshot's size in bytes
    # (0: the entry count alone decides): each one rewrites the whole state machine.
    snapshot_log_to_state_ratio: float = 0.5
    snapshot_chunk_bytes: int = 1 << 20
    gc_grace_seconds: float = 600.0
    session_ttl_seconds: float = 3600.0
    lmdb_map_size_bytes: int = 8 << 30
    chunk_map_size_bytes: int = 64 << 30
    request_timeout_seconds: float = 10.0
    # Self-healing data (node/repair/). A put succeeds once each chunk is durable on
    # min_write_replicas nodes (0: a majority of `replication`, e.g. 2 of 3) and is healed to
    # `replication` in the background.
    min_write_replicas: int = 0
    replica_timeout_seconds: float = 600.0  # a node silent this long has its chunks re-made elsewhere
    repair_bytes_per_second: int = 64 << 20  # repair and rebalance copies, cluster-wide
    repair_copies_in_flight_max: int = 4
    scrub_bytes_per_second: int = 4 << 20  # each node re-verifies its stored chunks at this rate
    rebalance_spread_fraction: float = 0.1  # used bytes per node kept within this of the mean

    def write_replicas_min(self) -> int:
        """Durable copies a put needs per chunk (min_write_replicas, or a majority)."""
        return self.min_write_replicas or self.replication // 2 + 1

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
    "inflight_messages_max": 1,
    "message_bytes_max": 1024,
    "frame_bytes_max": 1 << 16,
    "inline_bytes_max": 0,
    "chunk_size_bytes": 1024,
    "replication": 1,
    "snapshot_threshold_entries": 2,
    "snapshot_trailing_entries": 0,
    "snapshot_chunk_bytes": 1024,
    "lmdb_map_size_bytes": 1 << 20,
    "chunk_map_size_bytes": 1 << 20,
    "min_write_replicas": 0,
    "repair_bytes_per_second": 1024,
    "repair_copies_in_flight_max": 1,
    "scrub_bytes_per_second": 1024,
}
# Limits were once named max_* as well as *_max; one order now. The old names get a hint.
_RENAMED_SETTINGS = {"max_inflight_messages": "inflight_messages_max", "max_message_bytes": "message_bytes_max",
                     "max_frame_bytes": "frame_bytes_max", "inline_max_bytes": "inline_bytes_max"}
_BOOL_KEYS = {"campaign_on_leader_unreachable"}
_FLOAT_KEYS = {"gc_grace_seconds": 0.0, "session_ttl_seconds": 1.0, "request_timeout_seconds": 0.01,
               "replica_timeout_seconds": 0.1, "rebalance_spread_fraction": 0.01,
               "snapshot_log_to_state_ratio": 0.0}


def check_address(key: str, value: object) -> str:
    """An advertised address: "host:port" that others can connect to (no wildcard)."""
    parsed = _host_port(key, value)
    if parsed.is_wildcard:
        raise ConfigError(f"{key} {value} is a wildcard nobody can connect to: advertise this host's "
                          f"address and put the wildcard in {key}_bind")
    return value


def _host_port(key: str, value: object) -> HostPort:
    try:
        return parse_host_port(value)
    except AddressError as error:
        raise ConfigError(f"{key} {error}") from None


def _overlap(first: HostPort, second: HostPort) -> bool:
    """Whether two binds on one host would take the same port."""
    if first.port != second.port:
        return False
    return first.host == second.host or first.is_wildcard or second.is_wildcard


def _check_bind(where: str, role: str, advertised: HostPort, bind: HostPort) -> None:
    key = f"{where}.{role}_bind"
    if bind.is_loopback and not advertised.is_loopback:
        raise ConfigError(f"{key} {bind} is a loopback address but {where}.{role} advertises "
                          f"{advertised}: other hosts could not reach it")
    families = {advertised.family, bind.family} - {"name"}
    if families == {"ipv4", "ipv6"} and not (bind.family == "ipv6" and bind.is_wildcard):
        raise ConfigError(f"{key} {bind} and {where}.{role} {advertised} are of different IP versions")


def _parse_node(where: str, raw: dict) -> NodeAddress:
    extra_keys = set(raw) - {"id", "metrics", *ROLES, *(role + "_bind" for role in ROLES)}
    if extra_keys:
        raise ConfigError(f"unknown setting {where}.{sorted(extra_keys)[0]}")
    node_id = raw.get("id")
    if not is_valid_node_id(node_id):
        raise ConfigError(f"{where}.id must be {NODE_ID_RULE}, got {node_id!r}")
    values: dict[str, str] = {}
    binds: list[tuple[str, HostPort]] = []
    for role in ROLES:
        if role not in raw:
            raise ConfigError(f"{where}.{role} is missing")
        values[role] = check_address(f"{where}.{role}", raw[role])
        advertised = parse_host_port(values[role])
        bind = advertised
        if (role + "_bind") in raw:
            bind = _host_port(f"{where}.{role}_bind", raw[role + "_bind"])
            _check_bind(where, role, advertised, bind)
            values[role + "_bind"] = raw[role + "_bind"]
        for other_role, other in binds:
            if _overlap(bind, other):
                raise ConfigError(f"{where}.{role} binds {bind}, which {where}.{other_role} already binds")
        binds.append((role, bind))
    if "metrics" in raw:  # node/metrics.py
        metrics_bind = _host_port(f"{where}.metrics", raw["metrics"])
        for other_role, other in binds:
            if _overlap(metrics_bind, other):
                raise ConfigError(f"{where}.metrics binds {metrics_bind}, which {where}.{other_role} already binds")
        values["metrics"] = raw["metrics"]
    return NodeAddress(id=node_id, **values)


def _check_cluster_addresses(nodes: list[NodeAddress]) -> None:
    """Across nodes: advertised addresses unique, explicit binds not taken twice, and no mix of
    loopback and real hosts (a remote node would connect to its own loopback)."""
    advertised_by: dict[HostPort, str] = {}
    for position, node in enumerate(nodes):
        for role in ROLES:
            key = f"nodes[{position}].{role}"
            advertised = parse_host_port(node.advertised(role))
            if advertised in advertised_by:
                raise ConfigError(f"{key} {advertised} is used twice (also {advertised_by[advertised]})")
            advertised_by[advertised] = key
    bound_by: dict[HostPort, str] = {}
    for position, node in enumerate(nodes):
        for role in ROLES:
            key = f"nodes[{position}].{role}"
            if not getattr(node, role + "_bind"):
                continue
            bind = parse_host_port(getattr(node, role + "_bind"))
            # Wildcards are per host, and two hosts may bind the same private address behind
            # NAT; but a specific address bound twice, or another node's advertised one, is a typo.
            taken_by = bound_by.get(bind) or advertised_by.get(bind, key)
            if not bind.is_wildcard and taken_by != key:
                raise ConfigError(f"{key}_bind {bind} is used twice (also {taken_by})")
            bound_by[bind] = key + "_bind"
    loopback = {key for address, key in advertised_by.items() if address.is_loopback}
    if loopback and len(loopback) != len(advertised_by):
        remote = next(key for address, key in advertised_by.items() if not address.is_loopback)
        raise ConfigError(f"{sorted(loopback)[0]} advertises a loopback address but {remote} does not: "
                          "a node on another host could not reach it")


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
        if key in _RENAMED_SETTINGS:
            raise ConfigError(f"cluster.{key} is now called cluster.{_RENAMED_SETTINGS[key]} (every limit's "
                              "name ends in _max): rename it in the config")
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
        elif key in _BOOL_KEYS:
            if not isinstance(value, bool):
                raise ConfigError(f"cluster.{key} must be true or false, got {value!r}")
        elif key == "replicator":
            if value not in REPLICATORS:
                raise ConfigError(f"cluster.replicator must be one of {', '.join(REPLICATORS)}, got {value!r}")
        elif key == "security":
            value = check_security_mode(f"cluster.{key}", value)
        settings[key] = value

    raw_nodes = document.get("nodes")
    if not isinstance(raw_nodes, list) or not raw_nodes:
        raise ConfigError("the config needs at least one [[nodes]] entry")
    nodes: list[NodeAddress] = []
    for position, raw in enumerate(raw_nodes):
        where = f"nodes[{position}]"
        if not isinstance(raw, dict):
            raise ConfigError(f"{where} must be a table")
        node = _parse_node(where, raw)
        if any(node.id == other.id for other in nodes):
            raise ConfigError(f"{where}.id {node.id!r} appears twice")
        nodes.append(node)
    _check_cluster_addresses(nodes)

    config = ClusterConfig(nodes=tuple(nodes), path=path, **settings)
    if config.election_ticks_min <= config.heartbeat_ticks:
        raise ConfigError("cluster.election_ticks_min must be larger than cluster.heartbeat_ticks")
    if config.election_ticks_max <= config.election_ticks_min:
        raise ConfigError("cluster.election_ticks_max must be larger than cluster.election_ticks_min")
    if config.inline_bytes_max > config.chunk_size_bytes:
        raise ConfigError("cluster.inline_bytes_max must not exceed cluster.chunk_size_bytes")
    if config.min_write_replicas > config.replication:
        raise ConfigError("cluster.min_write_replicas must not exceed cluster.replication")
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
        if isinstance(value, bool):
            lines.append(f"{f.name} = {'true' if value else 'false'}")  # TOML's spelling, not repr's
        else:
            lines.append(f"{f.name} = {value!r}" if not isinstance(value, str) else f'{f.name} = "{value}"')
    for address in config.nodes:
        lines += ["", "[[nodes]]", f'id = "{address.id}"']
        for role in ROLES:
            lines.append(f'{role} = "{address.advertised(role)}"')
            if getattr(address, role + "_bind"):
                lines.append(f'{role}_bind = "{getattr(address, role + "_bind")}"')
        if address.metrics:
            lines.append(f'metrics = "{address.metrics}"')
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
