"""Replica bookkeeping in the replicated namespace: add_replica / drop_replica commands,
validated like every command, and the replicas reads answer with."""

from __future__ import annotations

import pytest

from node.errors import BadRequest
from node.metadata.commands import decode_command, encode_command
from node.metadata.state_machine import Namespace
from node.storage.lmdb_store import NodeStore

MAP_SIZE_BYTES = 64 << 20
CHUNK_A = b"a" * 32
CHUNK_B = b"b" * 32


class Node:
    def __init__(self, directory) -> None:
        self.store = NodeStore(directory, MAP_SIZE_BYTES)
        self.namespace = Namespace(self.store.env)
        self.index = 0
        self.seq = 0

    def write(self, op: str, **args) -> dict:
        self.seq += 1
        self.index += 1
        command = encode_command(op, {**args, "client": "repair-test", "seq": self.seq}, 1000)
        with self.store.write_batch() as batch:
            return self.namespace.apply(batch.txn, self.index, decode_command(command))

    def query(self, name: str, *args):
        with self.store.read_transaction() as txn:
            result = getattr(self.namespace, name)(txn, *args)
            return list(result) if name in ("chunk_replicas", "files_under") else result


@pytest.fixture
def node(tmp_path):
    node = Node(tmp_path)
    reply = node.write("write_file", path="/f", size=30,
                       chunks=[[CHUNK_A, 10, ["n1", "n2"]], [CHUNK_B, 20, ["n2", "n3"]]])
    assert reply["ok"], reply
    yield node
    node.store.close()


def replicas_of(node: Node, path: str) -> list[list[str]]:
    return [nodes for _, _, nodes in node.query("stat", path)["chunks"]]


def test_written_replicas_are_recorded_and_reads_follow_changes(node):
    assert replicas_of(node, "/f") == [["n1", "n2"], ["n2", "n3"]]
    assert node.write("add_replica", chunk=CHUNK_A, node="n4")["ok"]
    assert node.write("drop_replica", chunk=CHUNK_A, node="n1")["ok"]
    assert replicas_of(node, "/f") == [["n2", "n4"], ["n2", "n3"]]
    assert [nodes for _, _, nodes in node.query("read", "/f")["chunks"]] == [["n2", "n4"], ["n2", "n3"]]
    assert [(chunk_id, replicas.nodes) for chunk_id, replicas in node.query("chunk_replicas")] == [
        (CHUNK_A, ("n2", "n4")), (CHUNK_B, ("n2", "n3"))]
    assert node.query("replica_recorded", CHUNK_A, "n4") and not node.query("replica_recorded", CHUNK_A, "n1")


def test_the_last_recorded_replica_is_never_dropped(node):
    assert node.write("drop_replica", chunk=CHUNK_A, node="n1")["ok"]
    reply = node.write("drop_replica", chunk=CHUNK_A, node="n2")
    assert reply["error"]["code"] == "REFUSED" and "last recorded replica" in reply["error"]["message"]
    assert replicas_of(node, "/f")[0] == ["n2"]


def test_changes_to_unknown_chunks_or_replicas_are_refused_and_change_nothing(node):
    digest = node.query("digest")
    assert node.write("add_replica", chunk=b"z" * 32, node="n4")["error"]["code"] == "NOT_FOUND"
    assert node.write("drop_replica", chunk=CHUNK_A, node="n9")["error"]["code"] == "NOT_FOUND"
    # Only the sessions table changed (it remembers each answer): the replicas did not.
    assert node.query("digest") != digest and replicas_of(node, "/f") == [["n1", "n2"], ["n2", "n3"]]


def test_adding_a_recorded_replica_again_is_a_no_op(node):
    assert node.write("add_replica", chunk=CHUNK_A, node="n2")["result"]["replicas"] == ["n1", "n2"]


def test_a_dedup_write_adds_its_nodes_and_removing_every_file_forgets_the_chunk(node):
    assert node.write("write_file", path="/g", size=10, chunks=[[CHUNK_A, 10, ["n3"]]])["ok"]
    assert replicas_of(node, "/f")[0] == ["n1", "n2", "n3"]
    assert node.write("rm", path="/f")["ok"]
    assert [chunk_id for chunk_id, _ in node.query("chunk_replicas")] == [CHUNK_A]
    assert node.write("rm", path="/g")["ok"]
    assert node.query("chunk_replicas") == []
    assert node.write("add_replica", chunk=CHUNK_A, node="n4")["error"]["code"] == "NOT_FOUND"


def test_du_counts_recorded_copies_except_on_nodes_down(node):
    with node.store.read_transaction() as txn:
        assert node.namespace.du(txn, "/")["replicated_chunk_bytes"] == 2 * 10 + 2 * 20
        assert node.namespace.du(txn, "/", frozenset({"n2"}))["replicated_chunk_bytes"] == 10 + 20


def test_files_under_lists_files_with_current_replicas(node):
    assert node.write("mkdir", path="/d")["ok"]
    assert node.write("write_file", path="/d/inline", size=1, data=b"x")["ok"]
    assert node.write("add_replica", chunk=CHUNK_B, node="n1")["ok"]
    files = node.query("files_under", "/")
    assert [(path, size) for path, size, _ in files] == [("/d/inline", 1), ("/f", 30)] or \
        [(path, size) for path, size, _ in files] == [("/f", 30), ("/d/inline", 1)]
    chunks = dict((path, chunks) for path, _, chunks in files)
    assert chunks["/d/inline"] == [] and chunks["/f"][1][2] == ["n1", "n2", "n3"]


@pytest.mark.parametrize("args, message", [
    ({"chunk": b"short", "node": "n1"}, "32 bytes"),
    ({"chunk": CHUNK_A, "node": "n 1"}, "not a node id"),
    ({"chunk": CHUNK_A, "node": ""}, "not a node id"),
    ({"chunk": CHUNK_A}, "missing argument 'node'"),
    ({"chunk": "text", "node": "n1"}, "must be bytes"),
])
@pytest.mark.parametrize("op", ["add_replica", "drop_replica"])
def test_malformed_replica_commands_are_refused_when_encoded(op, args, message):
    with pytest.raises(BadRequest, match=message):
        encode_command(op, {**args, "client": "c", "seq": 1}, 1)


def test_replica_commands_round_trip_through_the_log():
    data = encode_command("drop_replica", {"chunk": CHUNK_A, "node": "n2", "client": "c", "seq": 3}, 7)
    command = decode_command(data)
    assert (command.op, command.args, command.seq) == ("drop_replica", {"chunk": CHUNK_A, "node": "n2"}, 3)
