"""Namespace: the replicated file-system state machine, applied in NodeStore write batches."""

from __future__ import annotations

import random

import pytest

from node.errors import BadRequest, IsADirectory, NotADirectory, NotFound, SandStoreError
from node.metadata.commands import decode_command, encode_command
from node.metadata.state_machine import Namespace
from node.storage.lmdb_store import NodeStore

MAP_SIZE_BYTES = 64 << 20
SECOND_NS = 10**9


def chunk(name: str, size: int = 100) -> list:
    return [name.encode().ljust(32, b"."), size, ["n1", "n2"]]


class Node:
    """One store and namespace; write() applies a command as the driver would.
    batched: the namespace leaves its once-per-batch writes to the end of each write batch
    (as a node's does), else it writes them after every entry."""

    def __init__(self, directory, session_ttl_ns: int = 3600 * SECOND_NS, *, batched: bool = False) -> None:
        self.store = NodeStore(directory, MAP_SIZE_BYTES)
        self.namespace = Namespace(self.store.env, session_ttl_ns=session_ttl_ns,
                                   batches=self.store if batched else None)
        self.index = 0
        self.seq = 0

    def apply(self, command: bytes) -> dict:
        """Decode once and apply, as the driver does (a malformed command is applied as its error)."""
        self.index += 1
        try:
            decoded = decode_command(command)
        except SandStoreError as error:
            decoded = error
        with self.store.write_batch() as batch:
            return self.namespace.apply(batch.txn, self.index, decoded)

    def write(self, op: str, client: str = "client-a", seq: int | None = None, now_ns: int = 1000, **args) -> dict:
        if seq is None:
            self.seq += 1
            seq = self.seq
        return self.apply(encode_command(op, {**args, "client": client, "seq": seq}, now_ns))

    def ok(self, op: str, **args) -> dict:
        reply = self.write(op, **args)
        assert reply["ok"], reply
        return reply["result"]

    def error(self, op: str, **args) -> str:
        reply = self.write(op, **args)
        assert not reply["ok"], reply
        assert reply["error"]["message"]
        return reply["error"]["code"]

    def query(self, name: str, *args, **kwargs):
        with self.store.read_transaction() as txn:
            return getattr(self.namespace, name)(txn, *args, **kwargs)

    def tree(self) -> list[tuple[str, str, int]]:
        return [(entry["path"], entry["type"], entry["size"]) for entry in self.query("ls", "/", recursive=True)]


@pytest.fixture
def node(tmp_path) -> Node:
    return Node(tmp_path)


def test_fresh_namespace_has_only_the_root(node):
    assert node.query("stat", "/") == {"path": "/", "type": "dir", "size": 0, "mode": 0o755, "mtime_ns": 0, "inline": False}
    assert node.query("ls", "/") == []
    assert node.query("entry_count") == 0
    assert node.query("referenced_chunk_ids") == set()


def test_mkdir(node):
    made = node.ok("mkdir", path="/a", mode=0o700, now_ns=5)
    assert made == {"path": "/a", "type": "dir", "size": 0, "mode": 0o700, "mtime_ns": 5, "inline": False}
    assert node.query("stat", "/a") == made
    assert node.query("stat", "/")["mtime_ns"] == 5
    assert node.error("mkdir", path="/a") == "EXISTS"
    assert node.error("mkdir", path="/") == "EXISTS"
    assert node.error("mkdir", path="/x/y") == "NOT_FOUND"
    node.ok("write_file", path="/f", data=b"", size=0)
    assert node.error("mkdir", path="/f/y") == "NOT_A_DIRECTORY"
    assert node.error("mkdir", path="/f/y/z", parents=True) == "NOT_A_DIRECTORY"
    assert node.error("mkdir", path="/f", parents=True) == "EXISTS"


def test_mkdir_parents(node):
    node.ok("mkdir", path="/a/b/c", parents=True)
    assert node.tree() == [("/a", "dir", 0), ("/a/b", "dir", 0), ("/a/b/c", "dir", 0)]
    assert node.ok("mkdir", path="/a/b", parents=True)["path"] == "/a/b"
    assert node.ok("mkdir", path="/", parents=True)["path"] == "/"
    assert node.query("entry_count") == 3


