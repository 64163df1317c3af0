"""The node's side of backup and restore: a consistent namespace image, and seeding a new node.

Backup (`namespace_image`, a client read op): served like every linearizable read, after the
read barrier, from ONE LMDB read transaction, so the image, its chunk list and its digest
describe one cut of the namespace. That cut is at a known index: the log index of the last
command reflected in the namespace (its applied_index, pinned in the image itself). Entries
applied after it up to the node's Raft applied index are no-ops and membership changes, which
leave the namespace unchanged.

Restore (`seed_node`, run by `python -m node.backup seed` for each node of a NEW cluster,
before the node first starts): the node's store gets the image as its initial Raft snapshot
at that index, the namespace tables restored from it in the same transaction, the new
cluster's voters as membership, term 1 and nothing voted. This is the README's bootstrap
(every node of a new cluster starts from an identical snapshot that carries the voters), only
with a non-empty state machine: every node starts with the namespace byte for byte as in the
image, so its digest equals the source's at the backup's index. Replaying the files into an
empty cluster could not give that: inode numbers, times, sessions and the applied index
would all differ. The chunks that name this node as a replica go into its chunk store in the
same step, each checked against its id, so the node starts holding exactly what the image
records (its repair machinery finds nothing missing to act on).

`seed` seeds every node of the new config in one process, reading on stdin (sandctl writes it
from the backup file, one chunk in memory at a time; each chunk is sent once, whatever its
replica count):

    stream = image length (8 bytes big-endian) + image
             + index length (8 bytes) + index (msgpack [[chunk id, size, [node ids]], ...])
             + the content of each indexed chunk, in index order (its size from the index)
"""

from __future__ import annotations

import collections
import concurrent.futures
import hashlib
import struct
import sys
from pathlib import Path

import click
import lmdb
import msgpack

from node.chunk_ids import CHUNK_ID_BYTES
from node.chunks.store import ChunkStore
from node.config import ClusterConfig, load_config, node_data_dir
from node.errors import BadRequest, Refused, SandStoreError, TooLarge
from node.metadata.state_machine import Namespace
from node.metadata.replicas import ChunkReplicas
from node.metadata.tables import KEY_APPLIED_INDEX, TABLE_NAMES, unpack_uint64
from node.raft.node import BOOTSTRAP_INDEX, BOOTSTRAP_TERM
from node.raft.types import ConfState, HardState, Snapshot, SnapshotMeta
from node.replicator.addresses import encode_addresses
from node.snapshot_codec import encode_snapshot
from node.storage.lmdb_store import NodeStore

IMAGE_CHECKSUM_BYTES = 32  # BLAKE2b-256 of the image bytes, as the backup file checks sections
SEED_EXIT_REFUSED = 1
SEED_LENGTH = struct.Struct(">Q")
SEED_CHUNKS_IN_FLIGHT = 4


def image_checksum(image: bytes) -> str:
    return hashlib.blake2b(image, digest_size=IMAGE_CHECKSUM_BYTES).hexdigest()


def namespace_image(namespace: Namespace, txn: lmdb.Transaction, args: dict) -> dict:
    """The `namespace_image` op, in the caller's read transaction (after the read barrier).

    Returns {"applied": index of the cut, "image": Namespace.snapshot_data bytes, "digest":
    the `digest` op's value for this cut, "image_blake2b": hex checksum of the image bytes,
    "chunks": [[chunk id, size, [replica node ids]], ...] every chunk the image references,
    once each, with its recorded replicas, in id order}. TooLarge if the
    image exceeds args["bytes_max"] (the caller's frame limit)."""
    image = namespace.snapshot_data(txn)
    bytes_max = args.get("bytes_max")
    if bytes_max is not None and len(image) > bytes_max:
        raise TooLarge(f"the namespace image is {len(image)} bytes, more than the {bytes_max} a reply may carry "
                       "(raise frame_bytes_max)")
    applied, chunks = _describe(image)
    return {"applied": applied, "image": image, "digest": namespace.digest(txn),
            "image_blake2b": image_checksum(image), "chunks": chunks}


def _describe(image: bytes) -> tuple[int, list]:
    """(applied index, chunk list) of an image this node just built (trusted: no validation)."""
    _version, tables = msgpack.unpackb(image, raw=False)
    by_name = dict((table_name, flat) for table_name, flat in tables)
    meta = dict(zip(by_name[TABLE_NAMES["meta"]][0::2], by_name[TABLE_NAMES["meta"]][1::2]))
    applied = unpack_uint64(meta[KEY_APPLIED_INDEX]) if KEY_APPLIED_INDEX in meta else 0
    # ns.chunk_replicas holds every referenced chunk once, with the nodes that hold it now
    # (repairs included), keys ascending: exactly the list a backup fetches and a restore fills.
    flat = by_name[TABLE_NAMES["chunk_replicas"]]
    chunks = []
    for chunk_id, value in zip(flat[0::2], flat[1::2]):
        replicas = ChunkReplicas.decode(value)
        chunks.append([chunk_id, replicas.size, list(replicas.nodes)])
    return applied, chunks


