"""A real 3-node cluster on 127.0.0.1 for the attack tests, and the attacker's sockets.

The cluster is started through sandctl.cluster (keys created as `sandctl cluster start` does)
in the test's own tmp_path and HOME, and stopped by its recorded pids in teardown. The attacker
is this test process: it has the project's own codec and every public key (public keys are
not secret), but not the cluster's secret keys.
"""

from __future__ import annotations

import contextlib
import io
import os
import random
import time
from dataclasses import dataclass, field
from pathlib import Path

import zmq

from node import protocol
from node.config import ClusterConfig, load_config, render_config
from node.errors import NotFound
from node.metadata.commands import encode_command
from node.raft.types import ConfState, Entry, EntryKind, Message, MessageKind, SnapshotMeta
from node.security.keyring import KeyRing
from node.security.zap import plaintext_user_id
from node.transport.codec import encode_forward, encode_message
from sandctl import cluster as supervisor
from sandctl.client import Client
from tests.waiting import wait_until

START_DEADLINE_SECONDS = 60.0
CHUNK_SIZE_BYTES = 1 << 20
REPLY_WAIT_MS = 2000  # how long an answer to a forged request is awaited (plain-text mode)
EVIL = "evil"
HUGE_TERM = (1 << 64) - 1
FORGED_TERM_JUMP = 1000  # forged terms lie this far above the cluster's: no election gets there


