"""Backup and restore end to end: `sandctl snapshot save` under concurrent writes, `snapshot
restore` into a new cluster (new ports, new data dir) whose namespace digest equals the
source's at the backup's index and whose files read back byte for byte; truncated and altered
backup files refused with one line and exit 1, nothing created. Plus the file format itself."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import signal
from pathlib import Path

import msgpack
import pytest

from sandctl import backup
from sandctl.client import Client
from sandctl.keys import list_keys

from e2e_workload import Writer, wait_until

pytestmark = pytest.mark.e2e

SMALL_CHUNKS = "raft-3-chunks-1mib"
CHUNK = 1 << 20
BIG_BYTES = 3 * CHUNK + 12345  # four chunks, the last one short
SANDCTL_TIMEOUT_SECONDS = 120


@pytest.fixture
def restored_dirs(tmp_path, e2e_tools):
    """Data dirs for restored clusters; teardown SIGKILLs exactly the nodes recorded in them."""
    created: list[Path] = []

    def new(name: str) -> Path:
        path = tmp_path / name
        created.append(path)
        return path

    yield new
    for data_dir in created:
        for pid, node_id in e2e_tools.recorded_pids(data_dir).items():
            if e2e_tools.is_node_process(pid, node_id):
                os.kill(pid, signal.SIGKILL)
        for pid, node_id in e2e_tools.recorded_pids(data_dir).items():
            wait_until(lambda: not e2e_tools.is_node_process(pid, node_id), f"{node_id} (pid {pid}) gone")


def section_offsets(content: bytes) -> list[tuple[int, int, int]]:
    """(kind, payload offset, payload length) of each section of a backup file's bytes."""
    found = []
    position = len(backup.MAGIC) + 2
    while position < len(content):
        kind, length = content[position], int.from_bytes(content[position + 1:position + 9], "big")
        found.append((kind, position + 9, length))
        position += 9 + length + backup.CHECKSUM_BYTES
    return found


@contextlib.contextmanager
def own_keys(data_dir):
    """Clients of a restored cluster use its own keys: the e2e fixture's $SANDSTORE_KEYS_DIR names
    the source cluster's (a restored cluster is a new cluster, with keys of its own)."""
    with pytest.MonkeyPatch.context() as patch:
        if data_dir is not None:
            patch.delenv("SANDSTORE_KEYS_DIR", raising=False)
        yield


def sandctl_json(cluster, *args: str) -> dict:
    result = cluster.sandctl(*args, "--json", timeout_seconds=SANDCTL_TIMEOUT_SECONDS)
    assert result.returncode == 0, (args, result.stderr.decode())
    return json.loads(result.stdout)


def digests(config, data_dir=None) -> dict[str, str]:
    with own_keys(data_dir), Client(config, timeout_seconds=5, data_dir=data_dir) as client:
        answers = client.broadcast("digest", {})
    return {node: answer["digest"] for node, answer in answers.items() if isinstance(answer, dict)}


def write_big_file(client: Client, remote: str, seed: bytes) -> bytes:
    content = hashlib.shake_256(seed).digest(BIG_BYTES)
    client.put_file(remote, io.BytesIO(content), size_hint=len(content), parents=True)
    return content


def read_all(client: Client, remote: str) -> bytes:
    buffer = io.BytesIO()
    client.get_file(remote, buffer)
    return buffer.getvalue()


