"""Namespace: the replicated file-system state machine over LMDB tables (tables.py).

apply() is deterministic: it reads no clock and no random source (time stamps come in the
command) and depends only on the tables and the command, so every node that applies the same
log holds the same namespace (digest() checks it). It runs in the caller's write transaction,
the one that also persists the log and the applied index.

Operating errors (NOT_FOUND, EXISTS, ...) are results, not exceptions: each handler checks
every precondition before its first write, so a refused command changes nothing but the
session that remembers its answer. Anything else raised (an AssertionError, an lmdb error
such as a full map) aborts the caller's whole transaction.
"""

from __future__ import annotations

from typing import Callable, Protocol

import lmdb

from node.errors import AlreadyExists, InvalidPath, IsADirectory, NotADirectory, NotEmpty, NotFound, SandStoreError, Stale
from node.metadata import chunk_refs, image, paths, replicas, tree
from node.metadata.commands import DEFAULT_DIRECTORY_MODE, Command
from node.metadata.sessions import Sessions
from node.metadata.tables import (
    KEY_APPLIED_INDEX,
    KEY_NEXT_INODE,
    ROOT_INODE,
    NamespaceTables,
    Record,
    child_key,
    pack_uint64,
    unpack_uint64,
)
from node.metadata.tree import Resolved

DEFAULT_SESSION_TTL_NS = 3600 * 10**9
# A transaction's memo is kept for the next one (see _TransactionMemo) only while it remembers
# at most this many directories (and directory records): beyond, the next transaction starts
# afresh (memory stays bounded).
MEMO_DIRECTORIES_KEPT_MAX = 4096
_new_tuple = tuple.__new__


class BatchEnds(Protocol):
    """Where the write batches that apply runs in end (NodeStore.on_batch_end)."""

    def on_batch_end(self, hook: Callable[[lmdb.Transaction], None]) -> None:
        """Call hook(txn) at the end of every write batch, in its transaction, before it commits."""


class _TransactionMemo:
    """What apply learned in one write transaction and may use again within it: a batch
    applies many writes, usually into the same few directories. Forgotten whenever a
    directory may have been removed or moved (rm, mv, restore), and with the transaction
    unless the next one shows that it committed (_carried_over): at one write outstanding the
    leader applies each write in a transaction of its own, and every write then walked its
    path from the root and read the clock again.

    It also holds what is written once per batch rather than once per entry (Namespace.finish
    writes it, at the end of the batch, in its transaction): the applied index, the log's
    clock, the next inode number and the directories whose mtime the batch's writes touched.
    Every entry of a batch read these as the previous entry left them, so the batch ends in
    the very state its entries applied one by one would leave."""

    __slots__ = ("txn", "directories", "directory_records", "applied_index", "clock_ns", "next_inode",
                 "session_floor_ns", "stored_applied_index", "stored_clock_ns", "stored_next_inode",
                 "touched_directories")

    def __init__(self, txn: lmdb.Transaction | None) -> None:
        self.txn = txn
        self.directories: dict[str, tuple[int, int]] = {}  # for tree.resolve
        # inode -> Record of directories read or written in this transaction, as they are in
        # it (stored, or touched and written by finish): the parent of every write is touched
        # (its mtime), then read again by the next write.
        self.directory_records: dict[int, Record] = {}
        self.applied_index: int | None = None  # in this transaction, once read
        self.clock_ns: int | None = None
        self.next_inode: int | None = None  # in this transaction, once read
        self.session_floor_ns: int | None = None  # Sessions.expire's bound, once it walked
        # As stored in the transaction: finish writes only what differs.
        self.stored_applied_index: int | None = None
        self.stored_clock_ns: int | None = None
        self.stored_next_inode: int | None = None
        self.touched_directories: set[int] = set()  # inodes in directory_records that finish writes

    def forget_directories(self) -> None:
        assert not self.touched_directories, "finish the touched directories before forgetting them"
        self.directories.clear()
        self.directory_records.clear()


