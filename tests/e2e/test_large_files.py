"""Large files end to end on a real 3-node cluster with 1 MiB chunks: round trips through
`sandctl put/get/cat` (files and pipes), dedup, atomic overwrite under a reader, reads with a
node killed or a replica corrupted on disk, garbage collection of an interrupted put, bad
input, and the client's peak memory."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import lmdb
import pytest
import zmq

from node import protocol
from sandctl import transfer
from node.config import node_data_dir
from sandctl import cluster as supervisor
from sandctl.client import Client
from tests.security.keyed_sockets import keyed_dealer, node_of_address

from e2e_workload import wait_until

pytestmark = pytest.mark.e2e

SMALL_CHUNKS = "raft-3-chunks-1mib"
CHUNK = 1 << 20
WAIT_SECONDS = 30.0
LARGE_BYTES = 100 << 20
MEMORY_FILE_CHUNKS = 50
MEMORY_PEAK_CHUNKS_MAX = 12

small_chunk_cluster = pytest.mark.parametrize("cluster", [SMALL_CHUNKS], indirect=True)


def random_file(path: Path, size_bytes: int) -> str:
    """Write size_bytes of random data to path in 1 MiB blocks; returns its sha256."""
    digest = hashlib.sha256()
    with open(path, "wb") as file:
        remaining = size_bytes
        while remaining:
            block = os.urandom(min(remaining, 1 << 20))
            file.write(block)
            digest.update(block)
            remaining -= len(block)
    return digest.hexdigest()


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def sandctl_ok(cluster, *args: str) -> subprocess.CompletedProcess:
    result = cluster.sandctl(*args, timeout_seconds=120)
    assert result.returncode == 0, (args, result.stderr.decode())
    return result


def sandctl_piped(cluster, args: list[str], stdin_path: Path | None = None,
                  stdout_path: Path | None = None) -> subprocess.CompletedProcess:
    """sandctl with stdin from a file and/or stdout into a file (never the whole file in this process)."""
    from_file = open(stdin_path, "rb") if stdin_path else subprocess.DEVNULL
    to_file = open(stdout_path, "wb") if stdout_path else subprocess.PIPE
    try:
        sandctl = str(Path(sys.executable).parent / "sandctl")
        return subprocess.run([sandctl, *args], env=cluster.env(), stdin=from_file, stdout=to_file,
                              stderr=subprocess.PIPE, timeout=120, check=False)
    finally:
        for file in (from_file, to_file):
            if hasattr(file, "close"):
                file.close()


def chunk_request(cluster, address: str, op: str, args: dict) -> object:
    """One request to a node's chunk service (with the cluster's admin key); returns the
    result (asserts success)."""
    context = zmq.Context.instance()
    socket = keyed_dealer(context, cluster.config, node_of_address(cluster.config, address), "chunk")
    try:
        socket.send(protocol.request(1, op, args))
        assert socket.poll(WAIT_SECONDS * 1000), f"{op} to {address}: no reply"
        reply = protocol.decode(socket.recv(), 1 << 26)
    finally:
        socket.close(linger=0)
    assert reply["ok"], reply
    return reply["result"]


def chunk_counts(cluster) -> dict[str, int]:
    return {a.id: chunk_request(cluster, a.chunk, "chunk_stats", {})["chunks"] for a in cluster.config.nodes}


def wait_all_applied(cluster) -> None:
    """Every node has applied everything the leader committed (each node's GC consults its own
    namespace, so a lagging follower must not be asked to collect)."""
    client = cluster.client
    leader = client.wait_for_leader(WAIT_SECONDS)
    commit = client.status(leader)["commit"]

    def caught_up() -> bool:
        statuses = client.status_all()
        return all(status is not None and status["applied"] >= commit for status in statuses.values())

    wait_until(caught_up, f"every node to apply index {commit}")


def chunk_ids(cluster, path: str) -> list[bytes]:
    return [bytes(chunk[0]) for chunk in cluster.client.stat(path)["chunks"]]


# ---------------------------------------------------------------------- round trips


@small_chunk_cluster
def test_round_trips_of_edge_sizes_through_files_and_pipes(cluster, tmp_path):
    sizes = [0, 1, CHUNK, CHUNK + 1, LARGE_BYTES]
    for size in sizes:
        local = tmp_path / f"in-{size}"
        expected = random_file(local, size)

        sandctl_ok(cluster, "put", str(local), f"/file-{size}")
        info = json.loads(sandctl_ok(cluster, "stat", f"/file-{size}", "--json").stdout)
        assert info["size"] == size
        assert info["inline"] == (size <= cluster.config.inline_bytes_max)
        if not info["inline"]:
            assert info["chunks"] == -(-size // CHUNK)  # --json without --chunks: the count
        copy = tmp_path / f"copy-{size}"
        sandctl_ok(cluster, "get", f"/file-{size}", str(copy))
        assert sha256_of(copy) == expected, size
        assert os.stat(copy).st_mode & 0o777 == os.stat(local).st_mode & 0o777

        put = sandctl_piped(cluster, ["put", "-", f"/pipe-{size}"], stdin_path=local)
        assert put.returncode == 0, put.stderr.decode()
        piped = tmp_path / f"piped-{size}"
        get = sandctl_piped(cluster, ["get", f"/pipe-{size}", "-"], stdout_path=piped)
        assert get.returncode == 0, get.stderr.decode()
        assert sha256_of(piped) == expected, size
        if size <= CHUNK + 1:
            cat = sandctl_ok(cluster, "cat", f"/pipe-{size}")
            assert hashlib.sha256(cat.stdout).hexdigest() == expected
        copy.unlink()
        piped.unlink()
        local.unlink()
    assert not [p.name for p in tmp_path.iterdir() if p.name.endswith(".part")]

    chunks_text = sandctl_ok(cluster, "stat", "--chunks", f"/file-{CHUNK + 1}").stdout.decode()
    for chunk_id in chunk_ids(cluster, f"/file-{CHUNK + 1}"):
        assert chunk_id.hex() in chunks_text
    assert "n1,n2,n3" in chunks_text
    usage = json.loads(sandctl_ok(cluster, "du", "-s", "/", "--json").stdout)
    logical = 2 * sum(sizes)
    assert usage["logical_bytes"] == logical
    # file-X and pipe-X hold the same content: chunks are stored (and counted) once.
    chunked = [size for size in sizes if size > cluster.config.inline_bytes_max]
    assert usage["stored_chunk_bytes"] == sum(chunked)
    assert usage["replicated_chunk_bytes"] == 3 * sum(chunked)
    status = json.loads(sandctl_ok(cluster, "status", "--json").stdout)
    for node_status in status.values():
        assert node_status["chunks_stored"] == sum(-(-size // CHUNK) for size in chunked)
    assert "chunk bytes" in sandctl_ok(cluster, "status", "--wide").stdout.decode()  # a --wide column


# ---------------------------------------------------------------------- dedup and overwrite


@small_chunk_cluster
def test_identical_files_share_chunks_and_survive_deleting_one(cluster, tmp_path):
    local = tmp_path / "input"
    expected = random_file(local, 3 * CHUNK + 5)
    sandctl_ok(cluster, "put", str(local), "/a")
    counts = chunk_counts(cluster)
    assert counts == {"n1": 4, "n2": 4, "n3": 4}
    sandctl_ok(cluster, "put", str(local), "/b")
    assert chunk_counts(cluster) == counts
    assert chunk_ids(cluster, "/a") == chunk_ids(cluster, "/b")

    sandctl_ok(cluster, "rm", "/a")
    wait_all_applied(cluster)
    for address in cluster.config.nodes:  # /b still references every chunk: none may go
        assert cluster.client.gc(address.id, grace_seconds=0)["deleted"] == 0
    copy = tmp_path / "copy"
    sandctl_ok(cluster, "get", "/b", str(copy))
    assert sha256_of(copy) == expected


@small_chunk_cluster
def test_a_reader_sees_the_old_or_the_new_content_never_a_mix(cluster):
    old = bytes([1]) * (6 * CHUNK)
    new = bytes([2]) * (6 * CHUNK) + b"tail"
    contents = {hashlib.sha256(old).digest(): "old", hashlib.sha256(new).digest(): "new"}
    with Client(cluster.config, timeout_seconds=20) as writer:
        writer.put_file("/shared", _BytesReader(old), size_hint=len(old))
    seen: list[str] = []
    failures: list[BaseException] = []
    stop = threading.Event()

    def read_repeatedly() -> None:
        try:
            with Client(cluster.config, timeout_seconds=20) as reader:
                while not stop.is_set() or len(seen) < 3:
                    sink = _HashingSink()
                    reader.get_file("/shared", sink)
                    seen.append(contents.get(sink.digest.digest(), "MIXED"))
        except BaseException as error:  # reported by the test below
            failures.append(error)

    thread = threading.Thread(target=read_repeatedly, daemon=True)
    thread.start()
    with Client(cluster.config, timeout_seconds=20) as writer:
        for content in (new, old, new, old, new):
            writer.put_file("/shared", _BytesReader(content), size_hint=len(content))
    stop.set()
    thread.join(WAIT_SECONDS)
    assert not thread.is_alive() and not failures, failures
    assert seen and "MIXED" not in seen, seen


class _BytesReader:
    def __init__(self, data: bytes) -> None:
        self._view = memoryview(data)

    def read(self, size: int) -> bytes:
        part, self._view = bytes(self._view[:size]), self._view[size:]
        return part


class _HashingSink:
    def __init__(self) -> None:
        self.digest = hashlib.sha256()

    def write(self, data: bytes) -> int:
        self.digest.update(data)
        return len(data)


# ---------------------------------------------------------------------- faults


@small_chunk_cluster
def test_get_with_the_leader_killed(cluster, tmp_path):
    local = tmp_path / "input"
    expected = random_file(local, 5 * CHUNK + 17)
    sandctl_ok(cluster, "put", str(local), "/f")
    leader = cluster.client.wait_for_leader(WAIT_SECONDS)
    supervisor.kill_node(cluster.data_dir, leader)
    copy = tmp_path / "copy"
    sandctl_ok(cluster, "get", "/f", str(copy))
    assert sha256_of(copy) == expected


@small_chunk_cluster
def test_get_with_a_replica_corrupted_on_disk(cluster, tmp_path):
    local = tmp_path / "input"
    expected = random_file(local, 3 * CHUNK)
    sandctl_ok(cluster, "put", str(local), "/f")
    chunk_id, size, replicas = cluster.client.stat("/f")["chunks"][0]
    victim = sorted(replicas)[0]  # the replica a reader asks first for chunk 0
    environment = lmdb.open(str(node_data_dir(cluster.data_dir, victim) / "chunks.lmdb"),
                            map_size=cluster.config.chunk_map_size_bytes, max_dbs=2)
    try:
        chunks_db = environment.open_db(b"chunks")
        with environment.begin(write=True) as txn:
            content = bytearray(txn.get(chunk_id, db=chunks_db))
            assert len(content) == size
            content[size // 2] ^= 0xFF
            txn.put(chunk_id, bytes(content), db=chunks_db)
    finally:
        environment.close()

    copy = tmp_path / "copy"
    sandctl_ok(cluster, "get", "/f", str(copy))
    assert sha256_of(copy) == expected
    address = cluster.config.node(victim).chunk
    assert chunk_request(cluster, address, "chunk_stats", {})["counters"]["checksum_mismatches"] == 1
    assert "corrupt" in supervisor.log_file(cluster.data_dir, victim).read_text()


@small_chunk_cluster
def test_put_without_enough_nodes_fails_with_nothing_visible(cluster, tmp_path):
    local = tmp_path / "input"
    random_file(local, 2 * CHUNK)
    # A put needs min_write_replicas durable copies (2 of 3): one node left is not enough.
    supervisor.kill_node(cluster.data_dir, "n2")
    supervisor.kill_node(cluster.data_dir, "n3")
    result = cluster.sandctl("put", "--timeout", "2", str(local), "/f")
    assert result.returncode == 3, result.stderr
    lines = result.stderr.decode().strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and "n3" in lines[0]
    assert cluster.sandctl("stat", "--stale", "/f").returncode == 5  # no quorum left: n1's own view


# ---------------------------------------------------------------------- garbage collection


@small_chunk_cluster
def test_gc_collects_an_interrupted_put_after_the_grace_period_and_nothing_referenced(cluster, tmp_path):
    local = tmp_path / "kept"
    expected = random_file(local, 2 * CHUNK + 1)
    sandctl_ok(cluster, "put", str(local), "/kept")
    kept = chunk_ids(cluster, "/kept")
    addresses = {a.id: a.chunk for a in cluster.config.nodes}
    orphan_reader = _BytesReader(os.urandom(3 * CHUNK))
    orphans, _size = transfer.put_stream(addresses, orphan_reader, chunk_size_bytes=CHUNK, replication=3,
                                         deadline_seconds=WAIT_SECONDS,
                                         security=cluster.client.security)  # and never committed
    orphan_ids = [bytes(chunk[0]) for chunk in orphans]
    wait_all_applied(cluster)

    def stored(chunk_id: bytes) -> list[bool]:
        return [chunk_request(cluster, address, "chunk_has", {"ids": [chunk_id]})[0] for address in addresses.values()]

    # Within the grace period (the default, 10 minutes) nothing goes; a dry run says what would.
    report = json.loads(sandctl_ok(cluster, "gc", "--json").stdout)
    assert all(result["deleted"] == 0 and result["unreferenced"] == 3 for result in report.values()), report
    for node_id in addresses:
        dry = cluster.client.gc(node_id, dry_run=True, grace_seconds=0)
        assert dry == {"unreferenced": 3, "deleted": 3, "deleted_bytes": 3 * CHUNK}
    assert all(all(stored(chunk_id)) for chunk_id in orphan_ids)

    for node_id in addresses:
        assert cluster.client.gc(node_id, grace_seconds=0)["deleted"] == 3
    assert not any(any(stored(chunk_id)) for chunk_id in orphan_ids)
    assert all(all(stored(chunk_id)) for chunk_id in kept)
    copy = tmp_path / "copy"
    sandctl_ok(cluster, "get", "/kept", str(copy))
    assert sha256_of(copy) == expected


# ---------------------------------------------------------------------- bad input


@small_chunk_cluster
def test_bad_input_gives_one_line_errors_and_leaves_nothing(cluster, tmp_path):
    local = tmp_path / "input"
    random_file(local, CHUNK + 1)
    sandctl_ok(cluster, "mkdir", "/dir")

    def fails(status: int, *args: str, input: bytes | None = None) -> None:
        result = cluster.sandctl(*args, input=input)
        lines = result.stderr.decode().strip().splitlines()
        assert result.returncode == status, (args, result.stderr)
        assert len(lines) == 1 and lines[0].startswith("Error: "), lines

    fails(5, "put", str(tmp_path / "missing"), "/x")
    fails(1, "put", str(tmp_path), "/x")  # a local directory is not a file
    fails(1, "put", "-", "/dir", input=b"to a directory")
    fails(5, "get", "/missing", str(tmp_path / "out"))
    fails(5, "get", "/missing", "-")
    fails(5, "get", "/dir/../missing", str(tmp_path / "no-such-dir" / "out"))
    sandctl_ok(cluster, "put", str(local), "/f")
    fails(5, "get", "/f", str(tmp_path / "no-such-dir" / "out"))
    fails(1, "get", "/dir", str(tmp_path / "out"))
    assert not (tmp_path / "out").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".part")]
    listing = json.loads(sandctl_ok(cluster, "ls", "/", "--json").stdout)
    assert sorted(entry["path"] for entry in listing) == ["/dir", "/f"]


# ---------------------------------------------------------------------- memory


# The process's own peak: VmHWM where /proc has it, as getrusage's ru_maxrss is inherited
# from the parent at fork (the test process, which is larger than the probe).
MEMORY_PROBE = textwrap.dedent("""
    import json, resource, sys
    from node.config import load_config
    from sandctl.client import Client

    def peak_kib():
        try:
            with open("/proc/self/status") as status:
                return next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))
        except OSError:
            return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

    config = load_config(sys.argv[1])
    with Client(config, timeout_seconds=30) as client:
        client.wait_for_chunk_nodes(3)  # sockets and threads exist before the baseline
        client.write_file("/warm-up", b"small")
        baseline_kib = peak_kib()
        with open(sys.argv[2], "rb") as reader:
            client.put_file("/big", reader, size_hint=int(sys.argv[3]))
        print(json.dumps({"baseline_kib": baseline_kib, "peak_kib": peak_kib()}))
""")


@small_chunk_cluster
def test_put_memory_stays_within_a_few_chunks(cluster, tmp_path):
    big = tmp_path / "big"
    expected = random_file(big, MEMORY_FILE_CHUNKS * CHUNK)
    probe = subprocess.run(
        [sys.executable, "-c", MEMORY_PROBE, str(cluster.config_path), str(big), str(MEMORY_FILE_CHUNKS * CHUNK)],
        env=cluster.env(), capture_output=True, timeout=120, check=False)
    assert probe.returncode == 0, probe.stderr.decode()
    usage = json.loads(probe.stdout)
    growth_bytes = (usage["peak_kib"] - usage["baseline_kib"]) * 1024
    print(f"put of {MEMORY_FILE_CHUNKS} MiB: peak RSS grew by {growth_bytes / CHUNK:.1f} chunks", usage)
    assert growth_bytes < MEMORY_PEAK_CHUNKS_MAX * CHUNK, usage
    sink = _HashingSink()
    cluster.client.get_file("/big", sink)
    assert sink.digest.hexdigest() == expected