def seed_node(config: ClusterConfig, node_id: str, data_dir: str | Path, image: bytes, applied: int,
              digest: str) -> None:
    """Make node_id's data directory start the new cluster of `config` from `image` (see the
    module docstring). Refused if the directory already holds a node's state; BadRequest if the
    image is malformed or does not have `digest` once restored (nothing is written then)."""
    config.node(node_id)  # ConfigError naming the known ids
    index = max(applied, BOOTSTRAP_INDEX)
    directory = node_data_dir(data_dir, node_id)
    if (directory / "raft.lmdb").exists():
        raise Refused(f"{directory} already holds a node's data: restore needs a new, empty data directory")
    directory.mkdir(parents=True, exist_ok=True)
    store = NodeStore(directory, config.lmdb_map_size_bytes)
    try:
        namespace = Namespace(store.env, session_ttl_ns=int(config.session_ttl_seconds * 1e9))
        data = encode_snapshot(image, encode_addresses(config.nodes))
        conf_state = ConfState(voters=frozenset(config.node_ids()))
        meta = SnapshotMeta(index=index, term=BOOTSTRAP_TERM, conf_state=conf_state, size_bytes=len(data))
        with store.write_batch(durable=True) as batch:
            namespace.restore(batch.txn, image)  # BadRequest before any change for a malformed image
            restored_digest = namespace.digest(batch.txn)
            if restored_digest != digest:
                raise BadRequest(f"the restored namespace has digest {restored_digest}, the backup says {digest}")
            batch.install_snapshot(Snapshot(meta=meta, data=data))
            batch.set_hard_state(HardState(term=BOOTSTRAP_TERM, commit=index))
    finally:
        store.close()


def import_chunks(config: ClusterConfig, data_dir: str | Path, index: list, stream) -> int:
    """Store the chunks of `index`, read from `stream` in order, in the chunk store of each
    node their entry names; each durable and checked against its id (ChecksumMismatch
    otherwise). Returns the bytes read."""
    _check_index(config, index)
    stores = {node_id: ChunkStore(node_data_dir(data_dir, node_id), config.chunk_map_size_bytes)
              for node_id in sorted({node_id for _, _, nodes in index for node_id in nodes})}
    total_bytes = 0
    # Several puts at once: each store group-commits them (one fsync for several chunks) and
    # the stores are written in parallel while the next chunk is read; at most
    # SEED_CHUNKS_IN_FLIGHT chunks are in memory.
    in_flight: collections.deque[list[concurrent.futures.Future]] = collections.deque()
    try:
        with concurrent.futures.ThreadPoolExecutor(SEED_CHUNKS_IN_FLIGHT * len(stores or [None])) as pool:
            for position, (chunk_id, size, nodes) in enumerate(index):
                if len(in_flight) == SEED_CHUNKS_IN_FLIGHT:
                    for future in in_flight.popleft():
                        future.result()  # ChecksumMismatch, StoreFull: raised here
                content = _read_exactly(stream, size, f"chunk {position}")
                in_flight.append([pool.submit(stores[node_id].put, chunk_id, content) for node_id in nodes])
                total_bytes += size
            while in_flight:
                for future in in_flight.popleft():
                    future.result()
    finally:
        for store in stores.values():
            store.close()
    return total_bytes


def _check_index(config: ClusterConfig, index: object) -> None:
    known = set(config.node_ids())
    if not isinstance(index, list):
        raise BadRequest("the chunk index is not a list")
    for entry in index:
        if not (isinstance(entry, list) and len(entry) == 3 and isinstance(entry[0], bytes)
                and len(entry[0]) == CHUNK_ID_BYTES and isinstance(entry[1], int)
                and 0 < entry[1] <= config.frame_bytes_max and isinstance(entry[2], list) and entry[2]
                and set(entry[2]) <= known):
            raise BadRequest("the chunk index holds a malformed entry or a node the config does not have")


def _read_exactly(stream, size: int, what: str) -> bytes:
    data = stream.read(size)
    if len(data) != size:
        raise BadRequest(f"the restore stream ended inside {what}")
    return data


def _read_block(stream, what: str, bytes_max: int) -> bytes:
    (size,) = SEED_LENGTH.unpack(_read_exactly(stream, SEED_LENGTH.size, f"the length of {what}"))
    if size > bytes_max:
        raise BadRequest(f"{what} claims {size} bytes (at most {bytes_max})")
    return _read_exactly(stream, size, what)


@click.group()
def main() -> None:
    """Node-side restore steps (run by `sandctl snapshot restore`)."""


@main.command("seed")
@click.option("--config", "config_path", required=True, type=click.Path(dir_okay=False))
@click.option("--data-dir", required=True, type=click.Path(file_okay=False))
@click.option("--applied", type=click.IntRange(min=0), required=True, help="The backup's applied index.")
@click.option("--digest", required=True, help="The namespace digest the image must restore to.")
def seed_command(config_path: str, data_dir: str, applied: int, digest: str) -> None:
    """Seed every node of a new cluster from the image and chunks streamed on stdin (see the
    module docstring). Nothing may run in DATA_DIR yet.

    Example: python -m node.backup seed --config c.toml --data-dir d --applied 7 --digest HEX < stream
    """
    stream = sys.stdin.buffer
    try:
        config = load_config(config_path)
        image = _read_block(stream, "the image", config.frame_bytes_max)
        index = msgpack.unpackb(_read_block(stream, "the chunk index", config.frame_bytes_max), raw=False)
        for node_id in config.node_ids():
            seed_node(config, node_id, data_dir, image, applied, digest)
        import_chunks(config, data_dir, index, stream)
    except SandStoreError as error:
        click.echo(f"Error: {error}", err=True)
        sys.exit(SEED_EXIT_REFUSED)
    except ValueError as error:  # msgpack's errors for a garbled index
        click.echo(f"Error: undecodable chunk index: {type(error).__name__}", err=True)
        sys.exit(SEED_EXIT_REFUSED)


if __name__ == "__main__":
    main()
