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
would all differ. Chunks are not the node's business here: the client puts them to the
replicas the records name, through the chunk port, after the nodes started.
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import click
import lmdb
import msgpack

from node.config import ClusterConfig, load_config, node_data_dir
from node.errors import BadRequest, Refused, SandStoreError, TooLarge
from node.metadata.state_machine import Namespace
from node.metadata.replicas import ChunkReplicas
from node.metadata.tables import KEY_APPLIED_INDEX, TABLE_NAMES, unpack_uint64
from node.raft.node import BOOTSTRAP_INDEX, BOOTSTRAP_TERM
from node.raft.types import ConfState, HardState, Snapshot, SnapshotMeta
from node.replicator.raft import encode_addresses
from node.snapshot_codec import encode_snapshot
from node.storage.lmdb_store import NodeStore

IMAGE_CHECKSUM_BYTES = 32  # BLAKE2b-256 of the image bytes, as the backup file checks sections
SEED_EXIT_REFUSED = 1


def image_checksum(image: bytes) -> str:
    return hashlib.blake2b(image, digest_size=IMAGE_CHECKSUM_BYTES).hexdigest()


def namespace_image(namespace: Namespace, txn: lmdb.Transaction, args: dict) -> dict:
    """The `namespace_image` op, in the caller's read transaction (after the read barrier).

    Returns {"applied": index of the cut, "image": Namespace.snapshot_data bytes, "digest":
    the `digest` op's value for this cut, "image_blake2b": hex checksum of the image bytes,
    "chunks": [[chunk id, size, [replica node ids]], ...] every chunk the image references,
    once each, with its recorded replicas, in id order}. TooLarge if the
    image exceeds args["max_bytes"] (the caller's frame limit)."""
    image = namespace.snapshot_data(txn)
    max_bytes = args.get("max_bytes")
    if max_bytes is not None and len(image) > max_bytes:
        raise TooLarge(f"the namespace image is {len(image)} bytes, more than the {max_bytes} a reply may carry "
                       "(raise max_frame_bytes)")
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


@click.group()
def main() -> None:
    """Node-side restore steps (run by `sandctl snapshot restore`)."""


@main.command("seed")
@click.option("--config", "config_path", required=True, type=click.Path(dir_okay=False))
@click.option("--id", "node_id", required=True)
@click.option("--data-dir", required=True, type=click.Path(file_okay=False))
@click.option("--applied", type=click.IntRange(min=0), required=True, help="The backup's applied index.")
@click.option("--digest", required=True, help="The namespace digest the image must restore to.")
def seed_command(config_path: str, node_id: str, data_dir: str, applied: int, digest: str) -> None:
    """Seed one node of a new cluster from the namespace image on stdin.

    Example: python -m node.backup seed --config c.toml --id n1 --data-dir d --applied 7 --digest HEX < image
    """
    try:
        seed_node(load_config(config_path), node_id, data_dir, sys.stdin.buffer.read(), applied, digest)
    except SandStoreError as error:
        click.echo(f"Error: {error}", err=True)
        sys.exit(SEED_EXIT_REFUSED)


if __name__ == "__main__":
    main()
