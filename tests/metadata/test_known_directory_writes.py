"""A new file in a directory the write batch already knows is created by one insert, without
resolving its path first (Namespace._created_in_known_directory); any other write_file takes
the resolving path. Whatever the batches, the replies and the tables must be those of one write
per batch (where no directory is known yet, so every write resolves)."""

from __future__ import annotations

import random

import pytest

from node.metadata.commands import encode_command
from tests.metadata.test_namespace import Node, apply_in_batches, chunk


def _write(path: str, seq: int, **args) -> bytes:
    if "chunks" in args:
        args["size"] = 10 * len(args["chunks"])
    else:
        args.setdefault("data", b"x")
        args["size"] = len(args["data"])
    return encode_command("write_file", {"path": path, **args, "client": "c1", "seq": seq}, now_ns=seq * 1000)


def _mkdir(path: str, seq: int, **args) -> bytes:
    return encode_command("mkdir", {"path": path, **args, "client": "c1", "seq": seq}, now_ns=seq * 1000)


def _same_as_one_per_batch(tmp_path, commands: list[bytes], rng: random.Random | None = None) -> list[dict]:
    batched, single = Node(tmp_path / "batched", batched=True), Node(tmp_path / "single")
    replies = apply_in_batches(batched, commands, rng)
    assert replies == [single.apply(command) for command in commands]
    assert batched.query("digest") == single.query("digest")
    return replies


def test_writes_into_a_known_directory_that_the_insert_cannot_take(tmp_path):
    commands = [
        _mkdir("/d/sub", 1, parents=True),
        _write("/d/f", 2),  # resolves /d/f: /d is known from here on
        _write("/d/g", 3),  # new: one insert
        _write("/d/f", 4, data=b"new"),  # exists: overwritten in place
        _write("/d/f", 5, data=b"refused", overwrite=False),  # exists: EXISTS, nothing written
        _write("/d/sub", 6),  # a directory: IS_A_DIRECTORY
        _write("/d/sub", 7, into_directory="h"),  # a directory: the file goes inside it
        _write("/d/sub", 8, into_directory="h", overwrite=False),  # /d/sub/h exists now: EXISTS
        _write("/d/new", 9, into_directory="i"),  # not a directory: /d/new itself
        _write("/", 10),  # the root has no name
        _write("/", 11, into_directory="r"),
        _write("/top", 12, chunks=[chunk("p", 10), chunk("q", 10)]),  # the root is known: chunks counted
        _write("/top2", 13, chunks=[chunk("p", 10)], overwrite=False),
        _write("/d/g/x", 14),  # a file where a directory is needed: NOT_A_DIRECTORY
        _write("/d/missing/x", 15),  # no parent: NOT_FOUND
        _write("/d/missing/x", 16, parents=True),
    ]
    replies = _same_as_one_per_batch(tmp_path, commands)
    codes = [reply["result"]["path"] if reply["ok"] else reply["error"]["code"] for reply in replies]
    assert codes == ["/d/sub", "/d/f", "/d/g", "/d/f", "EXISTS", "IS_A_DIRECTORY", "/d/sub/h", "EXISTS", "/d/new",
                     "IS_A_DIRECTORY", "/r", "/top", "/top2", "NOT_A_DIRECTORY", "NOT_FOUND", "/d/missing/x"]


# Fixed seeds: each is known to reach every error the assertion below names (a drawn seed
# sometimes reached no NOT_FOUND, and the test failed without a fault).
@pytest.mark.parametrize("seed", [1, 3, 4, 5, 6, 7])
def test_random_writes_give_the_state_of_one_write_per_batch(tmp_path, seed):
    rng = random.Random(seed)
    names = ["/", "/a", "/a/b", "/a/b/c", "/e", "/a/f", "/a/g"]
    commands = []
    for seq in range(1, 501):
        path = rng.choice(names)
        kind = rng.random()
        if kind < 0.15:
            commands.append(_mkdir(path, seq, parents=rng.random() < 0.5))
        elif kind < 0.18:  # forgets the known directories
            commands.append(encode_command("rm", {"path": path, "recursive": True, "client": "c1", "seq": seq},
                                           now_ns=seq * 1000))
        elif kind < 0.2:
            commands.append(encode_command("mv", {"src": path, "dst": rng.choice(names), "client": "c1", "seq": seq},
                                           now_ns=seq * 1000))
        else:
            args = {"parents": rng.random() < 0.3, "overwrite": rng.random() < 0.7}
            if rng.random() < 0.3:
                args["into_directory"] = rng.choice(["b", "f", "z"])
            if rng.random() < 0.3:
                args["chunks"] = [chunk(rng.choice("pqr"), 10) for _ in range(rng.randint(1, 2))]
            commands.append(_write(path, seq, **args))
    replies = _same_as_one_per_batch(tmp_path, commands, rng)
    assert sum(reply["ok"] for reply in replies) > 100
    assert {reply["error"]["code"] for reply in replies if not reply["ok"]} >= {"EXISTS", "IS_A_DIRECTORY", "NOT_FOUND"}
