"""Walking the inode tree: path resolution, directory listing, subtree traversal.

Read-only helpers shared by apply and the queries; they take the caller's transaction.
"""

from __future__ import annotations

from typing import Iterator, NamedTuple

import lmdb

from node.errors import NotADirectory, NotFound
from node.metadata import paths
from node.metadata.tables import NO_INODE, ROOT_INODE, NamespaceTables, Record, child_key, child_name, children_prefix, pack_uint64, unpack_uint64


class Resolved(NamedTuple):
    """The deepest existing node along a path: `depth` names of it resolved (all of them when
    the path exists). When depth is short of the path, `record` is a directory.
    (A NamedTuple: one is built per applied write and per read, and it is cheap to build;
    resolve builds it with tuple.__new__, as Record.decode does, in the order asserted below.)"""

    depth: int
    inode: int
    parent: int  # NO_INODE for the root
    record: Record
    names: list[str]  # paths.components of the path resolved (split once, used by every caller)
    exists: bool  # depth == len(names): a field, not a property (asked per applied write)


assert Resolved._fields == ("depth", "inode", "parent", "record", "names", "exists")
_new_tuple = tuple.__new__


def load(txn: lmdb.Transaction, tables: NamespaceTables, inode: int) -> Record:
    return Record.decode(_load_encoded(txn, tables, inode))


def resolve(txn: lmdb.Transaction, tables: NamespaceTables, path: str,
            directories: dict[str, tuple[int, int]] | None = None,
            directory_records: dict[int, Record] | None = None) -> Resolved:
    """Follow `path` as far as it exists. Raises NotADirectory when a file sits where the path
    needs a directory. Only the deepest record found is decoded: every write resolves its path,
    and the directories above it need no more than a look at their kind.

    directories: path -> (inode, parent inode) of directories known to exist in `txn` (the
    caller guarantees that nothing removed or moved since): the parent of `path` is looked up
    there first, and remembered there when the walk finds it. directory_records: inode ->
    Record of directories as they are in `txn` (the caller keeps it so; a record there may
    not be stored yet, see state_machine._TransactionMemo), for the record resolve returns."""
    names = paths.components(path)
    parent_path = path.rsplit("/", 1)[0] or paths.ROOT
    remembered = directories.get(parent_path) if directories is not None and names else None
    if remembered is not None:
        inode, parent = remembered
        value = txn.get(child_key(inode, names[-1]), None, tables.children)  # positional: tables.py
        if value is not None:
            child = unpack_uint64(value)
            record = directory_records.get(child) if directory_records is not None else None
            return _new_tuple(Resolved, (len(names), child, inode, record or load(txn, tables, child), names, True))
        record = directory_records.get(inode) if directory_records is not None else None
        if record is None:
            record = load(txn, tables, inode)
            if directory_records is not None:
                directory_records[inode] = record
        assert record.is_directory, f"{parent_path} was remembered as a directory"
        return _new_tuple(Resolved, (len(names) - 1, inode, parent, record, names, False))
    inode, parent = ROOT_INODE, NO_INODE
    encoded = _load_encoded(txn, tables, ROOT_INODE)
    for depth, name in enumerate(names):
        if not Record.encodes_directory(encoded):
            prefix = paths.ROOT + "/".join(names[:depth])
            raise NotADirectory(f"{prefix} is a file, not a directory (in {path})")
        if directories is not None and depth == len(names) - 1:
            directories[parent_path] = (inode, parent)
        value = txn.get(child_key(inode, name), None, tables.children)
        if value is None:
            return _new_tuple(Resolved, (depth, inode, parent, _record(encoded, inode, directory_records), names, False))
        inode, parent = unpack_uint64(value), inode
        encoded = _load_encoded(txn, tables, inode)
    return _new_tuple(Resolved, (len(names), inode, parent, _record(encoded, inode, directory_records), names, True))


def _record(encoded: bytes, inode: int, directory_records: dict[int, Record] | None) -> Record:
    """The inode's record in the transaction: as directory_records has it, else as stored."""
    record = directory_records.get(inode) if directory_records is not None else None
    return Record.decode(encoded) if record is None else record


def _load_encoded(txn: lmdb.Transaction, tables: NamespaceTables, inode: int) -> bytes:
    value = txn.get(pack_uint64(inode), None, tables.inodes)
    assert value is not None, f"inode {inode} is referenced but missing"
    return value


def lookup(txn: lmdb.Transaction, tables: NamespaceTables, path: str,
           directories: dict[str, tuple[int, int]] | None = None) -> Resolved:
    """`path` must exist: NotFound otherwise. directories: as for resolve."""
    found = resolve(txn, tables, path, directories)
    if not found.exists:
        raise NotFound(f"{path} does not exist")
    return found


def children(txn: lmdb.Transaction, tables: NamespaceTables, directory: int) -> Iterator[tuple[str, int]]:
    """(name, inode) of a directory's entries, in name order (UTF-8 byte order)."""
    prefix = children_prefix(directory)
    cursor = txn.cursor(db=tables.children)
    if not cursor.set_range(prefix):
        return
    for key, value in cursor:
        if not key.startswith(prefix):
            return
        yield child_name(key), unpack_uint64(value)


def has_children(txn: lmdb.Transaction, tables: NamespaceTables, directory: int) -> bool:
    return next(children(txn, tables, directory), None) is not None


def walk(txn: lmdb.Transaction, tables: NamespaceTables, path: str, inode: int, record: Record) -> Iterator[tuple[str, int, Record]]:
    """(path, inode, record) of a node and everything under it, depth first, each
    directory's entries in name order. Iterative: deep trees cannot exhaust the stack."""
    stack = [(path, inode, record)]
    while stack:
        node_path, node_inode, node_record = stack.pop()
        yield node_path, node_inode, node_record
        if node_record.is_directory:
            entries = [
                (paths.join(node_path, name), child, load(txn, tables, child))
                for name, child in children(txn, tables, node_inode)
            ]
            stack.extend(reversed(entries))
