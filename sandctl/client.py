"""The SandStore client library: the CLI, the tests and the benchmarks all talk to a cluster
through `Client`.

Requests go through the client request engine (sandctl/connection.py: one DEALER per node,
request ids, replies matched by node and id) and its failover policy (sandctl/failover.py:
leader first, hints, backoff, TimedOut vs Unavailable at the deadline). Writes carry the
client's session (client id, seq); a retried write reuses its seq, so the state machine
applies it at most once. Large files stream through sandctl/transfer.py.
"""

from __future__ import annotations

import os
import secrets
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import BinaryIO

from node import protocol
from node.config import ClusterConfig
from node.errors import AlreadyExists, BadRequest, NoLeader, NotFound, SandStoreError, TooLarge, Unavailable

from node.security import ClientSecurity, keys_dir_for
from node.security.keyring import KEYS_DIR_ENVIRONMENT_VARIABLE, KEYS_DIR_NAME

from sandctl import state, transfer
from sandctl.connection import Connections, SocketOptions
from sandctl.failover import ATTEMPT_TIMEOUT_SECONDS, BACKOFF_SECONDS_MAX, BACKOFF_SECONDS_MIN, Failover

__all__ = ["ATTEMPT_TIMEOUT_SECONDS", "CHUNKS_IN_FLIGHT", "TRANSFER_BYTES_PER_SECOND_MIN", "Client"]

# Pause between status rounds while waiting for a leader, so an all-follower cluster that
# answers at once is not polled in a busy loop.
LEADER_POLL_SECONDS = 0.02
STATUS_ROUND_SECONDS_MAX = 0.5

# Large files. A transfer's deadline is the call's deadline plus the time its bytes take at
# this floor rate, so --timeout bounds how long a stuck transfer hangs, not how big a file may be.
TRANSFER_BYTES_PER_SECOND_MIN = 1 << 20
CHUNKS_IN_FLIGHT = 3  # per transfer: memory stays within a few chunks whatever the file size
# A get keeps two chunk requests per replica node in flight: with one (3 over 3 nodes), each
# node sat idle while the client decrypted, verified and wrote the chunk it had just sent.
# Measured on one cluster, 256 MiB, alternating: 3 in flight 313-341 MB/s, 6 in flight
# 310-398 (a loaded box); on a quieter moment 383/395 against 398/438. It holds 6 chunks
# (24 MiB at the default chunk size) instead of 3.
GET_CHUNKS_IN_FLIGHT = 2 * CHUNKS_IN_FLIGHT
# Input of unknown length (stdin) is stored in segments of this many chunks, each with its own
# deadline, so a long pipe is not cut off by a deadline fixed when it started.
SEGMENT_CHUNKS_UNKNOWN_SIZE = 64
CHUNK_PROBE_ROUND_SECONDS = 0.5  # a chunk node that does not answer a probe within this is down

assert CHUNKS_IN_FLIGHT <= SEGMENT_CHUNKS_UNKNOWN_SIZE

Progress = Callable[[int], None]  # called with the byte count of each piece stored or written


class _PrefixedReader:
    """`head` (already read to decide inline or chunked) and then the rest of `reader`."""

    def __init__(self, head: bytes, reader: BinaryIO) -> None:
        self._head = memoryview(head)
        self._reader = reader

    def read(self, size: int) -> bytes:
        assert size > 0
        if self._head:
            part, self._head = bytes(self._head[:size]), self._head[size:]
            return part
        return self._reader.read(size)


class _LimitedReader:
    """At most `limit` bytes of `reader`; `exhausted` once the underlying reader ended."""

    def __init__(self, reader, limit: int) -> None:
        assert limit > 0
        self._reader = reader
        self.remaining = limit
        self.exhausted = False

    def read(self, size: int) -> bytes:
        if self.remaining <= 0:
            return b""
        part = self._reader.read(min(size, self.remaining))
        if not part:
            self.exhausted = True
        self.remaining -= len(part)
        return part


def _with_target_options(args: dict, into_directory: str | None, overwrite: bool) -> dict:
    """write_file's args plus the target options that differ from the node's defaults."""
    if into_directory is not None:
        args["into_directory"] = into_directory
    if not overwrite:
        args["overwrite"] = False
    return args


