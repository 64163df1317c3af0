"""What apply writes once per batch (applied index, clock, next inode, touched directories),
written when the batch ends: the batch must end in the state of its entries applied one by
one, commit or roll back with them, and read back the same after the store is opened again."""

from __future__ import annotations

import random

import pytest

from node.metadata.commands import decode_command, encode_command
from node.metadata.state_machine import Namespace
from node.metadata.tables import KEY_APPLIED_INDEX, KEY_CLOCK_NS, KEY_NEXT_INODE, unpack_uint64
from node.storage.lmdb_store import NodeStore
from tests.metadata.test_namespace import MAP_SIZE_BYTES, Node, random_commands


class Crash(Exception):
    """Raised inside a write batch: the batch is aborted, as if the node had died before it
    committed."""


def scripted_commands() -> list[bytes]:
    """Many writes into the same directories, and everything that reads a touched directory
    back within the batch: mkdir of an existing directory (its stat shows the mtime), a write
    into it by into_directory, mv and rm (which read records from the table), and writes
    after them."""
    steps = [
        ("mkdir", {"path": "/d"}),
        *[("write_file", {"path": f"/d/f{number}", "data": b"x" * number, "size": number}) for number in range(1, 6)],
        ("mkdir", {"path": "/d", "parents": True}),  # exists: the touched /d's stat
        ("write_file", {"path": "/d", "into_directory": "g", "data": b"g", "size": 1}),
        ("mkdir", {"path": "/d/e/deep", "parents": True}),
        ("write_file", {"path": "/d/e/h", "data": b"h", "size": 1}),
        ("mkdir", {"path": "/d/e", "parents": True}),
        ("mv", {"src": "/d/f1", "dst": "/d/f9"}),
        ("write_file", {"path": "/d/f10", "data": b"y", "size": 1}),
        ("rm", {"path": "/d/f2"}),
        ("write_file", {"path": "/d/e/deep/i", "data": b"i", "size": 1}),
        ("mv", {"src": "/d/e", "dst": "/top"}),
        ("write_file", {"path": "/top/j", "data": b"j", "size": 1}),
        ("mkdir", {"path": "/top", "parents": True}),
        ("write_file", {"path": "/d/f3", "data": b"", "size": 0, "overwrite": False}),  # EXISTS
        ("mkdir", {"path": "/nowhere/x"}),  # NOT_FOUND: no parent
    ]
    return [encode_command(op, {**args, "client": f"c{seq % 3}", "seq": seq}, now_ns=seq * 1000)
            for seq, (op, args) in enumerate(steps, start=1)]


def apply_batch(node: Node, commands: list[bytes], *, durable: bool = False, crash: bool = False) -> list[dict]:
    """Apply commands in one write batch, as a follower's driver does (durable=False: the
    store defers its commit); crash: abort the batch after applying them all."""
    replies = []
    first_index = node.index
    try:
        with node.store.write_batch(durable=durable) as batch:
            for number, data in enumerate(commands, start=first_index + 1):
                replies.append(node.namespace.apply(batch.txn, number, decode_command(data)))
            batch.set_applied_index(first_index + len(commands))
            if crash:
                raise Crash()
    except Crash:
        return replies
    node.index = first_index + len(commands)
    return replies


def one_by_one(directory, commands: list[bytes]) -> tuple[Node, list[dict]]:
    single = Node(directory)
    return single, [single.apply(command) for command in commands]


def meta_values(node: Node) -> dict[bytes, int]:
    with node.store.read_transaction() as txn:
        return {key: unpack_uint64(txn.get(key, db=node.namespace._tables.meta))
                for key in (KEY_APPLIED_INDEX, KEY_CLOCK_NS, KEY_NEXT_INODE)}


def test_a_batch_ends_in_the_state_and_results_of_its_entries_applied_one_by_one(tmp_path):
    commands = scripted_commands()
    single, expected = one_by_one(tmp_path / "single", commands)
    batched = Node(tmp_path / "batched", batched=True)
    assert apply_batch(batched, commands) == expected
    assert [reply["ok"] for reply in expected].count(False) == 2  # the refusals are in the batch too
    # Read on the writing thread: the deferred batch commits first.
    assert batched.query("digest") == single.query("digest")
    assert meta_values(batched) == meta_values(single)
    assert batched.query("stat", "/d") == single.query("stat", "/d")
    assert batched.query("stat", "/d")["mtime_ns"] == 16 * 1000  # its last change: /d/e moved out
    assert batched.tree() == single.tree()


def test_a_crashed_batch_rolls_back_whole_and_its_replay_gives_the_same_state_and_results(tmp_path):
    commands = scripted_commands()
    single, expected = one_by_one(tmp_path / "single", commands)
    prefix, rest = commands[:4], commands[4:]
    batched = Node(tmp_path / "batched", batched=True)
    apply_batch(batched, prefix, durable=True)
    before = (batched.query("digest"), meta_values(batched))
    # Applied, then lost before its commit: nothing of it stays, the applied index included.
    assert apply_batch(batched, rest, crash=True) == expected[4:]
    assert (batched.query("digest"), meta_values(batched)) == before
    assert meta_values(batched)[KEY_APPLIED_INDEX] == len(prefix)
    # The log gives the same entries again: the same results and the same state.
    assert apply_batch(batched, rest) == expected[4:]
    assert batched.query("digest") == single.query("digest")


