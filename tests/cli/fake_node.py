"""An in-process stand-in for a node's client port: a ROUTER on 127.0.0.1 that speaks
node/protocol.py and answers from a handler, so the client library and the CLI can be tested
without the node daemon.

handler(op, args) returns a result, raises a SandStoreError (sent as an error reply), or
returns DROP (the request is swallowed, as by a node that crashed after receiving it).
"""

from __future__ import annotations

import posixpath
import socket
import threading
import time
from collections.abc import Callable

import zmq

from node import protocol
from node.config import ClusterConfig, NodeAddress
from node.errors import (
    AlreadyExists,
    BadRequest,
    IsADirectory,
    NotADirectory,
    NotEmpty,
    NotFound,
    SandStoreError,
    TooLarge,
)

DROP = object()
POLL_MS = 20
FRAME_BYTES_MAX = 1 << 20


def free_port() -> int:
    """A port nothing listens on right now (for 'down' nodes and unused addresses)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def make_config(client_addresses: dict[str, str], **settings) -> ClusterConfig:
    nodes = tuple(
        NodeAddress(id=node_id, raft=f"127.0.0.1:{free_port()}", client=address, chunk=f"127.0.0.1:{free_port()}")
        for node_id, address in client_addresses.items()
    )
    return ClusterConfig(nodes=nodes, **settings)


class FakeNode:
    def __init__(self, node_id: str, handler: Callable[[str, dict], object]) -> None:
        self.node_id = node_id
        self.handler = handler
        self.requests: list[tuple[str, dict]] = []  # (op, args) in arrival order
        self._lock = threading.Lock()
        self._context = zmq.Context()
        self._socket = self._context.socket(zmq.ROUTER)
        self._socket.setsockopt(zmq.LINGER, 0)
        self.port = self._socket.bind_to_random_port("tcp://127.0.0.1")
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._serve, name=f"fake-{node_id}", daemon=True)
        self._thread.start()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def ops(self) -> list[str]:
        with self._lock:
            return [op for op, _ in self.requests]

    def requests_of(self, op: str) -> list[dict]:
        with self._lock:
            return [args for request_op, args in self.requests if request_op == op]

    def wait_for_requests(self, count: int, timeout_seconds: float = 5.0) -> None:
        deadline = time.monotonic() + timeout_seconds
        while len(self.ops()) < count:
            assert time.monotonic() < deadline, f"{self.node_id} saw {self.ops()}, wanted {count} requests"
            time.sleep(0.005)

    def close(self) -> None:
        self._stopping.set()
        self._thread.join(timeout=5)
        self._socket.close(linger=0)
        self._context.term()

    def _serve(self) -> None:
        while not self._stopping.is_set():
            if not self._socket.poll(POLL_MS):
                continue
            identity, frame = self._socket.recv_multipart()
            try:
                request_id, op, args = protocol.validate_request(protocol.decode(frame, FRAME_BYTES_MAX))
            except BadRequest as error:
                self._socket.send_multipart([identity, protocol.reply_error(0, error)])
                continue
            with self._lock:
                self.requests.append((op, args))
            try:
                result = self.handler(op, args)
            except SandStoreError as error:
                self._socket.send_multipart([identity, protocol.reply_error(request_id, error)])
                continue
            if result is DROP:
                continue
            self._socket.send_multipart([identity, protocol.reply_ok(request_id, result)])


def status_of(node_id: str, role: str, leader: str = "", term: int = 2) -> dict:
    return {
        "id": node_id, "role": role, "term": term, "leader": leader, "vote": leader, "commit": 7, "applied": 7,
        "first_index": 1, "last_index": 7, "voters": ["n1", "n2", "n3"], "learners": [], "voters_outgoing": [],
        "addresses": {}, "last_contact_ms": {}, "elections_seen": 1, "commit_latency_ms": {"p50": 1.0, "p99": 2.5},
        "fsync_latency_ms": {"p50": 0.5, "p99": 1.0}, "snapshot_index": 0, "log_entries": 7, "log_bytes": 700,
        "chunks_stored": 0, "chunk_bytes": 0, "pid": 4242,
    }


class Namespace:
    """A tiny in-memory file system answering the namespace ops like a leader would.
    Good enough to exercise the CLI's formatting and exit codes; not a model of the node."""

    def __init__(self, node_id: str = "n1", inline_bytes_max: int = 65536) -> None:
        self.node_id = node_id
        self.inline_bytes_max = inline_bytes_max
        self.entries: dict[str, dict] = {"/": self._stat("/", "dir", 0o755)}
        self.data: dict[str, bytes] = {}

    @staticmethod
    def _stat(path: str, kind: str, mode: int, size: int = 0) -> dict:
        return {"path": path, "type": kind, "size": size, "mode": mode, "mtime_ns": 1_700_000_000_000_000_000,
                "inline": kind == "file"}

    def _parent_dir(self, path: str, parents: bool = False) -> None:
        parent = posixpath.dirname(path)
        if parent not in self.entries:
            if not parents:
                raise NotFound(f"{parent} does not exist")
            self._parent_dir(parent, True)
            self.entries[parent] = self._stat(parent, "dir", 0o755)
        elif self.entries[parent]["type"] != "dir":
            raise NotADirectory(f"{parent} is not a directory")

    def _get(self, path: str) -> dict:
        if path not in self.entries:
            raise NotFound(f"{path} does not exist")
        return self.entries[path]

    def __call__(self, op: str, args: dict) -> object:
        return getattr(self, "op_" + op)(args)

    def op_status(self, args: dict) -> dict:
        return status_of(self.node_id, "leader", self.node_id)

    def op_ping(self, args: dict) -> dict:
        return {}

    def op_mkdir(self, args: dict) -> dict:
        path = args["path"]
        if path in self.entries:
            if args.get("parents") and self.entries[path]["type"] == "dir":
                return self.entries[path]
            raise AlreadyExists(f"{path} already exists")
        self._parent_dir(path, bool(args.get("parents")))
        self.entries[path] = self._stat(path, "dir", args.get("mode") or 0o755)
        return self.entries[path]

    def op_write_file(self, args: dict) -> dict:
        path, data = args["path"], args["data"]
        if len(data) > self.inline_bytes_max:
            raise TooLarge(f"{len(data)} bytes exceed inline_bytes_max")
        if args.get("into_directory") and self.entries.get(path, {}).get("type") == "dir":
            path = posixpath.join(path, args["into_directory"])
        if path in self.entries and self.entries[path]["type"] == "dir":
            raise IsADirectory(f"{path} is a directory")
        if path in self.entries and args.get("overwrite") is False:
            raise AlreadyExists(f"{path} already exists (not overwritten)")
        self._parent_dir(path, bool(args.get("parents")))
        self.entries[path] = self._stat(path, "file", args.get("mode") or 0o644, len(data))
        self.data[path] = data
        return self.entries[path]

    def op_stat(self, args: dict) -> dict:
        return self._get(args["path"])

    def op_ls(self, args: dict) -> list:
        path = args["path"]
        if self._get(path)["type"] != "dir":
            raise NotADirectory(f"{path} is not a directory")
        prefix = path.rstrip("/") + "/"
        below = [e for p, e in sorted(self.entries.items()) if p.startswith(prefix) and p != path]
        if args.get("recursive"):
            return below
        return [e for e in below if "/" not in e["path"][len(prefix):]]

    def op_read(self, args: dict) -> dict:
        entry = self._get(args["path"])
        if entry["type"] == "dir":
            raise IsADirectory(f"{args['path']} is a directory")
        return {**entry, "data": self.data[args["path"]]}

    def op_rm(self, args: dict) -> dict:
        path = args["path"]
        entry = self._get(path)
        children = [p for p in self.entries if p.startswith(path.rstrip("/") + "/")]
        if entry["type"] == "dir" and children and not args.get("recursive"):
            raise NotEmpty(f"{path} is not empty")
        for victim in children + [path]:
            self.entries.pop(victim)
            self.data.pop(victim, None)
        return {}

    def op_mv(self, args: dict) -> dict:
        """Like the node's mv, except that an existing target is always refused (EXISTS)."""
        src, dst = args["src"], args["dst"]
        self._get(src)
        if self.entries.get(dst, {}).get("type") == "dir":
            dst = posixpath.join(dst, posixpath.basename(src))
        if dst in self.entries:
            raise AlreadyExists(f"{dst} already exists")
        self._parent_dir(dst)
        for path in [p for p in self.entries if p == src or p.startswith(src + "/")]:
            moved = dst + path[len(src):]
            self.entries[moved] = {**self.entries.pop(path), "path": moved}
            if path in self.data:
                self.data[moved] = self.data.pop(path)
        return {}

    def op_du(self, args: dict) -> dict:
        path = args["path"]
        self._get(path)
        below = [e for p, e in self.entries.items() if p == path or p.startswith(path.rstrip("/") + "/")]
        return {"files": sum(e["type"] == "file" for e in below), "dirs": sum(e["type"] == "dir" for e in below),
                "logical_bytes": sum(e["size"] for e in below), "stored_chunk_bytes": 0, "replicated_chunk_bytes": 0}