def test_write_read_and_overwrite(node):
    node.ok("mkdir", path="/d")
    written = node.ok("write_file", path="/d/f", data=b"hello", size=5, mode=0o600, now_ns=7)
    assert written == {"path": "/d/f", "type": "file", "size": 5, "mode": 0o600, "mtime_ns": 7, "inline": True}
    assert node.query("read", "/d/f") == {**written, "data": b"hello"}
    node.ok("write_file", path="/d/f", chunks=[chunk("a"), chunk("b", 50)], size=150, now_ns=9)
    read = node.query("read", "/d/f")
    assert (read["size"], read["inline"], read["mtime_ns"], read["chunks"]) == (150, False, 9, [chunk("a"), chunk("b", 50)])
    assert "data" not in read
    node.ok("write_file", path="/d/f", data=b"again", size=5)
    assert node.query("read", "/d/f")["data"] == b"again"
    assert node.query("referenced_chunk_ids") == set()
    assert node.query("entry_count") == 2


def test_write_errors(node):
    node.ok("mkdir", path="/d")
    assert node.error("write_file", path="/d", data=b"", size=0) == "IS_A_DIRECTORY"
    assert node.error("write_file", path="/", data=b"", size=0) == "IS_A_DIRECTORY"
    assert node.error("write_file", path="/missing/f", data=b"", size=0) == "NOT_FOUND"
    node.ok("write_file", path="/file", data=b"", size=0)
    assert node.error("write_file", path="/file/f", data=b"", size=0) == "NOT_A_DIRECTORY"
    node.ok("write_file", path="/p/q/f", data=b"x", size=1, parents=True)
    assert node.tree() == [("/d", "dir", 0), ("/file", "file", 0), ("/p", "dir", 0), ("/p/q", "dir", 0), ("/p/q/f", "file", 1)]


def test_rm(node):
    node.ok("write_file", path="/a/b/f", data=b"x", size=1, parents=True)
    node.ok("mkdir", path="/empty")
    assert node.error("rm", path="/missing") == "NOT_FOUND"
    assert node.error("rm", path="/a") == "NOT_EMPTY"
    assert node.error("rm", path="/") == "INVALID_PATH"
    assert node.error("rm", path="/", recursive=True) == "INVALID_PATH"
    assert node.ok("rm", path="/empty") == {"path": "/empty", "files": 0, "dirs": 1}
    assert node.ok("rm", path="/a/b/f") == {"path": "/a/b/f", "files": 1, "dirs": 0}
    node.ok("write_file", path="/a/b/g", data=b"x", size=1)
    node.ok("write_file", path="/a/h", data=b"x", size=1)
    assert node.ok("rm", path="/a", recursive=True) == {"path": "/a", "files": 2, "dirs": 2}
    assert node.tree() == []
    assert node.query("entry_count") == 0
    with pytest.raises(NotFound):
        node.query("stat", "/a/b")


def test_mv_renames_and_moves_into_directories(node):
    node.ok("write_file", path="/f", data=b"1", size=1)
    node.ok("mkdir", path="/d")
    assert node.ok("mv", src="/f", dst="/g")["path"] == "/g"
    assert node.ok("mv", src="/g", dst="/d")["path"] == "/d/g"
    assert node.ok("mv", src="/d/g", dst="/d/g")["path"] == "/d/g"  # onto itself: nothing to do
    assert node.ok("mv", src="/d/g", dst="/d")["path"] == "/d/g"
    assert node.tree() == [("/d", "dir", 0), ("/d/g", "file", 1)]


def test_mv_file_over_file_replaces_it(node):
    node.ok("write_file", path="/old", chunks=[chunk("old")], size=100)
    node.ok("write_file", path="/new", chunks=[chunk("new")], size=100)
    node.ok("mv", src="/new", dst="/old")
    assert node.tree() == [("/old", "file", 100)]
    assert node.query("read", "/old")["chunks"] == [chunk("new")]
    assert node.query("referenced_chunk_ids") == {chunk("new")[0]}