def test_a_store_opened_again_reads_what_the_batches_wrote_at_their_end(tmp_path):
    seed = random.randrange(1 << 32)
    print(f"seed={seed}")
    rng = random.Random(seed)
    commands = scripted_commands() + random_commands(rng, 300)
    single, expected = one_by_one(tmp_path / "single", commands)
    batched = Node(tmp_path / "batched", batched=True)
    replies: list[dict] = []
    position = 0
    while position < len(commands):
        count = rng.randint(1, 40)
        replies.extend(apply_batch(batched, commands[position:position + count], durable=rng.random() < 0.3))
        position += count
    assert replies == expected
    batched.store.close()  # commits what is deferred, as a node that stops
    reopened = NodeStore(tmp_path / "batched", MAP_SIZE_BYTES)
    try:
        namespace = Namespace(reopened.env, batches=reopened)
        with reopened.read_transaction() as txn, single.store.read_transaction() as single_txn:
            assert namespace.digest(txn) == single.namespace.digest(single_txn)
            assert namespace.ls(txn, "/", recursive=True) == single.namespace.ls(single_txn, "/", recursive=True)
    finally:
        reopened.close()


def test_every_batch_end_writes_what_its_entries_left_even_when_nothing_else_ends_it(tmp_path):
    # Batches of one entry each into one directory, then a batch that applies nothing: the
    # last entry's applied index, clock, inode number and directory mtime are stored.
    commands = scripted_commands()[:7]
    single, expected = one_by_one(tmp_path / "single", commands)
    batched = Node(tmp_path / "batched", batched=True)
    for number, data in enumerate(commands):
        assert apply_batch(batched, [data]) == [expected[number]]
    with batched.store.write_batch(durable=True):
        pass
    assert meta_values(batched) == meta_values(single)
    assert meta_values(batched)[KEY_APPLIED_INDEX] == len(commands)
    assert batched.query("digest") == single.query("digest")


@pytest.mark.parametrize("query", ["digest", "snapshot_data"])
def test_a_digest_or_image_taken_inside_the_batch_includes_what_is_left_for_its_end(tmp_path, query):
    commands = scripted_commands()[:6]
    single, _ = one_by_one(tmp_path / "single", commands)
    batched = Node(tmp_path / "batched", batched=True)
    with batched.store.write_batch() as batch:
        for number, data in enumerate(commands, start=1):
            batched.namespace.apply(batch.txn, number, decode_command(data))
        inside = getattr(batched.namespace, query)(batch.txn)
    assert inside == single.query(query)


def test_after_a_crashed_batch_the_next_batch_does_not_see_the_directories_it_created(tmp_path):
    # What a batch learned is kept for the next batch only once that one shows it committed:
    # here the crashed batch created /d/e, and a write into /d/e afterwards finds no parent.
    mkdir_d, mkdir_e, write_in_e, write_again_in_e = (
        encode_command(op, {**args, "client": "c", "seq": seq}, now_ns=seq * 1000) for seq, (op, args) in enumerate([
            ("mkdir", {"path": "/d"}),
            ("mkdir", {"path": "/d/e"}),
            ("write_file", {"path": "/d/e/x", "data": b"x", "size": 1}),
            ("write_file", {"path": "/d/e/y", "data": b"y", "size": 1}),
        ], start=1))
    batched = Node(tmp_path / "batched", batched=True)
    apply_batch(batched, [mkdir_d], durable=True)
    for ended in (False, True):  # lost before its end, and after it (its commit failed)
        with pytest.raises(Crash), batched.store.write_batch() as batch:
            for number, data in enumerate([mkdir_e, write_in_e], start=2):
                assert batched.namespace.apply(batch.txn, number, decode_command(data))["ok"]
            if ended:
                batched.namespace.finish(batch.txn)
            raise Crash()
    [reply] = apply_batch(batched, [write_again_in_e])
    assert reply["error"]["code"] == "NOT_FOUND"
    single, _ = one_by_one(tmp_path / "single", [mkdir_d, write_again_in_e])
    assert batched.query("digest") == single.query("digest")
    assert meta_values(batched)[KEY_NEXT_INODE] == meta_values(single)[KEY_NEXT_INODE]


def test_batches_of_one_write_each_end_in_the_state_of_the_writes_applied_in_one_batch(tmp_path):
    # The leader at one write outstanding: every write in a batch of its own, each after the
    # last committed (what the one before learned is used again).
    commands = scripted_commands()
    whole = Node(tmp_path / "whole", batched=True)
    expected = apply_batch(whole, commands)
    batched = Node(tmp_path / "batched", batched=True)
    assert [apply_batch(batched, [data], durable=number % 2 == 0)[0] for number, data in enumerate(commands)] == expected
    assert batched.query("digest") == whole.query("digest")
    assert meta_values(batched) == meta_values(whole)
    assert batched.tree() == whole.tree()
