"""Backups: `sandctl snapshot save FILE` and `sandctl snapshot restore FILE`.

Save asks the leader for `namespace_image` (one read transaction after a linearizable read
barrier, node/backup.py), then streams every chunk the image references from its replicas
(sandctl/transfer.py verifies each against its id) into the file, one chunk in memory at a
time. The file is written under a temporary name and renamed when complete.

Restore reads the whole file once to check it, before anything is created; then seeds each
node of the NEW cluster's config (`python -m node.backup seed`, the node's code in its own
process: this package never opens a node's store) with the image as its initial snapshot and
the chunks its records place on it, verified and fsynced, reading the file a second time; then
starts the cluster and checks its digest. The new cluster's Raft history is its own (term 1, a
new log, the new config's members and addresses); its namespace and chunks are the backup's.

File format, version 1 (integers big-endian):

    file    = MAGIC (8 bytes, b"SANDBAK\\n") + FORMAT_VERSION (2 bytes) + section...
    section = kind (1 byte) + length (8 bytes) + payload (length bytes) + checksum (32 bytes):
              BLAKE2b-256 of (kind + length + payload); for a CHUNK section of (kind + length
              + chunk id), the id being the digest of the content (node/chunk_ids.py), which every reader
              checks (so each byte is hashed once, not twice)

    kind 1 HEADER       once, first: msgpack map (format, created_ns, applied, digest,
                        image_bytes, image_blake2b, with_data, chunks, chunk_bytes, served_by)
    kind 2 NAMESPACE    once: the namespace image exactly as the state machine's snapshot_data
    kind 3 CHUNK_INDEX  once: msgpack [[chunk id, size, [replica node ids]], ...] in id order
    kind 4 CHUNK        one per indexed chunk, in index order (none without data): the 32-byte
                        chunk id, then its content
    kind 5 END          once, last: BLAKE2b-256 of MAGIC + FORMAT_VERSION + every earlier
                        section's checksum, in order; nothing may follow it

Each section's checksum covers its bytes, and END's covers every checksum in order, so the
final checksum covers everything: a flipped byte fails its section, a dropped, repeated or
reordered section fails END, a truncated file has no END.
"""

from __future__ import annotations

import hashlib
import os
import struct
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Callable

import msgpack

from node.chunk_ids import CHUNK_ID_BYTES, chunk_matches
from node.config import ClusterConfig, node_data_dir
from node.errors import NoLeader, NotLeader, Refused, SandStoreError, Unavailable

from node.security.keyring import KEYS_DIR_ENVIRONMENT_VARIABLE
from sandctl import cluster as supervisor
from sandctl import state, transfer
from sandctl.client import CHUNKS_IN_FLIGHT, TRANSFER_BYTES_PER_SECOND_MIN, Client
from sandctl.errors import LocalFileError, LocalFileNotFound

MAGIC = b"SANDBAK\n"
FORMAT_VERSION = 1
CHECKSUM_BYTES = 32

SECTION_HEADER = 1
SECTION_NAMESPACE = 2
SECTION_CHUNK_INDEX = 3
SECTION_CHUNK = 4
SECTION_END = 5
SECTION_NAMES = {SECTION_HEADER: "header", SECTION_NAMESPACE: "namespace", SECTION_CHUNK_INDEX: "chunk index",
                 SECTION_CHUNK: "chunk", SECTION_END: "end"}

# A section longer than this is corruption, not data: no length field makes a reader allocate more.
SECTION_BYTES_MAX = 1 << 30
# The image may use at most this share of a reply frame; the chunk list (at most about as
# large, since every record names its chunks) and a few fields travel with it.
IMAGE_SHARE_OF_FRAME = 0.5
SEED_TIMEOUT_SECONDS = 120.0
SEED_LENGTH = struct.Struct(">Q")  # lengths and counts in the seed stream (node/backup.py)

_PREFIX = struct.Struct(">8sH")
_SECTION = struct.Struct(">BQ")

assert _PREFIX.size == len(MAGIC) + 2
assert CHECKSUM_BYTES == CHUNK_ID_BYTES

Progress = Callable[[int], None]


class BackupCorrupt(SandStoreError):
    """A backup file is truncated, altered or not a backup: it is refused, nothing changes."""

    code = "BACKUP_CORRUPT"


def _checksum(*parts: bytes | memoryview) -> bytes:
    hasher = hashlib.blake2b(digest_size=CHECKSUM_BYTES)
    for part in parts:
        hasher.update(part)
    return hasher.digest()


# ---------------------------------------------------------------------- the file format


