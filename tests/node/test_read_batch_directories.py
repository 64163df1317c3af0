"""A batch of reads in one read transaction shares the directories it found (NodeServer's read
serving passes one dict to every Namespace.read of the batch): each answer, value or error, is
the one a read on its own gives."""

from __future__ import annotations

from node.errors import SandStoreError
from node.metadata.commands import decode_command, encode_command
from node.metadata.state_machine import Namespace
from node.storage.lmdb_store import NodeStore

MAP_SIZE_BYTES = 64 << 20


def answer(namespace: Namespace, txn, path: str, directories: dict | None) -> object:
    try:
        return namespace.read(txn, path, directories)
    except SandStoreError as error:
        return type(error).__name__, str(error)


def test_reads_sharing_the_directories_they_found_answer_as_reads_alone(tmp_path) -> None:
    store = NodeStore(tmp_path, MAP_SIZE_BYTES)
    namespace = Namespace(store.env, session_ttl_ns=10**12)
    commands = [("mkdir", {"path": "/a/b", "parents": True}), ("mkdir", {"path": "/c", "parents": False})]
    commands += [("write_file", {"path": path, "data": path.encode(), "size": len(path), "mode": 0o644, "parents": False})
                 for path in ("/a/b/f1", "/a/b/f2", "/a/f3", "/c/f4", "/top")]
    for index, (op, args) in enumerate(commands, start=1):
        with store.write_batch() as batch:
            reply = namespace.apply(batch.txn, index, decode_command(encode_command(op, {**args, "client": "c1", "seq": index}, 1000)))
        assert reply["ok"], reply
    paths = ["/a/b/f1", "/a/b/f2", "/a/b/missing", "/a/f3", "/a/b", "/top/below", "/c/f4", "/top", "/a/b/f1",
             "/c/missing", "/nowhere/f", "/a/f3/x"]
    try:
        with store.read_transaction() as txn:
            alone = [answer(namespace, txn, path, None) for path in paths]
            directories: dict = {}
            shared = [answer(namespace, txn, path, directories) for path in paths]
    finally:
        store.close()
    assert shared == alone
    assert [item["data"] for item in shared if isinstance(item, dict)] == [b"/a/b/f1", b"/a/b/f2", b"/a/f3", b"/c/f4",
                                                                          b"/top", b"/a/b/f1"]
    assert {"/a/b", "/c"} <= set(directories)  # the batch did share what it found