def test_mv_errors(node):
    node.ok("mkdir", path="/a/b/c", parents=True)
    node.ok("write_file", path="/f", data=b"", size=0)
    node.ok("mkdir", path="/x/b", parents=True)
    assert node.error("mv", src="/missing", dst="/z") == "NOT_FOUND"
    assert node.error("mv", src="/f", dst="/missing/z") == "NOT_FOUND"
    assert node.error("mv", src="/a", dst="/f") == "NOT_A_DIRECTORY"
    assert node.error("mv", src="/a", dst="/a") == "INVALID_PATH"
    assert node.error("mv", src="/a", dst="/a/b/c") == "INVALID_PATH"
    assert node.error("mv", src="/a", dst="/a/b/c/new") == "INVALID_PATH"
    assert node.error("mv", src="/", dst="/z") == "INVALID_PATH"
    assert node.error("mv", src="/a/b", dst="/x") == "EXISTS"  # /x/b is a directory already
    node.ok("write_file", path="/x/f", data=b"", size=0)
    node.ok("mkdir", path="/y/f", parents=True)
    assert node.error("mv", src="/x/f", dst="/y") == "IS_A_DIRECTORY"
    assert node.error("mv", src="/f", dst="/f/z") == "NOT_A_DIRECTORY"


def test_mv_moves_a_whole_tree(node):
    node.ok("write_file", path="/src/a/one", data=b"1", size=1, parents=True)
    node.ok("write_file", path="/src/a/deep/two", data=b"22", size=2, parents=True)
    node.ok("mkdir", path="/dst")
    before = node.query("entry_count")
    assert node.ok("mv", src="/src/a", dst="/dst", now_ns=42)["path"] == "/dst/a"
    assert node.tree() == [
        ("/dst", "dir", 0), ("/dst/a", "dir", 0), ("/dst/a/deep", "dir", 0), ("/dst/a/deep/two", "file", 2),
        ("/dst/a/one", "file", 1), ("/src", "dir", 0),
    ]
    assert node.query("read", "/dst/a/deep/two")["data"] == b"22"
    assert node.query("stat", "/src")["mtime_ns"] == 42
    assert node.query("stat", "/dst")["mtime_ns"] == 42
    assert node.query("entry_count") == before
    with pytest.raises(NotFound):
        node.query("stat", "/src/a/one")


def test_queries(node):
    node.ok("write_file", path="/d/b", data=b"bb", size=2, parents=True)
    node.ok("write_file", path="/d/a", chunks=[chunk("x"), chunk("x"), chunk("y", 10)], size=210)
    node.ok("write_file", path="/d/sub/c", chunks=[chunk("x")], size=100, parents=True)
    assert [entry["path"] for entry in node.query("ls", "/d")] == ["/d/a", "/d/b", "/d/sub"]
    assert [entry["path"] for entry in node.query("ls", "/", recursive=True)] == ["/d", "/d/a", "/d/b", "/d/sub", "/d/sub/c"]
    assert node.query("ls", "//d/sub/") == [node.query("stat", "/d/sub/c")]
    assert node.query("du", "/d") == {"files": 3, "dirs": 2, "logical_bytes": 312, "stored_chunk_bytes": 110,
                                      "replicated_chunk_bytes": 220}
    assert node.query("du", "/d/b") == {"files": 1, "dirs": 0, "logical_bytes": 2, "stored_chunk_bytes": 0,
                                        "replicated_chunk_bytes": 0}
    # The same chunk stored by another put on another node is one more copy on disk.
    node.ok("write_file", path="/e", chunks=[[chunk("x")[0], 100, ["n3"]]], size=100)
    assert node.query("du", "/")["replicated_chunk_bytes"] == 220 + 100
    with pytest.raises(NotADirectory):
        node.query("ls", "/d/a")
    with pytest.raises(IsADirectory):
        node.query("read", "/d")
    with pytest.raises(NotFound):
        node.query("du", "/nothing")
    with pytest.raises(NotADirectory):
        node.query("stat", "/d/b/c")


def test_chunk_reference_counts_follow_every_change(node):
    shared, own = chunk("shared"), chunk("own")
    node.ok("write_file", path="/one", chunks=[shared, shared], size=200)
    node.ok("write_file", path="/two", chunks=[shared, own], size=200)
    assert node.query("referenced_chunk_ids") == {shared[0], own[0]}
    node.ok("rm", path="/one")
    assert node.query("referenced_chunk_ids") == {shared[0], own[0]}
    node.ok("write_file", path="/two", chunks=[own], size=100)
    assert node.query("referenced_chunk_ids") == {own[0]}
    node.ok("write_file", path="/dir/three", chunks=[shared], size=100, parents=True)
    node.ok("mv", src="/dir/three", dst="/two")
    assert node.query("referenced_chunk_ids") == {shared[0]}
    node.ok("rm", path="/dir", recursive=True)
    node.ok("rm", path="/two")
    assert node.query("referenced_chunk_ids") == set()