class BackupWriter:
    """Writes sections to a binary file and keeps the running final checksum."""

    def __init__(self, file: BinaryIO) -> None:
        self._file = file
        prefix = _PREFIX.pack(MAGIC, FORMAT_VERSION)
        file.write(prefix)
        self._final = hashlib.blake2b(prefix, digest_size=CHECKSUM_BYTES)
        self.bytes_written = len(prefix)
        self._ended = False

    def section(self, kind: int, payload: bytes) -> None:
        assert not self._ended, "a section after END"
        assert kind in SECTION_NAMES and kind not in (SECTION_END, SECTION_CHUNK), kind
        self._write(kind, (payload,))

    def chunk(self, chunk_id: bytes, content: bytes | memoryview) -> None:
        """A CHUNK section; the caller has checked that content hashes to chunk_id."""
        assert not self._ended, "a section after END"
        assert len(chunk_id) == CHUNK_ID_BYTES, chunk_id
        self._write(SECTION_CHUNK, (chunk_id, content))

    def end(self) -> None:
        self._write(SECTION_END, (self._final.digest(),))
        self._ended = True

    def _write(self, kind: int, parts: tuple) -> None:
        length = sum(len(part) for part in parts)
        assert length <= SECTION_BYTES_MAX, length
        head = _SECTION.pack(kind, length)
        checksum = _checksum(head, parts[0]) if kind == SECTION_CHUNK else _checksum(head, *parts)
        self._file.write(head)
        for part in parts:
            self._file.write(part)
        self._file.write(checksum)
        self._final.update(checksum)
        self.bytes_written += len(head) + length + CHECKSUM_BYTES


class BackupReader:
    """Reads and checks sections one at a time; BackupCorrupt names the first problem."""

    def __init__(self, file: BinaryIO, size_bytes: int) -> None:
        self._file = file
        self._remaining = size_bytes
        prefix = self._read(_PREFIX.size, "the file header")
        magic, version = _PREFIX.unpack(prefix)
        if magic != MAGIC:
            raise BackupCorrupt("not a SandStore backup (wrong magic bytes)")
        if version != FORMAT_VERSION:
            raise BackupCorrupt(f"backup format version {version} is not supported (this sandctl reads {FORMAT_VERSION})")
        self._final = hashlib.blake2b(prefix, digest_size=CHECKSUM_BYTES)
        self.sections_read = 0

    def next_section(self) -> tuple[int, bytes]:
        """(kind, payload) of the next section, checked. END is checked here too and must be
        the last bytes of the file."""
        head = self._read(_SECTION.size, f"section {self.sections_read + 1}")
        kind, length = _SECTION.unpack(head)
        name = SECTION_NAMES.get(kind)
        if name is None:
            raise BackupCorrupt(f"section {self.sections_read + 1} has unknown kind {kind}")
        if length > SECTION_BYTES_MAX or length + CHECKSUM_BYTES > self._remaining:
            raise BackupCorrupt(f"the {name} section {self.sections_read + 1} claims {length} bytes, "
                                f"more than the file holds (truncated?)")
        payload = self._read(length, f"the {name} section")
        checksum = self._read(CHECKSUM_BYTES, f"the {name} section's checksum")
        covered = memoryview(payload)[:CHUNK_ID_BYTES] if kind == SECTION_CHUNK else payload
        if kind == SECTION_CHUNK and length < CHUNK_ID_BYTES:
            raise BackupCorrupt(f"the chunk section {self.sections_read + 1} is too short to hold a chunk id")
        if _checksum(head, covered) != checksum:
            raise BackupCorrupt(f"the {name} section {self.sections_read + 1} fails its checksum (altered)")
        self.sections_read += 1
        if kind == SECTION_END:
            if payload != self._final.digest():
                raise BackupCorrupt("the final checksum does not match: sections were dropped, repeated or reordered")
            if self._remaining:
                raise BackupCorrupt(f"{self._remaining} bytes follow the end of the backup")
        self._final.update(checksum)
        return kind, payload

    def _read(self, size: int, what: str) -> bytes:
        if size > self._remaining:
            raise BackupCorrupt(f"the backup is truncated (it ends inside {what})")
        data = self._file.read(size)
        if len(data) != size:
            raise BackupCorrupt(f"the backup is truncated (it ends inside {what})")
        self._remaining -= size
        return data


@dataclass(frozen=True)
class BackupContents:
    """What a checked backup holds (chunk contents stay in the file)."""

    header: dict
    image: bytes
    chunks: list  # [[chunk id, size, [replica node ids]], ...]
    size_bytes: int