@pytest.mark.parametrize("cluster", [SMALL_CHUNKS], indirect=True)
def test_a_backup_under_writes_restores_into_a_new_cluster_with_the_same_digest(cluster, tmp_path, e2e_tools,
                                                                                 restored_dirs):
    client = cluster.client
    big = write_big_file(client, "/data/big.bin", b"big")
    shared = write_big_file(client, "/data/same-chunks.bin", b"big")  # dedup: the same chunks again
    client.write_file("/data/small.txt", b"inline content\n")
    writer = Writer(cluster.config)
    writer.start()
    writer.wait_for_acknowledged(20)
    acknowledged_before = list(writer.acknowledged)
    saved = sandctl_json(cluster, "snapshot", "save", str(tmp_path / "backup.sandbak"))
    writer.wait_for_acknowledged(len(acknowledged_before) + 20)  # the writes went on meanwhile
    written = writer.finish()
    assert saved["chunks"] == 4 and saved["chunk_bytes"] == BIG_BYTES, saved
    assert saved["applied"] >= len(acknowledged_before)

    new_config_path = tmp_path / "restored.toml"
    new_config = e2e_tools.write_config(new_config_path, 3, chunk_size_bytes=CHUNK)
    restored_dir = restored_dirs("restored")
    restored = sandctl_json(cluster, "snapshot", "restore", str(tmp_path / "backup.sandbak"),
                            "--config", str(new_config_path), "--data-dir", str(restored_dir))
    assert restored["digest"] == saved["digest"] and restored["applied"] == saved["applied"], (restored, saved)
    assert restored["chunks"] == 4
    # Every node of the new cluster holds the namespace of the backup's index, byte for byte.
    assert digests(new_config, restored_dir) == {node: saved["digest"] for node in new_config.node_ids()}
    assert set(digests(cluster.config).values()) != {saved["digest"]}  # the source moved on
    with pytest.MonkeyPatch.context() as patch:  # each data dir's own keys, not $SANDSTORE_KEYS_DIR's
        patch.delenv("SANDSTORE_KEYS_DIR", raising=False)
        assert list_keys(restored_dir)["cluster_id"] != list_keys(cluster.data_dir)["cluster_id"]  # a new identity

    with own_keys(restored_dir), Client(new_config, timeout_seconds=20, data_dir=restored_dir) as new_client:
        assert read_all(new_client, "/data/big.bin") == big
        assert read_all(new_client, "/data/same-chunks.bin") == shared
        assert new_client.read("/data/small.txt")[1] == b"inline content\n"
        present = sorted(int(entry["path"].rsplit("/", 1)[1]) for entry in new_client.ls("/load"))
        assert set(acknowledged_before) <= set(present)
        assert set(present) <= set(written) | set(writer.uncertain)
        # One writer, one write at a time: a prefix of its writes (but for unknown outcomes).
        assert set(range(1, max(present) + 1)) - set(present) <= set(writer.uncertain)
        assert len(present) < len(written)
        for number in present:
            assert new_client.read(f"/load/{number}")[1] == f"value-{number}".encode()
        # fsck (asked of the leader, retried while it takes its first look): every chunk healthy.
        report = new_client.call("fsck", {})
        assert report["totals"]["files"] == report["totals"]["healthy"] == len(present) + 3, report["totals"]
        assert report["chunk_totals"]["chunks"] == report["chunk_totals"]["healthy"] == 4, report["chunk_totals"]
        # The new cluster is a cluster of its own: it takes writes, the source does not see them.
        new_client.write_file("/after-restore", b"new")
        assert new_client.stat("/after-restore")["size"] == 3
    with Client(cluster.config, timeout_seconds=10) as source:
        assert all(entry["path"] != "/after-restore" for entry in source.ls("/"))

    # A backup of the quiet source has exactly the digest every source node reports.
    quiet = wait_until(lambda: len(set(digests(cluster.config).values())) == 1 and digests(cluster.config),
                       "source nodes converged")
    # (--config and --data-dir: the restore made the new cluster the remembered one, as
    # `cluster start` does, so the source is named with its data dir, where its keys are)
    namespace_only = sandctl_json(cluster, "snapshot", "save", "--no-data", str(tmp_path / "meta.sandbak"),
                                  "--config", str(cluster.config_path), "--data-dir", str(cluster.data_dir))
    assert set(quiet.values()) == {namespace_only["digest"]}
    assert namespace_only["file_bytes"] < BIG_BYTES