def test_a_retried_write_is_applied_once(node):
    first = node.write("mkdir", seq=1, path="/a")
    assert first["ok"]
    node.ok("rm", seq=2, client="client-b", path="/a")
    assert node.write("mkdir", seq=1, path="/a") == first  # answered from the session
    assert node.tree() == []
    assert node.query("session_result", "client-a", 1) == first
    assert node.query("session_result", "client-a", 2) is None
    refused = node.write("mkdir", seq=2, path="/a/b")
    assert refused["error"]["code"] == "NOT_FOUND"
    assert node.write("mkdir", seq=2, path="/a/b") == refused  # refusals are remembered too
    stale = node.write("mkdir", seq=1, path="/a")
    assert stale["error"]["code"] == "STALE"
    assert "newer request" in stale["error"]["message"]
    assert node.tree() == []


def test_sessions_expire_by_the_log_clock(tmp_path):
    node = Node(tmp_path, session_ttl_ns=10 * SECOND_NS)
    assert node.write("mkdir", client="idle", seq=1, path="/a", now_ns=0)["ok"]
    node.ok("mkdir", client="busy", seq=1, path="/b", now_ns=10 * SECOND_NS)
    assert node.query("session_result", "idle", 1) is not None  # idle exactly the TTL: kept
    node.ok("mkdir", client="busy", seq=2, path="/c", now_ns=10 * SECOND_NS + 1)
    assert node.query("session_result", "idle", 1) is None
    assert node.query("session_result", "busy", 2) is not None
    # A proposer with a slow clock does not take the log's clock back: "late" is active at
    # the log's time (10 s + 1), not at its own stamp of 1 ns.
    node.ok("mkdir", client="late", seq=1, path="/d", now_ns=1)
    node.ok("mkdir", client="busy", seq=3, path="/e", now_ns=10 * SECOND_NS + 2)
    assert node.query("session_result", "late", 1) is not None
    # The idle client's session is gone: its old seq is applied again, as a new request.
    assert node.write("mkdir", client="idle", seq=1, path="/a", now_ns=20 * SECOND_NS)["error"]["code"] == "EXISTS"


def test_malformed_commands_are_error_results(node):
    node.ok("mkdir", path="/a")
    before = node.tree()
    reply = node.apply(b"\xc1 not msgpack")
    assert reply["ok"] is False
    assert reply["error"]["code"] == "BAD_REQUEST"
    assert node.tree() == before


def test_applying_an_index_twice_is_a_bug(node):
    node.ok("mkdir", path="/a")
    node.index -= 1
    with pytest.raises(AssertionError):
        node.write("mkdir", path="/b")


def test_snapshot_restore_round_trip(tmp_path):
    source = Node(tmp_path / "source")
    source.ok("write_file", path="/d/f", chunks=[chunk("x")], size=100, parents=True)
    source.ok("write_file", path="/d/g", data=b"inline", size=6)
    source.ok("mv", src="/d", dst="/e")
    with source.store.read_transaction() as txn:
        image = source.namespace.snapshot_data(txn)
        digest = source.namespace.digest(txn)
    target = Node(tmp_path / "target")
    target.ok("mkdir", path="/other/stuff", parents=True)
    target.ok("write_file", path="/z", chunks=[chunk("z")], size=100)
    with target.store.write_batch() as batch:
        target.namespace.restore(batch.txn, image)
    assert target.query("digest") == digest
    assert target.tree() == source.tree()
    assert target.query("read", "/e/g")["data"] == b"inline"
    assert target.query("referenced_chunk_ids") == {chunk("x")[0]}
    assert target.query("session_result", "client-a", 3) == source.query("session_result", "client-a", 3)
    # Both continue identically from the snapshot.
    target.index, target.seq = source.index, source.seq
    assert target.ok("mkdir", path="/n") == source.ok("mkdir", path="/n")
    assert target.query("digest") == source.query("digest")