def client_keys_dir(config: ClusterConfig, data_dir: str | os.PathLike | None = None) -> Path:
    """Where a client finds the cluster's keys: $SANDSTORE_KEYS_DIR, else `data_dir`'s keys
    directory (--data-dir), else a keys directory beside the config file (a grown cluster's
    <data dir>/cluster.toml), else that of the data dir remembered with the config."""
    if os.environ.get(KEYS_DIR_ENVIRONMENT_VARIABLE) or data_dir is not None:
        return keys_dir_for(data_dir if data_dir is not None else ".")
    if config.path:
        beside = Path(config.path).parent / KEYS_DIR_NAME
        if beside.is_dir():
            return beside
        return keys_dir_for(state.resolve_data_dir(None, Path(config.path)))
    return keys_dir_for(state.resolve_data_dir(None, Path(".")))


def client_security(config: ClusterConfig, data_dir: str | os.PathLike | None = None) -> ClientSecurity | None:
    """This user's key for the cluster (client $SANDSTORE_CLIENT, default admin). KeysError,
    one line, when the key is missing or unusable. None when there is no keys directory at
    all (most likely no cluster was ever started here): the client then connects without a
    key, which every node refuses, and a call's Unavailable says where the keys were looked for."""
    directory = client_keys_dir(config, data_dir)
    if not directory.exists():
        return None
    return ClientSecurity.for_client(directory, mode=config.security)


def no_keys_hint(config: ClusterConfig, data_dir: str | os.PathLike | None = None) -> str:
    return (f"no cluster keys at {client_keys_dir(config, data_dir)} (is a cluster running? `sandctl cluster "
            "start` creates them; SANDSTORE_KEYS_DIR or --data-dir names another keys directory)")