def _decode_map(payload: bytes, what: str) -> object:
    try:
        return msgpack.unpackb(payload, raw=False)
    except Exception as error:  # msgpack raises several unrelated types for garbage
        raise BackupCorrupt(f"the {what} section is undecodable: {type(error).__name__}") from None


def _check_header(header: object) -> dict:
    fields = {"format": int, "applied": int, "digest": str, "image_bytes": int, "image_blake2b": str,
              "with_data": bool, "chunks": int, "chunk_bytes": int}
    if not isinstance(header, dict) or any(not isinstance(header.get(k), t) for k, t in fields.items()):
        raise BackupCorrupt("the header section lacks a field of format version 1")
    return header


def _check_chunk_index(chunks: object) -> list:
    if not isinstance(chunks, list):
        raise BackupCorrupt("the chunk index is not a list")
    for entry in chunks:
        ok = (isinstance(entry, list) and len(entry) == 3 and isinstance(entry[0], bytes)
              and len(entry[0]) == CHUNK_ID_BYTES and isinstance(entry[1], int) and entry[1] > 0
              and isinstance(entry[2], list) and entry[2] and all(isinstance(n, str) for n in entry[2]))
        if not ok:
            raise BackupCorrupt("the chunk index holds a malformed entry")
    return chunks


def read_backup(path: str | os.PathLike, on_chunk: Callable[[bytes, memoryview], None] | None = None,
                progress: Progress | None = None, verify_content: bool = True) -> BackupContents:
    """Read and check the whole file (one chunk in memory at a time). on_chunk(id, content)
    is called for each chunk after its checks. verify_content=False skips hashing chunk
    contents, for a consumer that checks each against its id itself. BackupCorrupt on any
    problem."""
    path = Path(path)
    try:
        return _read_backup(path, on_chunk, progress, verify_content)
    except BackupCorrupt as error:
        raise BackupCorrupt(f"{path}: {error}; refused") from None


def _read_backup(path: Path, on_chunk, progress: Progress | None, verify_content: bool) -> BackupContents:
    with open(path, "rb") as file:
        size_bytes = os.fstat(file.fileno()).st_size
        reader = BackupReader(file, size_bytes)
        kinds = []

        def expect(kind: int) -> bytes:
            got, payload = reader.next_section()
            if got != kind:
                raise BackupCorrupt(f"section {reader.sections_read} is a {SECTION_NAMES[got]} section, "
                                    f"expected the {SECTION_NAMES[kind]} section")
            kinds.append(got)
            return payload

        header = _check_header(_decode_map(expect(SECTION_HEADER), "header"))
        if header["format"] != FORMAT_VERSION:
            raise BackupCorrupt(f"backup format version {header['format']} is not supported")
        image = expect(SECTION_NAMESPACE)
        if len(image) != header["image_bytes"] or hashlib.blake2b(image, digest_size=32).hexdigest() != header["image_blake2b"]:
            raise BackupCorrupt("the namespace image does not match the header's checksum")
        chunks = _check_chunk_index(_decode_map(expect(SECTION_CHUNK_INDEX), "chunk index"))
        if len(chunks) != header["chunks"] or sum(size for _, size, _ in chunks) != header["chunk_bytes"]:
            raise BackupCorrupt("the chunk index does not match the header")
        for chunk_id, size, _replicas in (chunks if header["with_data"] else []):
            payload = memoryview(expect(SECTION_CHUNK))
            if bytes(payload[:CHUNK_ID_BYTES]) != chunk_id or len(payload) - CHUNK_ID_BYTES != size:
                raise BackupCorrupt(f"chunk {chunk_id.hex()} is missing or out of order")
            content = payload[CHUNK_ID_BYTES:]
            if verify_content and not chunk_matches(chunk_id, content):
                raise BackupCorrupt(f"chunk {chunk_id.hex()} does not hash to its id")
            if on_chunk is not None:
                on_chunk(chunk_id, content)
            if progress is not None:
                progress(size)
        expect(SECTION_END)
    return BackupContents(header=header, image=image, chunks=chunks, size_bytes=size_bytes)


# ---------------------------------------------------------------------- save


class _ChunkSections:
    """A writer for transfer.get_stream: frames the stream of chunk contents, which arrive in
    index order, into one CHUNK section per chunk (at most one chunk buffered)."""

    def __init__(self, backup: BackupWriter, chunks: list) -> None:
        self._backup = backup
        self._chunks = chunks
        self._position = 0
        self._pending = bytearray()

    def write(self, data: bytes | memoryview) -> int:
        size = len(data)
        view = memoryview(data)
        while view:
            assert self._position < len(self._chunks), "more content than the chunk index holds"
            chunk_id, chunk_size, _ = self._chunks[self._position]
            if not self._pending and len(view) >= chunk_size:
                piece, view = view[:chunk_size], view[chunk_size:]  # the usual case: no copy
            else:
                take = chunk_size - len(self._pending)
                self._pending += view[:take]
                view = view[take:]
                if len(self._pending) < chunk_size:
                    break
                piece, self._pending = memoryview(bytes(self._pending)), bytearray()
            self._backup.chunk(chunk_id, piece)  # get_stream checked it against its id
            self._position += 1
        return size

    def finished(self) -> bool:
        return self._position == len(self._chunks) and not self._pending