def test_restore_refuses_a_garbage_image_and_changes_nothing(node):
    node.ok("mkdir", path="/a")
    digest = node.query("digest")
    for garbage in (b"\xc1", b"\x92\x01\x90", node.query("snapshot_data")[:-3]):
        with pytest.raises(BadRequest):
            with node.store.write_batch() as batch:
                node.namespace.restore(batch.txn, garbage)
    assert node.query("digest") == digest


def random_commands(rng: random.Random, count: int) -> list[bytes]:
    """A random workload over a few names, so that every error path gets hit."""
    names = ["/a", "/b", "/a/c", "/b/c", "/a/c/d", "/e"]
    commands = []
    for seq in range(1, count + 1):
        op = rng.choice(["mkdir", "write_file", "write_file", "rm", "mv"])
        args: dict = {"client": rng.choice(["c1", "c2"]), "seq": seq}
        if op == "mv":
            args.update(src=rng.choice(names), dst=rng.choice(names))
        else:
            args["path"] = rng.choice(names)
        if op == "mkdir":
            args["parents"] = rng.random() < 0.5
        if op == "write_file":
            chunks = [chunk(rng.choice("pqr"), 10) for _ in range(rng.randrange(3))]
            args.update(chunks=chunks, size=10 * len(chunks), parents=rng.random() < 0.5)
        if op == "rm":
            args["recursive"] = rng.random() < 0.5
        commands.append(encode_command(op, args, now_ns=seq * 1000))
    return commands


def test_same_commands_give_the_same_state(tmp_path):
    seed = random.randrange(1 << 32)
    print(f"seed={seed}")
    commands = random_commands(random.Random(seed), 300)
    first, second = Node(tmp_path / "first"), Node(tmp_path / "second")
    replies = [first.apply(command) for command in commands]
    assert [second.apply(command) for command in commands] == replies
    assert first.query("digest") == second.query("digest")
    assert any(reply["ok"] for reply in replies)
    assert any(not reply["ok"] for reply in replies)
    # Chunk counts agree with a recount over the files that remain.
    remaining = {tuple(c)[0] for entry in first.query("ls", "/", recursive=True) for c in entry.get("chunks", [])}
    assert first.query("referenced_chunk_ids") == remaining


def test_write_into_a_directory_is_resolved_when_applied(node):
    node.ok("mkdir", path="/docs")
    # The target is a directory: the file goes inside it under the given name.
    assert node.ok("write_file", path="/docs", into_directory="a.txt", data=b"1", size=1)["path"] == "/docs/a.txt"
    # The target is not a directory (absent, or a file): the name is not used.
    assert node.ok("write_file", path="/new", into_directory="a.txt", data=b"2", size=1)["path"] == "/new"
    assert node.ok("write_file", path="/new", into_directory="a.txt", data=b"3", size=1)["path"] == "/new"
    assert node.tree() == [("/docs", "dir", 0), ("/docs/a.txt", "file", 1), ("/new", "file", 1)]
    assert node.query("read", "/new")["data"] == b"3"
    # Inside the directory the usual rules hold: a directory there is not replaced.
    node.ok("mkdir", path="/docs/sub/sub", parents=True)
    assert node.error("write_file", path="/docs", into_directory="sub", data=b"", size=0) == "IS_A_DIRECTORY"
    # Without into_directory a directory target is refused, as before.
    assert node.error("write_file", path="/docs", data=b"", size=0) == "IS_A_DIRECTORY"


def test_into_directory_that_makes_the_path_too_long_is_refused(node):
    deep = "/" + "/".join(["d" * 200] * 20)  # 4020 bytes, under the 4096-byte limit
    node.ok("mkdir", path=deep, parents=True)
    assert node.error("write_file", path=deep, into_directory="f" * 100, data=b"", size=0) == "INVALID_PATH"


def test_write_without_overwrite_refuses_an_existing_file_and_changes_nothing(node):
    node.ok("write_file", path="/f", chunks=[chunk("old")], size=100)
    node.ok("mkdir", path="/d")
    node.ok("write_file", path="/d/f", data=b"old", size=3)
    assert node.error("write_file", path="/f", chunks=[chunk("new")], size=100, overwrite=False) == "EXISTS"
    assert node.error("write_file", path="/d", into_directory="f", data=b"new", size=3, overwrite=False) == "EXISTS"
    assert node.query("read", "/f")["chunks"] == [chunk("old")]
    assert node.query("read", "/d/f")["data"] == b"old"
    assert node.query("referenced_chunk_ids") == {chunk("old")[0]}
    # A new name is written; overwrite=True (the default) replaces.
    assert node.ok("write_file", path="/d", into_directory="g", data=b"g", size=1, overwrite=False)["path"] == "/d/g"
    node.ok("write_file", path="/f", data=b"x", size=1, overwrite=True)
    assert node.query("read", "/f")["data"] == b"x"