@pytest.mark.parametrize("cluster", ["none-1"], indirect=True)
def test_truncated_and_altered_backups_are_refused_with_one_line(cluster, tmp_path, e2e_tools, restored_dirs):
    write_big_file(cluster.client, "/big.bin", b"corrupt me")
    path = tmp_path / "good.sandbak"
    saved = sandctl_json(cluster, "snapshot", "save", str(path))
    assert saved["chunks"] == 1
    good = path.read_bytes()
    new_config_path = tmp_path / "restored.toml"
    e2e_tools.write_config(new_config_path, 1, "none")
    sections = section_offsets(good)
    assert [kind for kind, _, _ in sections] == [1, 2, 3, 4, 5]
    variants = {
        "truncated-in-a-chunk": good[: len(good) // 2],
        "truncated-final-checksum": good[:-1],
        "no-end-section": good[: -(9 + 2 * backup.CHECKSUM_BYTES)],
        "empty": b"",
        "not-a-backup": b"hello world\n" * 10,
        "trailing-garbage": good + b"x",
    }
    # One flipped bit in each section's payload, in a section's length, in a checksum, in the version.
    offsets = {f"section-{kind}": start + length // 2 for kind, start, length in sections if length}
    offsets.update({"length-field": sections[1][1] - 2, "checksum": sections[2][1] + sections[2][2] + 3,
                    "version": len(backup.MAGIC) + 1})
    for name, offset in offsets.items():
        altered = bytearray(good)
        altered[offset] ^= 0x01
        variants[f"altered-{name}"] = bytes(altered)
    for name, content in variants.items():
        bad = tmp_path / f"{name}.sandbak"
        bad.write_bytes(content)
        target = restored_dirs(f"restored-{name}")
        result = e2e_tools.run_sandctl(cluster.home, "snapshot", "restore", str(bad), "--config",
                                       str(new_config_path), "--data-dir", str(target), timeout_seconds=60)
        lines = result.stderr.decode().splitlines()
        assert result.returncode == 1, (name, result.stderr.decode())
        assert len(lines) == 1 and lines[0].startswith(f"Error: {bad}: "), (name, lines)
        assert not target.exists(), name  # refused before anything was created
    # The good file, for contrast, restores.
    target = restored_dirs("restored-good")
    restored = sandctl_json(cluster, "snapshot", "restore", str(path), "--config", str(new_config_path),
                            "--data-dir", str(target))
    assert restored["digest"] == saved["digest"]
    # A data directory that already holds a node is refused, and left as it was.
    before = sorted(str(path) for path in target.rglob("*"))
    again = e2e_tools.run_sandctl(cluster.home, "snapshot", "restore", str(path), "--config", str(new_config_path),
                                  "--data-dir", str(target), timeout_seconds=60)
    assert again.returncode == 1 and again.stderr.decode().count("\n") == 1, again.stderr.decode()
    assert "restore needs a new, empty data directory" in again.stderr.decode()
    assert sorted(str(path) for path in target.rglob("*")) == before


def test_the_format_checks_every_section_and_the_order(tmp_path):
    chunk = b"c" * 5000
    chunk_id = hashlib.blake2b(chunk, digest_size=32).digest()

    def write(path: Path, sections: list[tuple[int, bytes]]) -> None:
        with open(path, "wb") as file:
            writer = backup.BackupWriter(file)
            for kind, payload in sections:
                if kind == backup.SECTION_CHUNK:
                    writer.chunk(payload[:32], payload[32:])
                else:
                    writer.section(kind, payload)
            writer.end()

    image = b"image bytes"
    header = {"format": 1, "applied": 7, "digest": "d" * 64, "image_bytes": len(image),
              "image_blake2b": hashlib.blake2b(image, digest_size=32).hexdigest(), "with_data": True,
              "chunks": 1, "chunk_bytes": len(chunk)}
    sections = [(backup.SECTION_HEADER, msgpack.packb(header)), (backup.SECTION_NAMESPACE, image),
                (backup.SECTION_CHUNK_INDEX, msgpack.packb([[chunk_id, len(chunk), ["n1"]]])),
                (backup.SECTION_CHUNK, chunk_id + chunk)]
    write(tmp_path / "good", sections)
    seen = []
    contents = backup.read_backup(tmp_path / "good", on_chunk=lambda i, c: seen.append((i, bytes(c))))
    assert contents.header["applied"] == 7 and contents.image == image and seen == [(chunk_id, chunk)]

    write(tmp_path / "swapped", [sections[1], sections[0]] + sections[2:])
    with pytest.raises(backup.BackupCorrupt, match="expected the header section"):
        backup.read_backup(tmp_path / "swapped")
    write(tmp_path / "missing-chunk", sections[:3])
    with pytest.raises(backup.BackupCorrupt, match="expected the chunk section"):
        backup.read_backup(tmp_path / "missing-chunk")
    wrong = hashlib.blake2b(b"other", digest_size=32).digest()
    write(tmp_path / "wrong-id", sections[:3] + [(backup.SECTION_CHUNK, wrong + chunk)])
    with pytest.raises(backup.BackupCorrupt, match="missing or out of order"):
        backup.read_backup(tmp_path / "wrong-id")
    # A chunk section's checksum covers its id; the content is checked against the id.
    write(tmp_path / "altered-content", sections[:3] + [(backup.SECTION_CHUNK, chunk_id + b"C" + chunk[1:])])
    with pytest.raises(backup.BackupCorrupt, match="does not hash to its id"):
        backup.read_backup(tmp_path / "altered-content")
    # An END section that is intact in itself but does not match the sections before it (as
    # after a section was swapped for another valid one) fails the final checksum.
    good = (tmp_path / "good").read_bytes()
    end_kind, end_start, end_length = section_offsets(good)[-1]
    assert end_kind == backup.SECTION_END
    head = good[end_start - 9:end_start]
    forged_payload = hashlib.blake2b(b"another history", digest_size=32).digest()
    forged = good[:end_start] + forged_payload + hashlib.blake2b(head + forged_payload, digest_size=32).digest()
    (tmp_path / "forged-end").write_bytes(forged)
    with pytest.raises(backup.BackupCorrupt, match="final checksum"):
        backup.read_backup(tmp_path / "forged-end")
