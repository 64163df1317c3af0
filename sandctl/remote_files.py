"""File operations the CLI offers on top of the public Client API: overwrite policy, copies
inside the store, the start or end of a file, walking a tree.

Overwrite policy (the same for put, get, cp and mv, as in `hdfs dfs`): an existing target is
refused unless -f; -n skips it silently. A directory is never replaced by a file.
"""

from __future__ import annotations

import enum
import fnmatch
import posixpath
from collections import deque
from typing import BinaryIO

from node.errors import AlreadyExists, InvalidPath, IsADirectory, NotADirectory, NotFound

from sandctl.client import Client

TAIL_BUFFER_BYTES_MAX = 64 << 20  # tail -n keeps at most this much of a file without newlines


class Overwrite(enum.Enum):
    REFUSE = "refuse"  # the default: an existing target is an error (exit 1), nothing changes
    FORCE = "force"  # -f: replace it
    SKIP = "skip"  # -n: leave it, say nothing, exit 0


def overwrite_policy(force: bool, no_clobber: bool) -> Overwrite:
    assert not (force and no_clobber), "the CLI refuses -f with -n"
    return Overwrite.FORCE if force else Overwrite.SKIP if no_clobber else Overwrite.REFUSE


def exists_message(target: str, where: str = "") -> str:
    return f"{where}{target} already exists (use -f to overwrite it, -n to skip it)"


def remote_type(client: Client, path: str, stale: bool = False) -> str | None:
    """"file", "dir", or None if nothing is at path."""
    try:
        return client.stat(path, stale=stale).get("type")
    except NotFound:
        return None


def placement(destination: str, name: str) -> dict:
    """Where a source called `name` lands, as write arguments: inside `destination` if it ends
    in / (it must be a directory) or is an existing directory (decided by the write itself,
    atomically, through into_directory), else at destination."""
    if destination.endswith("/"):
        return {"path": posixpath.join(destination, name)}
    return {"path": destination, "into_directory": name}


def landed_path(client: Client, destination: str, name: str) -> str:
    """Where placement(destination, name) puts a file now (for reporting a skipped one)."""
    if destination.endswith("/") or remote_type(client, destination) == "dir":
        return posixpath.join(destination, name)
    return destination


def put_file_checked(client: Client, path: str, reader: BinaryIO, policy: Overwrite, **put_arguments) -> dict | None:
    """put_file under the overwrite policy (decided atomically by the write); None if skipped."""
    try:
        return client.put_file(path, reader, **put_arguments, overwrite=policy is Overwrite.FORCE)
    except AlreadyExists:
        if policy is Overwrite.SKIP:
            return None
        raise


def copy_record(client: Client, source: str, arguments: dict, policy: Overwrite) -> dict | None:
    """Copy a file inside the store: a new file record with the same content. Chunks are
    content-addressed, so the copy references the source's chunks (no chunk is read or
    stored again); an inline file's bytes travel once in the new record. `arguments` holds
    the target (path, and into_directory). None if skipped (-n)."""
    record = dict(client.call("read", {"path": source}))
    if record.get("type") == "dir":
        raise IsADirectory(f"{source} is a directory (use cp -r)")
    arguments = {**arguments, "size": record["size"], "mode": record.get("mode", 0o644),
                 "overwrite": policy is Overwrite.FORCE}
    if record.get("data") is not None:
        arguments["data"] = record["data"]
    else:
        arguments["chunks"] = record.get("chunks") or []
    try:
        return client.call("write_file", arguments)
    except AlreadyExists:
        if policy is Overwrite.SKIP:
            return None
        raise


def walk(client: Client, path: str, stale: bool = False) -> list[dict]:
    """The stat of path and, for a directory, of everything below it (depth first)."""
    top = client.stat(path, stale=stale)
    if top.get("type") != "dir":
        return [top]
    return [top] + client.ls(path, recursive=True, stale=stale)


def find(entries: list[dict], name_glob: str | None, kind: str | None) -> list[dict]:
    """Entries whose base name matches the glob (fnmatch, like find -name) and type."""
    wanted = {"f": "file", "d": "dir", None: None}[kind]
    return [entry for entry in entries
            if (name_glob is None or fnmatch.fnmatchcase(posixpath.basename(entry["path"]) or "/", name_glob))
            and (wanted is None or entry.get("type") == wanted)]


class Enough(Exception):
    """Raised by a writer that has all it wants: ends a transfer early."""