def test_mv_without_overwrite_refuses_an_existing_target(node):
    node.ok("write_file", path="/a", data=b"a", size=1)
    node.ok("write_file", path="/b", data=b"b", size=1)
    node.ok("mkdir", path="/d")
    node.ok("write_file", path="/d/a", data=b"old", size=3)
    assert node.error("mv", src="/a", dst="/b", overwrite=False) == "EXISTS"
    assert node.error("mv", src="/a", dst="/d", overwrite=False) == "EXISTS"  # /d/a exists
    assert node.tree() == [("/a", "file", 1), ("/b", "file", 1), ("/d", "dir", 0), ("/d/a", "file", 3)]
    assert node.ok("mv", src="/b", dst="/c", overwrite=False)["path"] == "/c"
    assert node.ok("mv", src="/a", dst="/c")["path"] == "/c"  # the default replaces
    assert node.query("read", "/c")["data"] == b"a"


def apply_in_batches(node: Node, commands: list[bytes], rng: random.Random | None = None) -> list[dict]:
    """Apply commands as a driver does, several per write batch (random batch sizes; all in
    one batch without rng)."""
    replies: list[dict] = []
    position = 0
    while position < len(commands):
        count = rng.randint(1, 12) if rng is not None else len(commands)
        with node.store.write_batch() as batch:
            for data in commands[position:position + count]:
                node.index += 1
                replies.append(node.namespace.apply(batch.txn, node.index, decode_command(data)))
        position += count
    return replies


def test_many_writes_in_one_batch_give_the_state_and_results_of_one_write_per_batch(tmp_path):
    # Apply remembers directories within a write batch: whatever the batches, the same
    # commands must give the same replies and the same tables (rm and mv forget them).
    seed = random.randrange(1 << 32)
    print(f"seed={seed}")
    rng = random.Random(seed)
    commands = random_commands(rng, 400)
    batched, single = Node(tmp_path / "batched", batched=True), Node(tmp_path / "single")
    assert apply_in_batches(batched, commands, rng) == [single.apply(command) for command in commands]
    assert batched.query("digest") == single.query("digest")


@pytest.mark.parametrize("removal", [("rm", {"path": "/d", "recursive": True}), ("mv", {"src": "/d", "dst": "/e"})])
def test_a_directory_removed_or_moved_in_a_batch_is_not_written_into_later_in_it(tmp_path, removal):
    op, args = removal
    node = Node(tmp_path, batched=True)
    commands = [encode_command(*each, now_ns=seq) for seq, each in enumerate([
        ("mkdir", {"path": "/d", "client": "c", "seq": 1}),
        ("write_file", {"path": "/d/f", "data": b"1", "size": 1, "client": "c", "seq": 2}),
        (op, {**args, "client": "c", "seq": 3}),
        ("write_file", {"path": "/d/g", "data": b"2", "size": 1, "client": "c", "seq": 4}),
    ], start=1)]
    replies = apply_in_batches(node, commands)  # all in one write batch
    assert [reply["ok"] for reply in replies] == [True, True, True, False]
    assert replies[-1]["error"]["code"] == "NOT_FOUND"
    assert node.tree() == ([] if op == "rm" else [("/e", "dir", 0), ("/e/f", "file", 1)])


