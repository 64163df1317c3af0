"""SnapshotDirectories: reads in separate read transactions share the directories they found
while the snapshot is the same, and start over after any write. Every answer, value or error,
must be the one a read on its own gives, also after writes that move, remove and re-create the
directories a read remembered."""

from __future__ import annotations

from node.errors import SandStoreError
from node.metadata.read_memo import DIRECTORIES_MAX, SnapshotDirectories
from tests.metadata.test_namespace import Node

PATHS = ["/a/b/f1", "/a/b/f2", "/a/b", "/a/f3", "/x/b/f1", "/a/b/missing", "/a/f3/below", "/nowhere/f"]


def answer(node: Node, path: str, directories: dict | None) -> object:
    with node.store.read_transaction() as txn:
        try:
            return node.namespace.read(txn, path, directories)
        except SandStoreError as error:
            return type(error).__name__, str(error)


def shared_answer(node: Node, memo: SnapshotDirectories, path: str) -> object:
    with node.store.read_transaction() as txn:
        directories = memo.for_transaction(txn)
        try:
            return node.namespace.read(txn, path, directories)
        except SandStoreError as error:
            return type(error).__name__, str(error)


def file(node: Node, path: str, data: bytes) -> None:
    node.ok("write_file", path=path, data=data, size=len(data), mode=0o644, parents=True)


def test_reads_of_one_snapshot_share_directories_and_a_write_starts_over(tmp_path) -> None:
    node = Node(tmp_path)
    memo = SnapshotDirectories()
    try:
        for path in ("/a/b/f1", "/a/b/f2", "/a/f3"):
            file(node, path, path.encode())
        node.ok("mkdir", path="/x", parents=False)
        steps = [
            lambda: None,
            lambda: node.ok("mv", src="/a/b", dst="/x/b"),  # /a/b, remembered, moves away
            lambda: file(node, "/a/b/f1", b"new"),  # and comes back as another directory
            lambda: node.ok("rm", path="/a", recursive=True),
            lambda: file(node, "/a/f3", b"again"),
        ]
        for step in steps:
            step()
            for _ in range(2):  # the second round finds every directory remembered
                assert [shared_answer(node, memo, path) for path in PATHS] == [answer(node, path, None)
                                                                                for path in PATHS]
        with node.store.read_transaction() as txn:
            remembered = memo.for_transaction(txn)
        assert "/x/b" in remembered  # the reads did share what they found
        assert "/a/b" not in remembered  # found before the rm, in another snapshot
    finally:
        node.store.close()


def test_the_map_starts_over_past_its_bound(tmp_path) -> None:
    node = Node(tmp_path)
    memo = SnapshotDirectories()
    try:
        with node.store.read_transaction() as txn:
            directories = memo.for_transaction(txn)
            directories.update((f"/d{number}", (number + 2, 1)) for number in range(DIRECTORIES_MAX + 1))
            assert memo.for_transaction(txn) == {}
    finally:
        node.store.close()