@dataclass
class RunningCluster:
    config: ClusterConfig
    data_dir: Path
    pids: dict[str, int]
    client: Client
    mode: str
    files: dict[str, bytes] = field(default_factory=dict)

    @property
    def keys_dir(self) -> Path:
        return self.data_dir / "keys"

    @property
    def cluster_id(self) -> str:
        return self.client.security.cluster_id

    def node_public_key(self, node_id: str) -> bytes:
        return KeyRing.load(self.keys_dir).node_public_key(node_id)

    def statuses(self) -> dict[str, dict | None]:
        return self.client.status_all(timeout_seconds=5)

    def highest_term(self) -> int:
        return max(status["term"] for status in wait_until(self._all_statuses, "every node answers status"))

    def _all_statuses(self):
        statuses = self.statuses()
        return list(statuses.values()) if all(statuses.values()) else None

    def write_files(self, seed: int) -> None:
        rng = random.Random(seed)
        self.files = {"/small": rng.randbytes(300), "/big": rng.randbytes(CHUNK_SIZE_BYTES * 5 // 2)}
        self.client.write_file("/small", self.files["/small"])
        self.client.put_file("/big", io.BytesIO(self.files["/big"]))

    def assert_intact(self) -> None:
        """Every node we started is the same live process, answers, and serves every file
        byte-identical from its own state; the leader serves them too (linearizable)."""
        for node_id, pid in self.pids.items():
            assert supervisor.is_node_process(pid, node_id), f"node {node_id} (pid {pid}) is gone"
        statuses = wait_until(self._all_statuses, "every node answers status")
        assert {status["pid"] for status in statuses} == set(self.pids.values())
        for path, expected in self.files.items():
            out = io.BytesIO()
            self.client.get_file(path, out)
            assert out.getvalue() == expected, f"{path} changed"
        for node_id in self.pids:
            with Client(self.config, node=node_id, timeout_seconds=10, security=self.client.security) as pinned:
                def served_intact() -> bool:
                    for path, expected in self.files.items():
                        out = io.BytesIO()
                        try:
                            pinned.get_file(path, out, stale=True)
                        except NotFound:
                            return False  # a follower that has not learned the commit yet
                        if out.getvalue() != expected:
                            return False
                    return True
                wait_until(served_intact, f"node {node_id} serves every file intact from its own state")
        for node_id in self.pids:
            assert supervisor.is_node_process(self.pids[node_id], node_id), f"node {node_id} died"


def start_cluster(tmp_path: Path, mode: str) -> RunningCluster:
    config_path = tmp_path / "cluster.toml"
    config_path.write_text(render_config(supervisor.loopback_config(3, security=mode,
                                                                     chunk_size_bytes=CHUNK_SIZE_BYTES)))
    config = load_config(config_path)
    data_dir = tmp_path / "data"
    try:
        pids, _leader = supervisor.start_cluster(config, data_dir, START_DEADLINE_SECONDS)
    except BaseException:
        stop_cluster(config, data_dir)
        raise
    client = Client(config, timeout_seconds=20, data_dir=data_dir)
    return RunningCluster(config, data_dir, pids, client, mode)


@contextlib.contextmanager
def running_cluster(tmp_path: Path, mode: str, *, files_seed: int):
    """A started cluster holding write_files(files_seed)'s files; its client closed and exactly
    its processes stopped afterwards, also when the test failed."""
    cluster = start_cluster(tmp_path, mode)
    try:
        cluster.write_files(seed=files_seed)
        yield cluster
    finally:
        cluster.client.close()
        stop_cluster(cluster.config, cluster.data_dir)


def stop_cluster(config: ClusterConfig, data_dir: Path) -> None:
    """Stop exactly the processes recorded under data_dir (pid files checked against /proc)."""
    supervisor.stop_nodes(data_dir, config.node_ids(), grace_seconds=5)


# ----- the attacker


class Attacker:
    """DEALERs of a process without the cluster's secret keys.

    identity "none": no security at all (ZeroMQ's NULL mechanism);
    "foreign-key": a CURVE key of its own, with the node's real public key (a full CurveZMQ
    handshake that only authorization can refuse);
    "plaintext": the plain-text credentials (a claimed name and the cluster id), for a cluster
    explicitly in plain-text mode."""

    def __init__(self, cluster: RunningCluster, identity: str) -> None:
        assert identity in ("none", "foreign-key", "plaintext"), identity
        self.cluster = cluster
        self.identity = identity
        self.context = zmq.Context()
        self.sockets: list[zmq.Socket] = []
        self.monitors: list[zmq.Socket] = []
        self.public_key, self.secret_key = zmq.curve_keypair()

    def dealer(self, node_id: str, port: str, *, routing_id: str = EVIL, claim: str = EVIL) -> zmq.Socket:
        address = getattr(self.cluster.config.node(node_id), port)
        dealer = self.context.socket(zmq.DEALER)
        dealer.setsockopt(zmq.LINGER, 0)
        dealer.setsockopt(zmq.IDENTITY, routing_id.encode())
        if self.identity == "foreign-key":
            dealer.setsockopt(zmq.CURVE_SERVERKEY, self.cluster.node_public_key(node_id))
            dealer.setsockopt(zmq.CURVE_PUBLICKEY, self.public_key)
            dealer.setsockopt(zmq.CURVE_SECRETKEY, self.secret_key)
        elif self.identity == "plaintext":
            kind = "node" if port == "raft" else "client"
            dealer.setsockopt(zmq.PLAIN_USERNAME, plaintext_user_id(kind, claim))
            dealer.setsockopt(zmq.PLAIN_PASSWORD, self.cluster.cluster_id.encode("ascii"))
        monitor = dealer.get_monitor_socket(zmq.EVENT_HANDSHAKE_SUCCEEDED | zmq.EVENT_HANDSHAKE_FAILED_AUTH
                                            | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
                                            | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL | zmq.EVENT_DISCONNECTED)
        self.monitors.append(monitor)
        dealer.connect(f"tcp://{address}")
        self.sockets.append(dealer)
        return dealer

    def handshake_outcome(self, dealer: zmq.Socket) -> str:
        """Wait for the dealer's first handshake to end: "succeeded" or "failed"."""
        monitor = self.monitors[self.sockets.index(dealer)]

        def outcome():
            while monitor.poll(0):
                event = zmq.utils.monitor.recv_monitor_message(monitor)["event"]
                if event == zmq.EVENT_HANDSHAKE_SUCCEEDED:
                    return "succeeded"
                if event != zmq.EVENT_DISCONNECTED:
                    return "failed"
            return None
        return wait_until(outcome, "the attacker's handshake ends", 20)

    def close(self) -> None:
        for monitor, dealer in zip(self.monitors, self.sockets):
            dealer.disable_monitor()
            monitor.close(linger=0)
            dealer.close(linger=0)
        self.context.term()


def request_reply(dealer: zmq.Socket, op: str, args: dict, frames: tuple = ()) -> dict | None:
    """Send one request; its decoded reply, or None if nothing came within REPLY_WAIT_MS."""
    dealer.send_multipart([protocol.request(1, op, args), *frames])
    if not dealer.poll(REPLY_WAIT_MS):
        return None
    return protocol.decode(dealer.recv_multipart()[0], 1 << 30)


# ----- the forged messages of the audit (issue 11), with the project's own codec


def forged_raft_frames(target: str, term: int, last_index: int, source: str = EVIL) -> list[bytes]:
    """One frame per audit attack on the raft port, addressed to `target`."""
    hostile = encode_command("write_file", {"path": "/small", "data": b"attacker content", "size": 16,
                                            "client": "evil-client", "seq": 1}, time.time_ns())
    forged = term + FORGED_TERM_JUMP
    entries = (Entry(forged, last_index + 1, EntryKind.NORMAL, hostile),)
    messages = [
        # Rewrite acknowledged data: an APPEND from a made-up peer with a higher term.
        Message(MessageKind.APPEND, source, target, forged, log_term=term, index=last_index, entries=entries,
                commit=last_index + 1),
        # Erase the namespace: an empty snapshot image.
        Message(MessageKind.INSTALL_SNAPSHOT, source, target, forged,
                snapshot_meta=SnapshotMeta(last_index + 10, forged, ConfState(voters=frozenset({source})), 0),
                snapshot_offset=0, snapshot_data=b"", snapshot_done=True),
        # Crash: a commit beyond the log end; a snapshot without meta; an index gap.
        Message(MessageKind.HEARTBEAT, source, target, term, commit=10**12),
        Message(MessageKind.INSTALL_SNAPSHOT, source, target, forged, snapshot_done=True),
        Message(MessageKind.APPEND, source, target, forged, log_term=term, index=last_index,
                entries=(Entry(forged, last_index + 1), Entry(forged, last_index + 3))),
        Message(MessageKind.APPEND_RESPONSE, source, target, term, index=10**12),
        # Force an election.
        Message(MessageKind.TIMEOUT_NOW, source, target, term),
        # Brick: a term msgpack overflows on the next increment.
        Message(MessageKind.HEARTBEAT, source, target, HUGE_TERM),
    ]
    return [encode_message(message) for message in messages] + [encode_forward({"propose": hostile})]


CLIENT_PORT_ATTACKS = (
    ("add_learner", {"node": "a b", "raft": "127.0.0.1:1", "client": "127.0.0.1:2", "chunk": "127.0.0.1:3"}),
    ("gc", {"grace_seconds": -1.0}),
    ("gc", {"grace_seconds": float("nan")}),
)
# Only for a cluster with keys: in plain-text mode every claimed client is an admin (documented).
CLIENT_PORT_ADMIN_ATTACKS = (
    ("add_learner", {"node": "spy", "raft": "127.0.0.1:1", "client": "127.0.0.1:2", "chunk": "127.0.0.1:3"}),
    ("remove_node", {"node": "n2"}),
    ("write_file", {"path": "/small", "data": b"attacker", "size": 8, "client": "evil-client", "seq": 1}),
    ("gc", {"grace_seconds": 0.0}),
)
CHUNK_PORT_ATTACKS = (
    ("chunk_gc", {"grace_seconds": 0.0}),
    ("chunk_gc", {"grace_seconds": 0.0}),
)


def environment_without_sandstore() -> dict[str, str]:
    return {key: value for key, value in os.environ.items() if not key.startswith("SANDSTORE_")}