class Client:
    """A connection to one SandStore cluster. Not thread-safe: use one Client per thread.

    node=ID pins every call to that node (no failover), for debugging and tests.
    timeout_seconds is the default deadline of each call (config.request_timeout_seconds).
    unreachable_seconds: if set, a call that could not connect to any node for that long fails
    with Unavailable at once instead of retrying until its deadline (the CLI uses this so that
    "no cluster running" is reported quickly; programs riding out a restart leave it unset).
    """

    def __init__(
        self,
        config: ClusterConfig,
        *,
        node: str | None = None,
        timeout_seconds: float | None = None,
        client_id: str | None = None,
        attempt_timeout_seconds: float = ATTEMPT_TIMEOUT_SECONDS,
        unreachable_seconds: float | None = None,
        security: ClientSecurity | None = None,
        data_dir: str | os.PathLike | None = None,
    ) -> None:
        """security: the key to present (default: client_security(config, data_dir))."""
        if node is not None:
            config.node(node)  # raises ConfigError naming the known ids
        self.config = config
        self.security = security or client_security(config, data_dir)
        self._no_keys_hint = "" if self.security is not None else no_keys_hint(config, data_dir)
        self.node = node
        self.timeout_seconds = config.request_timeout_seconds if timeout_seconds is None else timeout_seconds
        if self.timeout_seconds <= 0:
            raise BadRequest(f"timeout must be positive, got {self.timeout_seconds}")
        self.client_id = client_id or "sandctl-" + secrets.token_hex(8)
        assert 0 < len(self.client_id.encode()) <= protocol.CLIENT_ID_BYTES_MAX
        # Client addresses by node id: the config's, plus members learned from status replies.
        self.addresses: dict[str, str] = {address.id: address.client for address in config.nodes}
        # Chunk addresses by node id, learned the same way.
        self.chunk_addresses: dict[str, str] = {address.id: address.chunk for address in config.nodes}
        # Immediate sockets for both: a request to a down node is never queued, so "not sent"
        # proves "not applied", and a probe of a down chunk node finds it silent.
        options = SocketOptions(frame_bytes_max=config.frame_bytes_max, immediate=True, security=self.security)
        self._connections = Connections(self.addresses, options)
        self._chunk_connections = Connections(self.chunk_addresses, options)
        self._failover = Failover(self._connections, attempt_timeout_seconds=attempt_timeout_seconds,
                                  unreachable_seconds=unreachable_seconds)
        self._seq = 0
        self._closed = False

    @property
    def leader(self) -> str | None:
        """The node believed to lead (the last one that served a leader-only request)."""
        return self._failover.leader

    @leader.setter
    def leader(self, node: str | None) -> None:
        self._failover.set_leader(node, confirmed=node is not None)

    @property
    def attempt_timeout_seconds(self) -> float:
        return self._failover.attempt_timeout_seconds

    @property
    def unreachable_seconds(self) -> float | None:
        return self._failover.unreachable_seconds

    # ------------------------------------------------------------------ lifecycle

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._connections.close()
        self._chunk_connections.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # ------------------------------------------------------------------ the one request path

    def call(
        self,
        op: str,
        args: dict,
        *,
        write: bool = False,
        deadline_seconds: float | None = None,
        node: str | None = None,
    ) -> object:
        """Send one request and return its result, with failover (sandctl/failover.py).

        write=True marks a call whose outcome can be unknown (implied for WRITE_OPS and
        ADMIN_OPS). node pins this call to one node (no failover); so does Client(node=...).
        """
        assert not self._closed, "call on a closed Client"
        if op not in protocol.OPS:
            raise BadRequest(f"unknown op {op!r}")
        if op in protocol.WRITE_OPS:
            self._seq += 1  # once per call: every retry of this write reuses it
            args = {**args, "client": self.client_id, "seq": self._seq}
        else:
            args = dict(args)
        write = write or op in protocol.WRITE_OPS or op in protocol.ADMIN_OPS
        # Validate here so a programming error fails fast instead of as a server reply: the
        # request map around them is built by this client, so only the arguments can be wrong.
        protocol.validate_args(op, args, protocol.OPS[op])
        pinned = node or self.node
        if pinned is not None and pinned not in self.addresses:
            self.config.node(pinned)  # raises ConfigError naming the known ids
        timeout_seconds = self.timeout_seconds if deadline_seconds is None else deadline_seconds
        try:
            return self._failover.call(op, args, write=write, timeout_seconds=timeout_seconds, pinned=pinned)
        except Unavailable as error:
            # A refused handshake looks like silence on the wire: say why, if a node refused.
            refusal = self._connections.refusal()
            if refusal is None and "cannot connect" not in str(error):  # (connected, yet unanswered)
                refusal = self._no_keys_hint
            if not refusal:
                raise
            raise Unavailable(f"{error}; {refusal}") from None

    @staticmethod
    def _sleep_until(deadline: float, seconds: float) -> None:
        time.sleep(max(0.0, min(seconds, deadline - time.monotonic())))

    # ------------------------------------------------------------------ many nodes at once

    def broadcast(
        self,
        op: str,
        args: dict,
        node_ids: Iterable[str] | None = None,
        *,
        timeout_seconds: float | None = None,
        until: Callable[[dict[str, object]], bool] | None = None,
    ) -> dict[str, object]:
        """Send a read-only op to several nodes at once (no retries, no failover).

        Returns {node: result, or the SandStoreError it replied, or None if it was silent}.
        Returns early when every node answered or until(answers so far) is true.
        """
        assert op in protocol.OPS and op not in protocol.WRITE_OPS, "writes need a session: use call()"
        node_ids = list(self.addresses if node_ids is None else node_ids)
        timeout_seconds = self.timeout_seconds if timeout_seconds is None else timeout_seconds
        return self._connections.broadcast(node_ids, op, args, timeout_seconds, until)

    # ------------------------------------------------------------------ cluster state

    def status(self, node_id: str) -> dict:
        result = self.call("status", {}, node=node_id)
        self._learn_addresses(result)
        return result

    def status_all(self, timeout_seconds: float | None = None) -> dict[str, dict | None]:
        """Every known node's status; None for a node that did not answer in time."""
        if timeout_seconds is None:
            timeout_seconds = min(self.timeout_seconds, ATTEMPT_TIMEOUT_SECONDS)
        answers = self.broadcast("status", {}, timeout_seconds=timeout_seconds)
        statuses = {node_id: answer if isinstance(answer, dict) else None for node_id, answer in answers.items()}
        for answer in statuses.values():
            if answer is not None:
                self._learn_addresses(answer)
        return statuses

    def wait_for_leader(self, deadline_seconds: float | None = None, *, exclude: Iterable[str] = ()) -> str:
        """Poll every node's status until one reports itself leader; returns its id.

        exclude: ids not to accept (a leader that was just killed or asked to step down).
        Raises NoLeader if nodes answered but none led, Unavailable if none answered.
        """
        excluded = set(exclude)
        timeout_seconds = self.timeout_seconds if deadline_seconds is None else deadline_seconds
        deadline = time.monotonic() + timeout_seconds
        answered = False

        def leaders(answers: dict[str, object]) -> list[tuple[int, str]]:
            return [
                (answer.get("term", 0), node_id)
                for node_id, answer in answers.items()
                if isinstance(answer, dict) and answer.get("role") == "leader" and node_id not in excluded
            ]

        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            answers = self.broadcast(
                "status", {}, timeout_seconds=min(STATUS_ROUND_SECONDS_MAX, remaining),
                until=lambda so_far: bool(leaders(so_far)),
            )
            for answer in answers.values():
                if isinstance(answer, dict):
                    answered = True
                    self._learn_addresses(answer)
            found = leaders(answers)
            if found:
                self.leader = max(found)[1]  # the highest term wins over a deposed leader
                return self.leader
            self._sleep_until(deadline, LEADER_POLL_SECONDS)
        if answered:
            raise NoLeader(f"no leader was elected within {timeout_seconds:g} s")
        raise Unavailable(f"no node answered within {timeout_seconds:g} s")

    def _learn_addresses(self, status: dict) -> None:
        addresses = status.get("addresses")
        if not isinstance(addresses, dict):
            return
        for node_id, address in addresses.items():
            if not isinstance(address, dict):
                continue
            if node_id not in self.addresses and isinstance(address.get("client"), str):
                self.addresses[node_id] = address["client"]
            if node_id not in self.chunk_addresses and isinstance(address.get("chunk"), str):
                self.chunk_addresses[node_id] = address["chunk"]

    # ------------------------------------------------------------------ namespace

    def mkdir(self, path: str, parents: bool = False) -> dict:
        return self.call("mkdir", {"path": path, "parents": parents})

    def write_file(self, path: str, data: bytes, mode: int = 0o644, parents: bool = False, *,
                   into_directory: str | None = None, overwrite: bool = True) -> dict:
        """Store data as the file at path, inline (up to the config's inline_bytes_max; use
        put_file for content of any size); returns its stat, whose "path" is where it went.

        into_directory: a file name; if path is an existing directory, the file is written
        inside it under that name (decided by the write itself: one consensus round, no stat).
        overwrite=False refuses with AlreadyExists if the target exists."""
        if len(data) > self.config.inline_bytes_max:
            raise TooLarge(
                f"{path}: {len(data)} bytes exceed inline_bytes_max ({self.config.inline_bytes_max}); "
                "store larger content with put_file"
            )
        args = {"path": path, "data": bytes(data), "size": len(data), "mode": mode, "parents": parents}
        return self.call("write_file", _with_target_options(args, into_directory, overwrite))

    def stat(self, path: str, stale: bool = False) -> dict:
        return self.call("stat", {"path": path, "stale": stale})

    def ls(self, path: str, recursive: bool = False, stale: bool = False) -> list[dict]:
        return self.call("ls", {"path": path, "recursive": recursive, "stale": stale})

    def read(self, path: str, stale: bool = False) -> tuple[dict, bytes]:
        """(stat, content) of an inline file."""
        result = dict(self.call("read", {"path": path, "stale": stale}))
        data = result.pop("data", None)
        if data is None:
            raise TooLarge(f"{path} is stored in chunks; read it with get_file")
        return result, data

    # ------------------------------------------------------------------ files of any size

    def replication(self) -> int:
        """How many nodes each chunk is stored on: the config's, capped by the known nodes."""
        return min(self.config.replication, len(self.chunk_addresses))

    def put_file(
        self,
        path: str,
        reader: BinaryIO,
        *,
        size_hint: int | None = None,
        mode: int = 0o644,
        parents: bool = False,
        progress: Progress | None = None,
        into_directory: str | None = None,
        overwrite: bool = True,
    ) -> dict:
        """Store everything `reader` yields as the file at path; returns the file's stat.
        into_directory and overwrite as for write_file: both are decided by the one write that
        commits the file record, never by a stat before it.

        Input of at most inline_bytes_max (by size_hint, or by reading one byte more than that)
        is stored inline in the file record. Larger input is streamed in chunks of
        chunk_size_bytes to replication() nodes each, CHUNKS_IN_FLIGHT at a time (memory stays
        within a few chunks), and the file record is committed once every chunk is durable:
        readers see the old content or the new, never a mix. While fewer than replication()
        chunk nodes answer, the put waits, and at the deadline raises Unavailable with nothing
        visible (chunks already stored are orphans that garbage collection removes).
        """
        assert size_hint is None or size_hint >= 0
        inline_bytes_max = self.config.inline_bytes_max
        head = b""
        if size_hint is None or size_hint <= inline_bytes_max:
            head = transfer.read_up_to(reader, inline_bytes_max + 1)
            if len(head) <= inline_bytes_max:
                result = self.write_file(path, head, mode, parents, into_directory=into_directory, overwrite=overwrite)
                if progress is not None and head:
                    progress(len(head))
                return result
        if not overwrite:
            self._refuse_early_if_exists(path, into_directory)
        chunks, size_bytes = self._store_chunks(_PrefixedReader(head, reader) if head else reader, size_hint, progress)
        assert sum(chunk[1] for chunk in chunks) == size_bytes
        args = {"path": path, "chunks": chunks, "size": size_bytes, "mode": mode, "parents": parents}
        return self.call("write_file", _with_target_options(args, into_directory, overwrite))

    def _refuse_early_if_exists(self, path: str, into_directory: str | None) -> None:
        """Before streaming a large file that must not replace anything: AlreadyExists if the
        target exists now, so a refused put does not first upload every chunk. A stale read
        (no consensus round): the write's own overwrite check stays the one that decides."""
        try:
            info = self.stat(path, stale=True)
            if into_directory is not None and info.get("type") == "dir":
                path = path.rstrip("/") + "/" + into_directory
                info = self.stat(path, stale=True)
        except NotFound:
            return
        if info.get("type") != "dir":
            raise AlreadyExists(f"{path} already exists (not overwritten)")

    def _store_chunks(self, reader, size_hint: int | None, progress: Progress | None) -> tuple[list[list], int]:
        copies = self.replication()
        if size_hint is not None:
            return self._put_stream(reader, copies, size_hint, progress)
        segment_bytes = self.config.chunk_size_bytes * SEGMENT_CHUNKS_UNKNOWN_SIZE
        chunks: list[list] = []
        size_bytes = 0
        while True:
            segment = _LimitedReader(reader, segment_bytes)
            segment_chunks, segment_size_bytes = self._put_stream(segment, copies, segment_bytes, progress)
            chunks.extend(segment_chunks)
            size_bytes += segment_size_bytes
            if segment.exhausted or segment.remaining > 0:
                return chunks, size_bytes

    def _put_stream(self, reader, copies: int, size_bytes_expected: int,
                    progress: Progress | None) -> tuple[list[list], int]:
        # Degraded writes: min_write_replicas durable copies suffice (the leader heals the rest).
        copies_min = min(self.config.write_replicas_min(), copies)
        reachable = self.wait_for_chunk_nodes(copies_min)
        return transfer.put_stream(
            {node_id: self.chunk_addresses[node_id] for node_id in reachable}, reader,
            chunk_size_bytes=self.config.chunk_size_bytes, replication=copies,
            deadline_seconds=self._transfer_deadline_seconds(size_bytes_expected),
            chunks_in_flight_max=CHUNKS_IN_FLIGHT, progress=progress,
            attempt_timeout_seconds=min(transfer.DEFAULT_ATTEMPT_TIMEOUT_SECONDS, self.timeout_seconds),
            frame_bytes_max=self.config.frame_bytes_max, min_replicas=copies_min, security=self.security,
        )

    def get_file(self, path: str, writer: BinaryIO, *, progress: Progress | None = None, stale: bool = False) -> dict:
        """Write the file's content to `writer`; returns its stat. The record comes from a
        linearizable read; chunks are fetched in parallel, each verified against its id, and
        any failing replica (down, missing, corrupt) is replaced by the next one. Raises
        ChecksumMismatch / NotFound / Unavailable naming the chunk when no replica can serve it
        (the writer may then hold part of the content: write to a temporary file). stale=True
        takes the record from the contacted node's local state instead."""
        record = dict(self.call("read", {"path": path, "stale": stale}))
        data = record.pop("data", None)
        if data is not None:
            writer.write(data)
            if progress is not None and data:
                progress(len(data))
            return record
        chunks = record.get("chunks") or []
        replica_ids = {node_id for _chunk_id, _size, replicas in chunks for node_id in replicas}
        if not replica_ids <= set(self.chunk_addresses):
            self.status_all()  # a replica joined after the config was written: learn its address
        addresses = self.chunk_addresses
        if chunks:
            # Skip replicas that do not answer now (a dead node would cost an attempt timeout),
            # unless that would leave a chunk with none.
            reachable = self._probe_chunk_nodes(replica_ids & set(addresses), CHUNK_PROBE_ROUND_SECONDS)
            if all(reachable & set(replicas) for _chunk_id, _size, replicas in chunks):
                addresses = {node_id: addresses[node_id] for node_id in reachable}
        transfer.get_stream(
            addresses, chunks, writer, deadline_seconds=self._transfer_deadline_seconds(record.get("size", 0)),
            chunks_in_flight_max=GET_CHUNKS_IN_FLIGHT, progress=progress,
            attempt_timeout_seconds=min(transfer.DEFAULT_ATTEMPT_TIMEOUT_SECONDS, self.timeout_seconds),
            frame_bytes_max=self.config.frame_bytes_max, security=self.security,
        )
        return record

    def _transfer_deadline_seconds(self, size_bytes: int) -> float:
        return self.timeout_seconds + size_bytes / TRANSFER_BYTES_PER_SECOND_MIN

    def wait_for_chunk_nodes(self, count: int, deadline_seconds: float | None = None) -> list[str]:
        """The ids of the chunk nodes that answer, once at least `count` do; Unavailable if
        fewer answer until the deadline (the client's timeout unless given)."""
        assert count >= 1
        timeout_seconds = self.timeout_seconds if deadline_seconds is None else deadline_seconds
        deadline = time.monotonic() + timeout_seconds
        backoff_seconds = BACKOFF_SECONDS_MIN
        while True:
            remaining = deadline - time.monotonic()
            reachable = self._probe_chunk_nodes(set(self.chunk_addresses),
                                                max(0.01, min(CHUNK_PROBE_ROUND_SECONDS, remaining)))
            if len(reachable) >= count:
                return sorted(reachable)
            if time.monotonic() + backoff_seconds >= deadline:
                down = sorted(set(self.chunk_addresses) - reachable)
                raise Unavailable(
                    f"only {len(reachable)} of {len(self.chunk_addresses)} nodes accept chunks (no answer from "
                    f"{', '.join(down)}) and each chunk needs at least {count} durable copies "
                    f"(min_write_replicas); nothing was stored (waited {timeout_seconds:g} s)")
            self._sleep_until(deadline, backoff_seconds)
            backoff_seconds = min(backoff_seconds * 2, BACKOFF_SECONDS_MAX)

    def _probe_chunk_nodes(self, node_ids: set[str], round_seconds: float) -> set[str]:
        """The nodes among node_ids whose chunk service answers a no-op within round_seconds."""
        answers = self._chunk_connections.broadcast(sorted(node_ids), "chunk_has", {"ids": []}, round_seconds)
        return {node_id for node_id, answer in answers.items()
                if answer is not None and not isinstance(answer, SandStoreError)}

    def rm(self, path: str, recursive: bool = False) -> dict:
        return self.call("rm", {"path": path, "recursive": recursive})

    def mv(self, src: str, dst: str, *, overwrite: bool = True) -> dict:
        """Rename src to dst (into dst if it is a directory); overwrite=False refuses with
        AlreadyExists if the target exists."""
        return self.call("mv", {"src": src, "dst": dst} if overwrite else {"src": src, "dst": dst, "overwrite": False})

    def du(self, path: str) -> dict:
        return self.call("du", {"path": path})

    # ------------------------------------------------------------------ inspection and admin

    def inspect_log(self, node: str | None = None, from_index: int | None = None, limit: int | None = None) -> dict:
        """Raw log entries of one node (the leader's when node is None)."""
        return self.call("inspect_log", {"from_index": from_index, "limit": limit}, node=self._node_or_leader(node))

    def inspect_term(self, node: str | None = None) -> dict:
        return self.call("inspect_term", {}, node=self._node_or_leader(node))

    def add_learner(self, node: str, raft: str, client: str, chunk: str) -> dict:
        result = self.call("add_learner", {"node": node, "raft": raft, "client": client, "chunk": chunk})
        self.addresses.setdefault(node, client)
        return result

    def promote(self, node: str) -> dict:
        return self.call("promote", {"node": node})

    def remove_node(self, node: str) -> dict:
        return self.call("remove_node", {"node": node})

    def transfer_leader(self, node: str | None = None) -> dict:
        return self.call("transfer_leader", {"node": node})

    def snapshot(self, node: str | None = None) -> dict:
        """Snapshot and compact one node's log (the leader's when node is None)."""
        return self.call("snapshot", {}, node=self._node_or_leader(node))

    def gc(self, node: str | None = None, dry_run: bool = False, grace_seconds: float | None = None) -> dict:
        """Collect one node's unreferenced chunks (every node has its own chunk store)."""
        return self.call("gc", {"dry_run": dry_run, "grace_seconds": grace_seconds}, node=self._node_or_leader(node))

    def _node_or_leader(self, node: str | None) -> str:
        # These ops are answered by whichever node receives them, so "the leader" must be
        # looked up rather than found by redirects.
        if node is not None:
            return node
        return self.node if self.node is not None else self.wait_for_leader()