def session_commands(rng: random.Random, count: int, ttl_ns: int, clients: int = 4,
                     step_max_ns: int | None = None, pause_probability: float = 0.05) -> list[bytes]:
    """Writes of a few clients whose log clock moves by up to half a TTL per write (sometimes
    two TTLs), with retries of each client's last seq and stale ones: sessions expire in the
    middle of batches."""
    commands = []
    seqs = {f"c{number}": 0 for number in range(1, clients + 1)}
    weights = [1 / number for number in range(1, clients + 1)]  # some clients write rarely
    step_max_ns = step_max_ns or ttl_ns // 2
    now_ns = 0
    for number in range(count):
        client = rng.choices(sorted(seqs, key=lambda name: int(name[1:])), weights)[0]
        if seqs[client] and rng.random() < 0.3:
            seq = max(1, seqs[client] - rng.randrange(2))  # a retry, or a stale seq
        else:
            seqs[client] += 1
            seq = seqs[client]
        # Now and then a pause longer than the TTL: every session expires, and the sessions
        # recorded after it in the same batch must expire in their turn.
        now_ns += 2 * ttl_ns if rng.random() < pause_probability else rng.randrange(step_max_ns)
        path = rng.choice(["/a", "/b", "/a/x", f"/f{number % 5}"])
        commands.append(encode_command("write_file", {"path": path, "data": b"x", "size": 1, "parents": True,
                                                      "client": client, "seq": seq}, now_ns))
    return commands


def test_sessions_expire_at_the_same_entry_whatever_the_batches(tmp_path):
    # Apply skips the expiry index while no session can have expired (a bound kept in the
    # transaction, lowered by every session it records): the batches must not change which
    # retry is answered from its session and which is applied again.
    seed = random.randrange(1 << 32)
    print(f"seed={seed}")
    rng = random.Random(seed)
    ttl_ns = 10 * SECOND_NS
    commands = session_commands(rng, 400, ttl_ns)
    batched = Node(tmp_path / "batched", session_ttl_ns=ttl_ns, batched=True)
    single = Node(tmp_path / "single", session_ttl_ns=ttl_ns)
    assert apply_in_batches(batched, commands, rng) == [single.apply(command) for command in commands]
    assert batched.query("digest") == single.query("digest")


def test_a_session_stored_in_the_earlier_format_still_answers_its_retry(node):
    import msgpack

    first = node.write("mkdir", client="old", seq=7, path="/a")
    assert first["ok"]
    with node.store.write_batch() as batch:  # as a node of the previous version stored it
        batch.txn.put(b"old", msgpack.packb([7, first, 1000], use_bin_type=True), db=node.namespace._tables.sessions)
    assert node.query("session_result", "old", 7) == first
    assert node.write("mkdir", client="old", seq=7, path="/a") == first  # not applied again (EXISTS)
    assert node.ok("mkdir", client="old", seq=8, path="/b")["path"] == "/b"
    assert node.query("session_result", "old", 8)["ok"]


def test_a_seq_a_session_cannot_store_is_refused():
    with pytest.raises(BadRequest, match="seq must be below"):
        encode_command("mkdir", {"path": "/a", "client": "c", "seq": 1 << 62}, 1)
    assert decode_command(encode_command("mkdir", {"path": "/a", "client": "c", "seq": (1 << 62) - 1}, 1)).seq == (1 << 62) - 1


def test_sessions_are_forgotten_exactly_when_idle_for_longer_than_the_ttl(tmp_path):
    # The expiry index may list a session under an earlier time than its last activity (it is
    # moved only now and then): after every write, the sessions kept must be exactly those of a
    # model that forgets each client once the log clock passes its last activity by the TTL,
    # and the index must list each of them once.
    seed = random.randrange(1 << 32)
    print(f"seed={seed}")
    rng = random.Random(seed)
    ttl_ns = 16 * SECOND_NS
    node = Node(tmp_path, session_ttl_ns=ttl_ns)
    tables = node.namespace._tables
    model: dict[str, tuple[int, int]] = {}  # client -> (last seq, last active clock ns)
    clock_ns = 0
    # Steps much shorter than the TTL, some clients rarely active: index entries that lag
    # their session's last activity are met by expire() (which then moves them).
    for data in session_commands(rng, 3000, ttl_ns, clients=12, step_max_ns=ttl_ns // 24, pause_probability=0.002):
        command = decode_command(data)
        clock_ns = max(clock_ns, command.now_ns)
        model = {client: kept for client, kept in model.items() if kept[1] >= clock_ns - ttl_ns}
        if command.client not in model or command.seq > model[command.client][0]:
            model[command.client] = (command.seq, clock_ns)  # applied: retries and stale seqs are not
        node.apply(data)
        with node.store.read_transaction() as txn:
            kept = sorted(bytes(key).decode() for key, _ in txn.cursor(db=tables.sessions))
            indexed = sorted(bytes(key[8:]).decode() for key, _ in txn.cursor(db=tables.session_expiry))
        assert kept == sorted(model) == indexed
