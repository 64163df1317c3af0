"""sandctl's file verbs against real node processes, run as real subprocesses: a tree of
1,000 small files and 3 large ones round-trips through put -r/get -r byte for byte; cp shares
chunks; a closed stdout ends quietly with 141; the hints of real node errors name flags."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

SMALL_FILES = 1000
LARGE_FILES = 3
LARGE_FILE_BYTES = 5 << 20  # five 1 MiB chunks each in the raft-3-chunks-1mib cluster
SEED = 1313
SANDCTL = str(Path(sys.executable).parent / "sandctl")


def write_tree(root, seed: int) -> dict[str, bytes]:
    """1,000 small files (0..2000 bytes, some empty) in nested directories, 3 large ones."""
    randomness = random.Random(seed)
    files = {}
    for number in range(SMALL_FILES):
        files[f"d{number % 10}/e{number % 7}/f{number}.txt"] = randomness.randbytes(randomness.randint(0, 2000))
    for number in range(LARGE_FILES):
        files[f"large{number}.bin"] = randomness.randbytes(LARGE_FILE_BYTES)
    for relative, data in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return files


@pytest.mark.parametrize("cluster", ["raft-3-chunks-1mib"], indirect=True)
def test_a_tree_of_1000_small_and_3_large_files_round_trips(cluster, tmp_path):
    print(f"seed {SEED}")
    files = write_tree(tmp_path / "tree", SEED)
    total_bytes = sum(len(data) for data in files.values())

    put = cluster.sandctl("put", "-r", str(tmp_path / "tree"), "/", timeout_seconds=300)
    assert put.returncode == 0, put.stderr.decode()
    summary = put.stdout.decode().splitlines()
    assert len(summary) == 1 and summary[0].startswith(f"put {SMALL_FILES + LARGE_FILES} files (")
    assert f" and 81 new directories from {tmp_path / 'tree'} to /tree in " in summary[0]
    info = json.loads(cluster.sandctl("stat", "--json", "/tree/large0.bin").stdout)
    assert info["size"] == LARGE_FILE_BYTES and info["chunks"] == LARGE_FILE_BYTES >> 20

    out = tmp_path / "out"
    out.mkdir()
    got = cluster.sandctl("get", "-r", "--json", "/tree", str(out), timeout_seconds=300)
    assert got.returncode == 0, got.stderr.decode()
    assert json.loads(got.stdout)["files"] == SMALL_FILES + LARGE_FILES
    assert json.loads(got.stdout)["bytes"] == total_bytes
    copied = {path.relative_to(out / "tree").as_posix(): path.read_bytes()
              for path in (out / "tree").rglob("*") if path.is_file()}
    assert copied.keys() == files.keys()
    assert all(copied[name] == data for name, data in files.items())

    again = cluster.sandctl("put", "-r", str(tmp_path / "tree"), "/")
    assert again.returncode == 1
    assert again.stderr.decode().splitlines() == [
        f"Error: {SMALL_FILES + LARGE_FILES} of {SMALL_FILES + LARGE_FILES} files already exist, e.g. "
        "/tree/large0.bin (use -f to overwrite them, -n to skip them); nothing was transferred"]


@pytest.mark.parametrize("cluster", ["raft-3-chunks-1mib"], indirect=True)
def test_cp_shares_chunks_and_a_closed_stdout_ends_quietly(cluster, tmp_path):
    big = tmp_path / "big.bin"
    big.write_bytes(random.Random(SEED).randbytes(3 << 20))
    assert cluster.sandctl("put", str(big), "/big.bin").returncode == 0
    copied = cluster.sandctl("cp", "--json", "/big.bin", "/copy.bin")
    assert copied.returncode == 0, copied.stderr.decode()
    source = json.loads(cluster.sandctl("stat", "--chunks", "--json", "/big.bin").stdout)
    copy = json.loads(cluster.sandctl("stat", "--chunks", "--json", "/copy.bin").stdout)
    assert [chunk[0] for chunk in copy["chunks"]] == [chunk[0] for chunk in source["chunks"]]
    assert cluster.sandctl("get", "/copy.bin", "-").stdout == big.read_bytes()
    usage = json.loads(cluster.sandctl("du", "-s", "--json", "/").stdout)
    assert usage["logical_bytes"] == 2 * (3 << 20) and usage["stored_chunk_bytes"] == 3 << 20

    for verb in (["cat", "/big.bin"], ["get", "/big.bin", "-"]):
        # `sandctl cat /big | head -c 10`: the reader goes away after a few bytes.
        process = subprocess.Popen([SANDCTL, *verb], env=cluster.env(), stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE)
        assert len(process.stdout.read(10)) == 10
        process.stdout.close()
        stderr = process.stderr.read()
        assert process.wait(timeout=60) == 141, stderr
        assert stderr == b""

    head = cluster.sandctl("head", "-c", "5", "/big.bin")
    assert (head.returncode, head.stdout) == (0, big.read_bytes()[:5])
    tail = cluster.sandctl("tail", "-c", "5", "/big.bin")
    assert (tail.returncode, tail.stdout) == (0, big.read_bytes()[-5:])


def test_real_node_errors_name_the_command_line_flags(cluster, tmp_path):
    local = tmp_path / "f.txt"
    local.write_bytes(b"one")
    cases = [
        (("mkdir", "/a/b"), 5, "Error: parent directory /a does not exist (create it with `sandctl mkdir -p`)"),
        (("put", str(local), "/a/b/f.txt"), 5,
         "Error: parent directory /a/b does not exist (create it with `sandctl mkdir -p`)"),
        (("mkdir", "-p", "/a/b"), 0, None),
        (("put", str(local), "/a/b/f.txt"), 0, None),
        (("rm", "/a"), 1, "Error: /a is a directory that is not empty (use `sandctl rm -r`)"),
        (("put", str(local), "/a/b"), 1, "Error: /a/b/f.txt already exists (use -f to overwrite it, -n to skip it)"),
        (("put", str(local), "/a/b/g.txt"), 0, None),
        (("mv", "/a/b/f.txt", "/a/b/g.txt"), 1,
         "Error: /a/b/g.txt already exists (use -f to overwrite it, -n to skip it)"),
        (("mv", "-n", "/a/b/f.txt", "/a/b/g.txt"), 0, None),
        (("mv", "-f", "/a/b/f.txt", "/a/b/g.txt"), 0, None),
        (("cp", "/a/b/g.txt", "/a/b/h.txt"), 0, None),
        (("cp", "/a/b/g.txt", "/a/b/h.txt"), 1,
         "Error: /a/b/h.txt already exists (use -f to overwrite it, -n to skip it)"),
        (("cat", "--json", "/a/b/g.txt"), 2,
         "Error: cat prints the file's bytes, so --json does not apply (use `sandctl stat --json PATH` for its "
         "metadata)"),
        (("rm", "-r", "/a"), 0, None),
    ]
    for args, status, line in cases:
        result = cluster.sandctl(*args)
        assert result.returncode == status, (args, result.stderr.decode())
        assert result.stderr.decode().splitlines() == ([line] if line else []), args