def fetch_namespace_image(client: Client) -> tuple[str, dict]:
    """(node, namespace_image result) from the leader; retried across leader changes until
    the client's deadline."""
    deadline = time.monotonic() + client.timeout_seconds
    bytes_max = int(client.config.frame_bytes_max * IMAGE_SHARE_OF_FRAME)
    while True:
        remaining = max(0.001, deadline - time.monotonic())
        leader = client.wait_for_leader(remaining)
        try:
            result = client.call("namespace_image", {"bytes_max": bytes_max}, node=leader,
                                 deadline_seconds=max(0.001, deadline - time.monotonic()))
            return leader, result
        except (NotLeader, NoLeader, Unavailable):
            if time.monotonic() >= deadline:
                raise


def save(client: Client, path: str | os.PathLike, *, with_data: bool = True,
         progress_for: Callable[[int], Progress | None] | None = None) -> dict:
    """Write a backup of the cluster to `path`; returns a summary. progress_for(total bytes)
    may return a progress callback for the chunk contents."""
    started = time.monotonic()
    path = Path(path)
    if not path.parent.is_dir():
        raise LocalFileNotFound(f"local directory {path.parent} does not exist")
    if path.is_dir():
        raise LocalFileError(f"{path} is a directory")
    served_by, image_result = fetch_namespace_image(client)
    image, chunks = image_result["image"], image_result["chunks"]
    if hashlib.blake2b(image, digest_size=32).hexdigest() != image_result["image_blake2b"]:
        raise Unavailable(f"the namespace image from {served_by} arrived damaged; nothing was written, retry")
    chunk_bytes = sum(size for _, size, _ in chunks)
    header = {"format": FORMAT_VERSION, "created_ns": time.time_ns(), "applied": image_result["applied"],
              "digest": image_result["digest"], "image_bytes": len(image),
              "image_blake2b": image_result["image_blake2b"], "with_data": with_data, "chunks": len(chunks),
              "chunk_bytes": chunk_bytes, "served_by": served_by}
    temporary = path.with_name(f".{path.name}.partial-{os.getpid()}")
    try:
        with open(temporary, "wb") as file:
            backup = BackupWriter(file)
            backup.section(SECTION_HEADER, msgpack.packb(header))
            backup.section(SECTION_NAMESPACE, image)
            backup.section(SECTION_CHUNK_INDEX, msgpack.packb(chunks))
            if with_data and chunks:
                progress = progress_for(chunk_bytes) if progress_for is not None else None
                _fetch_chunks(client, chunks, backup, progress)
            backup.end()
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    elapsed_seconds = time.monotonic() - started
    return {"file": str(path), "applied": header["applied"], "digest": header["digest"], "served_by": served_by,
            "with_data": with_data, "chunks": len(chunks), "chunk_bytes": chunk_bytes,
            "file_bytes": backup.bytes_written, "elapsed_seconds": round(elapsed_seconds, 3)}


def _fetch_chunks(client: Client, chunks: list, backup: BackupWriter, progress: Progress | None) -> None:
    replica_ids = {node for _, _, replicas in chunks for node in replicas}
    if not replica_ids <= set(client.chunk_addresses):
        client.status_all()  # a replica joined after the config was written: learn its address
    sections = _ChunkSections(backup, chunks)
    # As for get_file: the call's deadline plus the time the bytes take at the floor rate.
    deadline_seconds = client.timeout_seconds + sum(size for _, size, _ in chunks) / TRANSFER_BYTES_PER_SECOND_MIN
    transfer.get_stream(dict(client.chunk_addresses), chunks, sections, deadline_seconds=deadline_seconds,
                        chunks_in_flight_max=CHUNKS_IN_FLIGHT, progress=progress,
                        frame_bytes_max=client.config.frame_bytes_max, security=client.security)
    assert sections.finished(), "the chunk stream ended early"


# ---------------------------------------------------------------------- restore