class HeadWriter:
    """Passes the first `count` lines (or bytes) to `output`, then raises Enough."""

    def __init__(self, output: BinaryIO, count: int, by_lines: bool) -> None:
        assert count >= 0
        self._output = output
        self._remaining = count
        self._by_lines = by_lines
        if count == 0:
            raise Enough()

    def write(self, data) -> int:
        data = bytes(data)
        if self._by_lines:
            end = 0
            while self._remaining > 0:
                newline = data.find(b"\n", end)
                if newline < 0:
                    end = len(data)
                    break
                end = newline + 1
                self._remaining -= 1
        else:
            end = min(len(data), self._remaining)
            self._remaining -= end
        self._output.write(data[:end])
        if self._remaining <= 0:
            raise Enough()
        return len(data)

    def flush(self) -> None:
        self._output.flush()


class TailBuffer:
    """Keeps the last `count` lines (or bytes) of what is written, in bounded memory."""

    def __init__(self, count: int, by_lines: bool) -> None:
        assert count >= 0
        self._count = count
        self._by_lines = by_lines
        self._pieces: deque[bytes] = deque()
        self._bytes = 0
        self._newlines = 0

    def write(self, data) -> int:
        data = bytes(data)
        if data:
            self._pieces.append(data)
            self._bytes += len(data)
            self._newlines += data.count(b"\n")
            self._trim()
        return len(data)

    def flush(self) -> None:
        pass

    def _trim(self) -> None:
        # Drop whole pieces while what remains still holds enough; value() cuts the rest.
        while len(self._pieces) > 1:
            first = self._pieces[0]
            if self._by_lines:
                enough = self._newlines - first.count(b"\n") > self._count
                # A file without newlines: keep memory bounded, lose the start of that long line.
                too_big = self._bytes > TAIL_BUFFER_BYTES_MAX
            else:
                enough = self._bytes - len(first) >= self._count
                too_big = False
            if not (enough or too_big):
                return
            self._pieces.popleft()
            self._bytes -= len(first)
            self._newlines -= first.count(b"\n")

    def value(self) -> bytes:
        data = b"".join(self._pieces)
        if not self._by_lines:
            return data[len(data) - self._count:] if self._count else b""
        if self._count == 0:
            return b""
        # The last `count` lines; a final line without a newline counts as a line.
        end = len(data) - 1 if data.endswith(b"\n") else len(data)
        start = end
        for _ in range(self._count):
            start = data.rfind(b"\n", 0, start)
            if start < 0:
                return data
        return data[start + 1:]


def read_head(client: Client, path: str, output: BinaryIO, count: int, by_lines: bool, stale: bool = False) -> None:
    """Write the first count lines/bytes of a remote file; stops fetching once it has them."""
    try:
        writer = HeadWriter(output, count, by_lines)
    except Enough:
        client.stat(path, stale=stale)  # still an error for a missing path
        return
    try:
        client.get_file(path, writer, stale=stale)
    except Enough:
        pass


def read_tail(client: Client, path: str, count: int, by_lines: bool, stale: bool = False) -> bytes:
    """The last count lines/bytes of a remote file (the file is streamed through a bounded buffer)."""
    buffer = TailBuffer(count, by_lines)
    client.get_file(path, buffer, stale=stale)
    return buffer.value()


def copy_tree(client: Client, source: str, target: str, policy: Overwrite) -> dict:
    """Copy the directory tree at source to target (created) inside the store, file records
    only (see copy_record). Every conflict is found before anything is copied."""
    if target == source or target.startswith(source.rstrip("/") + "/"):
        raise InvalidPath(f"cannot copy directory {source} into itself ({target})")
    entries = walk(client, source)
    existing = {entry["path"]: entry.get("type") for entry in
                (walk(client, target) if remote_type(client, target) is not None else [])}

    def moved(path: str) -> str:
        return target + path[len(source.rstrip("/")):]

    present = []
    for entry in entries:
        path = moved(entry["path"])
        if entry.get("type") == "dir" and existing.get(path) == "file":
            raise NotADirectory(f"{path} is a file; {entry['path']} is a directory")
        if entry.get("type") != "dir" and existing.get(path) == "dir":
            raise IsADirectory(f"{path} is a directory; {entry['path']} is a file")
        if entry.get("type") != "dir" and path in existing:
            present.append(path)
    if present and policy is Overwrite.REFUSE:
        raise AlreadyExists(exists_message(present[0]) if len(present) == 1 else
                            f"{len(present)} files already exist, e.g. {present[0]} "
                            "(use -f to overwrite them, -n to skip them); nothing was copied")
    copied = {"source": source, "target": target, "files": 0, "dirs": 0, "skipped": 0}
    for entry in entries:
        path = moved(entry["path"])
        if entry.get("type") == "dir":
            if path not in existing:
                client.mkdir(path)
                copied["dirs"] += 1
        elif (path in existing and policy is Overwrite.SKIP) or \
                copy_record(client, entry["path"], {"path": path}, policy) is None:
            copied["skipped"] += 1
        else:
            copied["files"] += 1
    return copied