class Namespace:
    def __init__(self, env: lmdb.Environment, session_ttl_ns: int = DEFAULT_SESSION_TTL_NS, *,
                 batches: BatchEnds | None = None) -> None:
        """Open (and on first use create) the tables in `env`, e.g. NodeStore(...).env.
        Construct it before any write batch is open: creating the root takes a write txn.

        batches: the store whose write batches apply runs in (NodeStore): what apply writes
        once per batch (finish) is then written when the batch ends. None: apply writes it
        at the end of every entry (for callers that do not end their batches through it)."""
        self._tables = NamespaceTables.open(env)
        self._finish_each_entry = batches is None
        if batches is not None:
            batches.on_batch_end(self.finish)
        self._sessions = Sessions(self._tables, session_ttl_ns)
        self._memo = _TransactionMemo(None)
        self._handlers: dict[str, Callable[[lmdb.Transaction, Command], dict]] = {
            "mkdir": self._mkdir,
            "write_file": self._write_file,
            "rm": self._rm,
            "mv": self._mv,
            "add_replica": lambda txn, command: replicas.apply_add(txn, self._tables, command.args["chunk"],
                                                                    command.args["node"]),
            "drop_replica": lambda txn, command: replicas.apply_drop(txn, self._tables, command.args["chunk"],
                                                                      command.args["node"]),
        }
        with env.begin(write=True) as txn:
            if txn.get(pack_uint64(ROOT_INODE), db=self._tables.inodes) is None:
                # Every node creates the same root (time 0), so fresh namespaces are equal.
                txn.put(pack_uint64(ROOT_INODE), Record(True, DEFAULT_DIRECTORY_MODE, 0).encode(), db=self._tables.inodes)
                txn.put(KEY_NEXT_INODE, pack_uint64(ROOT_INODE + 1), db=self._tables.meta)

    # -- apply --------------------------------------------------------------------------------

    def apply(self, txn: lmdb.Transaction, index: int, decoded: Command | SandStoreError) -> dict:
        """Apply the command of log entry `index`, as decode_command decoded it (or the error it
        raised: a malformed entry is an error result on every node); returns the reply for the
        client: {"ok": True, "result": ...} or {"ok": False, "error": {"code": ..., "message": ...}}.
        What it writes once per batch is written by finish (see __init__'s batches)."""
        result = self._apply(txn, index, decoded)
        if self._finish_each_entry:
            self.finish(txn)
        return result

    def finish(self, txn: lmdb.Transaction) -> None:
        """Write, in `txn`, what the entries applied in it left for the end of the batch: the
        applied index, the clock, the next inode number and the touched directories' records
        (each once, as the last entry left it). The store calls it when a write batch ends
        (any batch: one that applied nothing here has nothing to write)."""
        memo = self._memo
        if memo.txn is not txn:
            return
        meta = self._tables.meta
        if memo.applied_index != memo.stored_applied_index:
            txn.put(KEY_APPLIED_INDEX, pack_uint64(memo.applied_index), True, True, False, meta)  # positional: tables.py
            memo.stored_applied_index = memo.applied_index
        if memo.clock_ns != memo.stored_clock_ns:
            self._sessions.set_clock(txn, memo.clock_ns)
            memo.stored_clock_ns = memo.clock_ns
        if memo.next_inode != memo.stored_next_inode:
            txn.put(KEY_NEXT_INODE, pack_uint64(memo.next_inode), True, True, False, meta)
            memo.stored_next_inode = memo.next_inode
        self._write_touched_directories(txn)

    def _write_touched_directories(self, txn: lmdb.Transaction) -> None:
        memo = self._memo
        if memo.txn is not txn or not memo.touched_directories:
            return
        records = memo.directory_records
        inodes = self._tables.inodes
        for inode in sorted(memo.touched_directories):  # sorted: the same puts on every node
            txn.put(pack_uint64(inode), records[inode].encode(), True, True, False, inodes)
        memo.touched_directories.clear()

    def _apply(self, txn: lmdb.Transaction, index: int, decoded: Command | SandStoreError) -> dict:
        memo = self._memo
        if memo.txn is not txn:
            memo = self._memo = self._carried_over(memo, txn)
        assert index > memo.applied_index, f"entry {index} applied after entry {memo.applied_index}"
        memo.applied_index = index
        if isinstance(decoded, SandStoreError):
            return _error_result(decoded)
        op, _, client, seq, now_ns = decoded  # each read of a field by name is a descriptor call
        if now_ns > memo.clock_ns:  # the log's clock never runs backwards
            memo.clock_ns = now_ns
        clock_ns = memo.clock_ns
        sessions = self._sessions
        memo.session_floor_ns = sessions.expire(txn, clock_ns, memo.session_floor_ns)
        session = sessions.get(txn, client)
        if session is not None and seq <= session.last_seq:
            if seq == session.last_seq:
                return session.result()
            return _error_result(Stale(
                f"a newer request of this client was already applied (seq {seq}, last {session.last_seq})"
            ))
        try:
            result = {"ok": True, "result": self._handlers[op](txn, decoded)}
        except SandStoreError as error:
            result = _error_result(error)
        memo.session_floor_ns = sessions.record(txn, client, session, seq, result, clock_ns, memo.session_floor_ns)
        return result

    def _carried_over(self, previous: _TransactionMemo, txn: lmdb.Transaction) -> _TransactionMemo:
        """The memo for `txn`, the first apply in it: what `previous` (the memo of the last
        transaction that applied) knew, if that transaction committed, else a fresh one.

        It committed if `txn` holds the applied index it ended with: every apply raises the
        applied index above what its transaction started from, finish writes it (and the rest
        of what the memo holds for the end of the batch) in that transaction, and nothing else
        writes the namespace's tables (restore starts a memo of no transaction). An aborted
        transaction leaves the index it started from, below. Then the directories, records,
        clock, next inode and session bound it knew are as stored in `txn`."""
        memo = _TransactionMemo(txn)
        applied_index = self._applied_index(txn)
        memo.applied_index = memo.stored_applied_index = applied_index
        if (previous.txn is not None and previous.applied_index == applied_index
                and previous.stored_applied_index == applied_index  # (finish wrote it)
                and previous.stored_clock_ns == previous.clock_ns and previous.stored_next_inode == previous.next_inode
                and not previous.touched_directories and len(previous.directories) <= MEMO_DIRECTORIES_KEPT_MAX
                and len(previous.directory_records) <= MEMO_DIRECTORIES_KEPT_MAX):
            memo.directories = previous.directories
            memo.directory_records = previous.directory_records
            memo.clock_ns = memo.stored_clock_ns = previous.clock_ns
            memo.next_inode = memo.stored_next_inode = previous.next_inode
            memo.session_floor_ns = previous.session_floor_ns
        else:
            memo.clock_ns = memo.stored_clock_ns = self._sessions.clock_ns(txn)
        return memo

    def _mkdir(self, txn: lmdb.Transaction, command: Command) -> dict:
        path, parents = command.args["path"], command.args["parents"]
        found = tree.resolve(txn, self._tables, path, self._memo.directories, self._memo.directory_records)
        if found.exists:
            if parents and found.record.is_directory:
                return found.record.stat(path)
            raise AlreadyExists(f"{path} already exists")
        self._check_parent_exists(found, path, parents)
        record = Record(True, command.args["mode"], command.now_ns)
        self._create(txn, found, record, command.now_ns)
        return record.stat(path)

    def _write_file(self, txn: lmdb.Transaction, command: Command) -> dict:
        args = command.args
        path = args["path"]
        # tuple.__new__: as Record.decode builds one (the NamedTuple's __new__ is a Python call)
        record = _new_tuple(Record, (False, args["mode"], command.now_ns, args["size"], args["data"], args["chunks"]))
        if self._created_in_known_directory(txn, path, record, command.now_ns):  # the usual write
            if record.chunks:  # an inline file references no chunk
                chunk_refs.add(txn, self._tables, record.chunks)
            return record.stat(path)
        found = tree.resolve(txn, self._tables, path, self._memo.directories, self._memo.directory_records)
        if args["into_directory"] is not None and found.exists and found.record.is_directory:
            # Decided here, in apply, not by a stat before the write: one round, and no race
            # with a concurrent mkdir or rm of the target.
            path = paths.normalize_path(paths.join(path, args["into_directory"]))  # checks the length
            found = tree.resolve(txn, self._tables, path, self._memo.directories, self._memo.directory_records)
        if found.exists:
            if found.record.is_directory:
                raise IsADirectory(f"{path} is a directory")
            if not args["overwrite"]:
                raise AlreadyExists(f"{path} already exists (not overwritten)")
            # Overwrite in place: the same inode gets the new content in this transaction.
            chunk_refs.add(txn, self._tables, record.chunk_list())
            chunk_refs.remove(txn, self._tables, found.record.chunk_list())
            self._put(txn, found.inode, record)
            return record.stat(path)
        self._check_parent_exists(found, path, args["parents"])
        self._create(txn, found, record, command.now_ns)
        if record.chunks:  # an inline file references no chunk
            chunk_refs.add(txn, self._tables, record.chunks)
        return record.stat(path)

    def _rm(self, txn: lmdb.Transaction, command: Command) -> dict:
        self._write_touched_directories(txn)  # rm reads records from the table
        self._memo.forget_directories()  # a remembered directory may go
        path = command.args["path"]
        if path == paths.ROOT:
            raise InvalidPath("refusing to remove the root directory '/'")
        found = tree.lookup(txn, self._tables, path)
        if found.record.is_directory and not command.args["recursive"]:
            if tree.has_children(txn, self._tables, found.inode):
                raise NotEmpty(f"{path} is a directory that is not empty (use recursive)")
        removed = list(tree.walk(txn, self._tables, path, found.inode, found.record))
        deleted = txn.delete(child_key(found.parent, paths.base_name(path)), db=self._tables.children)
        assert deleted, path
        for _, inode, record in removed:
            self._delete_inode(txn, inode, record)
        self._touch(txn, found.parent, command.now_ns)
        directories = sum(1 for _, _, record in removed if record.is_directory)
        return {"path": path, "files": len(removed) - directories, "dirs": directories}

    def _mv(self, txn: lmdb.Transaction, command: Command) -> dict:
        self._write_touched_directories(txn)  # mv reads records from the table
        self._memo.forget_directories()  # a remembered directory may move or be replaced
        source, destination = command.args["src"], command.args["dst"]
        if source == paths.ROOT:
            raise InvalidPath("cannot move the root directory '/'")
        moved = tree.lookup(txn, self._tables, source)
        target_found = tree.resolve(txn, self._tables, destination)
        target = destination
        if target_found.exists and target_found.record.is_directory:
            target = paths.join(destination, paths.base_name(source))
            target_found = tree.resolve(txn, self._tables, target)
        if target == source:
            return moved.record.stat(source)  # renaming onto itself changes nothing
        if moved.record.is_directory and paths.is_within(target, source):
            raise InvalidPath(f"cannot move directory {source} into itself ({target})")
        if target_found.exists:
            if not command.args["overwrite"]:
                raise AlreadyExists(f"{target} already exists (not overwritten)")
            self._check_replaceable(moved.record, target_found.record, source, target)
            target_parent = target_found.parent
            self._delete_inode(txn, target_found.inode, target_found.record)
        else:
            self._check_parent_exists(target_found, target, parents=False)
            target_parent = target_found.inode
        deleted = txn.delete(child_key(moved.parent, paths.base_name(source)), db=self._tables.children)
        assert deleted, source
        txn.put(child_key(target_parent, paths.base_name(target)), pack_uint64(moved.inode), db=self._tables.children)
        self._touch(txn, moved.parent, command.now_ns)
        self._touch(txn, target_parent, command.now_ns)
        return moved.record.stat(target)

    @staticmethod
    def _check_parent_exists(found: Resolved, path: str, parents: bool) -> None:
        """`found` stops short of `path`: refuse unless only the last name is missing, or
        parents are to be created."""
        assert found.record.is_directory, "tree.resolve stops short only at a directory"
        if found.depth < len(found.names) - 1 and not parents:
            raise NotFound(f"parent directory {paths.parent_of(path)} does not exist (use parents to create it)")

    @staticmethod
    def _check_replaceable(moved: Record, existing: Record, source: str, target: str) -> None:
        if existing.is_directory and moved.is_directory:
            raise AlreadyExists(f"cannot move {source} onto the existing directory {target}")
        if existing.is_directory:
            raise IsADirectory(f"cannot replace the directory {target} with the file {source}")
        if moved.is_directory:
            raise NotADirectory(f"cannot replace the file {target} with the directory {source}")

    # -- writes -------------------------------------------------------------------------------

    def _create(self, txn: lmdb.Transaction, found: Resolved, record: Record, now_ns: int) -> None:
        """Create found.names[found.depth:] under found: directories, then `record` for the last."""
        names = found.names
        parent = found.inode
        # Touched: found.record is its record in this transaction; finish writes it, once.
        memo = self._memo
        memo.directory_records[parent] = found.record.with_mtime(now_ns)
        memo.touched_directories.add(parent)
        for name in names[found.depth : -1]:
            parent = self._link(txn, parent, name, Record(True, DEFAULT_DIRECTORY_MODE, now_ns))
        self._link(txn, parent, names[-1], record)

    def _created_in_known_directory(self, txn: lmdb.Transaction, path: str, record: Record, now_ns: int) -> bool:
        """Create `path` for the file `record` if its parent is a directory known in this
        transaction (memo.directories: a batch's writes go to the same few) and its name is
        free there; else False, with nothing written. Then nothing else can refuse the write
        (into_directory, parents and overwrite only matter when the path exists or its parent
        does not), and the insert itself says whether the name is free: resolve's lookup of
        it first, the same key, was a sixth of applying a new file."""
        memo = self._memo
        parent_path, _, name = path.rpartition("/")
        known = memo.directories.get(parent_path or paths.ROOT) if name else None  # (no name: the root)
        if known is None:
            return False
        parent = known[0]
        if self._link_if_free(txn, parent, name, record) is None:
            return False
        # Touched, as _create touches it: finish writes it, once.
        parent_record = memo.directory_records.get(parent) or tree.load(txn, self._tables, parent)
        assert parent_record.is_directory, f"{parent_path} was remembered as a directory"
        memo.directory_records[parent] = parent_record.with_mtime(now_ns)
        memo.touched_directories.add(parent)
        return True

    def _link(self, txn: lmdb.Transaction, parent: int, name: str, record: Record) -> int:
        inode = self._link_if_free(txn, parent, name, record)
        assert inode is not None, f"{name!r} already exists in inode {parent}"
        return inode

    def _link_if_free(self, txn: lmdb.Transaction, parent: int, name: str, record: Record) -> int | None:
        """Store `record` under a new inode named `name` in `parent`, unless the name is taken
        there: then None, and nothing written."""
        memo = self._memo
        assert memo.txn is txn, "apply opens the memo of its transaction first"
        next_inode = memo.next_inode
        if next_inode is None:
            next_inode = memo.next_inode = memo.stored_next_inode = unpack_uint64(
                txn.get(KEY_NEXT_INODE, None, self._tables.meta))
        inserted = txn.put(child_key(parent, name), pack_uint64(next_inode), True, False, False,  # overwrite=False
                           self._tables.children)
        if not inserted:
            return None
        memo.next_inode = next_inode + 1  # written by finish
        self._put(txn, next_inode, record)
        return next_inode

    def _put(self, txn: lmdb.Transaction, inode: int, record: Record) -> None:
        txn.put(pack_uint64(inode), record.encode(), True, True, False, self._tables.inodes)
        if record.is_directory:  # what resolve() finds remembered must be what is stored
            assert inode not in self._memo.touched_directories, "a touched directory written twice"
            self._memo.directory_records[inode] = record

    def _touch(self, txn: lmdb.Transaction, directory: int, now_ns: int) -> None:
        """A directory's mtime is the time its entries last changed."""
        self._put(txn, directory, tree.load(txn, self._tables, directory).with_mtime(now_ns))

    def _delete_inode(self, txn: lmdb.Transaction, inode: int, record: Record) -> None:
        """Delete one inode (not its directory entry) and the directory entries it holds."""
        assert inode != ROOT_INODE, "the root is never deleted"
        if record.is_directory:
            for name, _ in list(tree.children(txn, self._tables, inode)):
                txn.delete(child_key(inode, name), db=self._tables.children)
        chunk_refs.remove(txn, self._tables, record.chunk_list())
        deleted = txn.delete(pack_uint64(inode), db=self._tables.inodes)
        assert deleted, inode
        self._memo.directory_records.pop(inode, None)

    def _applied_index(self, txn: lmdb.Transaction) -> int:
        value = txn.get(KEY_APPLIED_INDEX, db=self._tables.meta)
        return 0 if value is None else unpack_uint64(value)

    # -- queries (in the caller's read transaction) -------------------------------------------

    # directories (every query that looks a path up): the directories found so far in `txn`
    # (tree.resolve), shared by a batch of queries in one transaction, so files side by side
    # resolve their directory once.

    def stat(self, txn: lmdb.Transaction, path: str, directories: dict[str, tuple[int, int]] | None = None) -> dict:
        path = paths.normalize_path(path)
        return self._with_current_replicas(txn, tree.lookup(txn, self._tables, path, directories).record.stat(path))

    def _with_current_replicas(self, txn: lmdb.Transaction, result: dict) -> dict:
        """A stat whose chunks name the replicas recorded now, not those written to."""
        if "chunks" in result:
            result["chunks"] = replicas.current_chunks(txn, self._tables, result["chunks"])
        return result

    def ls(self, txn: lmdb.Transaction, path: str, recursive: bool = False,
           directories: dict[str, tuple[int, int]] | None = None) -> list[dict]:
        """Stat dicts of a directory's entries in name order; recursive: every node below it,
        depth first, each directory's entries in name order."""
        path = paths.normalize_path(path)
        found = tree.lookup(txn, self._tables, path, directories)
        if not found.record.is_directory:
            raise NotADirectory(f"{path} is a file, not a directory")
        if recursive:
            nodes = tree.walk(txn, self._tables, path, found.inode, found.record)
            next(nodes)  # the directory itself
            return [record.stat(node_path) for node_path, _, record in nodes]
        return [
            tree.load(txn, self._tables, inode).stat(paths.join(path, name))
            for name, inode in tree.children(txn, self._tables, found.inode)
        ]

    def read(self, txn: lmdb.Transaction, path: str, directories: dict[str, tuple[int, int]] | None = None) -> dict:
        """Stat of a file plus "data" for an inline one (a chunked one's stat has its chunks)."""
        path = paths.normalize_path(path)
        record = tree.lookup(txn, self._tables, path, directories).record
        if record.is_directory:
            raise IsADirectory(f"{path} is a directory")
        result = self._with_current_replicas(txn, record.stat(path))
        if record.data is not None:
            result["data"] = record.data
        return result

    def du(self, txn: lmdb.Transaction, path: str, nodes_down: frozenset = frozenset()) -> dict:
        """Totals under path (itself included): logical_bytes adds file sizes; stored_chunk_bytes
        adds each distinct chunk once (deduplicated, before replication); replicated_chunk_bytes
        counts every stored copy, except those on `nodes_down` (the leader's view of nodes that
        do not answer: copies there are not live)."""
        path = paths.normalize_path(path)
        found = tree.lookup(txn, self._tables, path)
        files = directories = logical_bytes = 0
        chunk_sizes: dict[bytes, int] = {}
        chunk_replicas: dict[bytes, set[str]] = {}
        for _, _, record in tree.walk(txn, self._tables, path, found.inode, found.record):
            if record.is_directory:
                directories += 1
                continue
            files += 1
            logical_bytes += record.size
            for chunk_id, size, nodes in replicas.current_chunks(txn, self._tables, record.chunk_list()):
                chunk_sizes[chunk_id] = size
                # Replicas as recorded now (repairs included), on nodes not known to be down.
                chunk_replicas.setdefault(chunk_id, set()).update(set(nodes) - nodes_down)
        return {"files": files, "dirs": directories, "logical_bytes": logical_bytes,
                "stored_chunk_bytes": sum(chunk_sizes.values()),
                "replicated_chunk_bytes": sum(size * len(chunk_replicas[chunk_id])
                                              for chunk_id, size in chunk_sizes.items())}

    def chunk_replicas(self, txn: lmdb.Transaction):
        """(chunk id, ChunkReplicas) of every referenced chunk, in id order (repair planning)."""
        return replicas.iterate(txn, self._tables)

    def recorded_replicas(self, txn: lmdb.Transaction, chunk_id: bytes):
        """The chunk's ChunkReplicas, or None if no file references it."""
        return replicas.get(txn, self._tables, chunk_id)

    def replica_recorded(self, txn: lmdb.Transaction, chunk_id: bytes, node: str) -> bool:
        known = replicas.get(txn, self._tables, chunk_id)
        return known is not None and node in known.nodes

    def files_under(self, txn: lmdb.Transaction, path: str):
        """(path, size, chunk list with current replicas) of every file at or below path, depth
        first (fsck); an inline file has no chunks."""
        path = paths.normalize_path(path)
        found = tree.lookup(txn, self._tables, path)
        for node_path, _, record in tree.walk(txn, self._tables, path, found.inode, found.record):
            if not record.is_directory:
                yield node_path, record.size, replicas.current_chunks(txn, self._tables, record.chunk_list())

    def referenced_chunk_ids(self, txn: lmdb.Transaction) -> set[bytes]:
        return chunk_refs.referenced(txn, self._tables)

    def session_result(self, txn: lmdb.Transaction, client: str, seq: int) -> dict | None:
        """The stored result of (client, seq) if it was the client's last applied write."""
        session = self._sessions.get(txn, client)
        if session is None or session.last_seq != seq:
            return None
        return session.result()

    def entry_count(self, txn: lmdb.Transaction) -> int:
        """Files and directories, the root not counted."""
        return txn.stat(self._tables.inodes)["entries"] - 1

    # -- snapshots ----------------------------------------------------------------------------

    def snapshot_data(self, txn: lmdb.Transaction) -> bytes:
        self.finish(txn)  # (a snapshot reads committed state: nothing is left to finish there)
        return image.snapshot_data(txn, self._tables)

    def restore(self, txn: lmdb.Transaction, data: bytes) -> None:
        self._memo = _TransactionMemo(None)  # what it left to finish is replaced as well
        image.restore(txn, self._tables, data)

    def digest(self, txn: lmdb.Transaction) -> str:
        self.finish(txn)
        return image.digest(txn, self._tables)


def _error_result(error: SandStoreError) -> dict:
    return {"ok": False, "error": {"code": error.code, "message": str(error)}}