def restore(config: ClusterConfig, data_dir: str | os.PathLike, path: str | os.PathLike, *,
            deadline_seconds: float, progress_for: Callable[[int], Progress | None] | None = None) -> dict:
    """Start a new cluster of `config` in the new, empty `data_dir` holding exactly the backup's
    state; returns a summary. Refuses (BackupCorrupt, Refused) before creating anything if the
    file fails any check, the data dir holds a node, or the config lacks a replica's node."""
    started = time.monotonic()
    contents = read_backup(path)  # every check first: a bad file changes nothing
    header = contents.header
    data_dir = Path(data_dir)
    missing = sorted({node for _, _, replicas in contents.chunks for node in replicas} - set(config.node_ids()))
    if missing and header["with_data"]:
        raise Refused(f"the backup's chunks are stored on {', '.join(missing)}, which {config.path} does not have: "
                      "the new cluster's config needs those node ids")
    for node_id in config.node_ids():
        if node_data_dir(data_dir, node_id).exists() or supervisor.node_process(data_dir, node_id).alive:
            raise Refused(f"{node_data_dir(data_dir, node_id)} exists: restore needs a new, empty data directory")
    # A restored cluster is a new cluster: its keys are made in, and read from, its own data
    # directory. $SANDSTORE_KEYS_DIR names the keys of the cluster a client already talks to
    # (often the source of this backup); inherited by the seeding process and the new nodes,
    # it would hand them the source cluster's identity.
    os.environ.pop(KEYS_DIR_ENVIRONMENT_VARIABLE, None)
    seeding = _Seeding(config, data_dir, contents)
    try:
        if header["with_data"] and contents.chunks:
            progress = progress_for(header["chunk_bytes"]) if progress_for is not None else None
            # Read again, framing and checksums checked again; every node that stores a chunk
            # checks its content against its id.
            read_backup(path, on_chunk=seeding.send_chunk, progress=progress, verify_content=False)
        seeding.finish()
    finally:
        seeding.kill()
    seeded_seconds = time.monotonic() - started
    state.remember(config.path, data_dir)
    pids, leader = supervisor.start_cluster(config, data_dir, deadline_seconds)
    # Every node's namespace was checked against the backup's digest when seeded; this is what
    # the running leader reports (a live cluster may move on at once: writes, repairs).
    with Client(config, timeout_seconds=deadline_seconds, data_dir=data_dir) as client:
        restored = client.call("digest", {}, node=leader)
    imported = len(contents.chunks) if header["with_data"] else 0
    return {"file": str(path), "config": config.path, "data_dir": str(data_dir), "leader": leader,
            "pids": pids, "applied": header["applied"], "digest": restored["digest"], "chunks": imported,
            "chunk_bytes": header["chunk_bytes"] if imported else 0, "with_data": header["with_data"],
            "seeded_seconds": round(seeded_seconds, 3), "elapsed_seconds": round(time.monotonic() - started, 3)}


class _Seeding:
    """`python -m node.backup seed`: the node's own code writes every new node's stores (this
    package never opens them), fed the stream node/backup.py describes."""

    def __init__(self, config: ClusterConfig, data_dir: Path, contents: BackupContents) -> None:
        command = [sys.executable, "-m", "node.backup", "seed", "--config", str(Path(config.path).resolve()),
                   "--data-dir", str(data_dir.resolve()), "--applied", str(contents.header["applied"]),
                   "--digest", contents.header["digest"]]
        self._process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                         stderr=subprocess.PIPE)
        self._broken = False
        index = msgpack.packb(contents.chunks if contents.header["with_data"] else [])
        self._send(SEED_LENGTH.pack(len(contents.image)), contents.image, SEED_LENGTH.pack(len(index)), index)

    def send_chunk(self, chunk_id: bytes, content: memoryview) -> None:
        self._send(content)

    def _send(self, *parts: bytes | memoryview) -> None:
        if self._broken:
            return
        try:
            for part in parts:
                self._process.stdin.write(part)
        except BrokenPipeError:
            self._broken = True  # it exited: finish() reports why

    def finish(self) -> None:
        """Wait for the seeding; Refused with its error line if it failed."""
        _, errors = self._process.communicate(timeout=SEED_TIMEOUT_SECONDS)  # closes stdin: end of stream
        if self._process.returncode != 0:
            lines = errors.decode(errors="replace").strip().splitlines()
            reason = lines[-1].removeprefix("Error: ") if lines else f"exit status {self._process.returncode}"
            raise Refused(f"seeding the new cluster failed ({reason}); delete the new data directory before "
                          "trying again")

    def kill(self) -> None:
        """Stop the seeder if it still runs (after a failure here): only our own child."""
        if self._process.poll() is None:
            self._process.kill()
            self._process.wait()
