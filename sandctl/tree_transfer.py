"""Local files and whole directory trees to and from the store (`put -r`, `get`, `get -r`),
streamed one file at a time, under the overwrite policy of sandctl/remote_files.py.

A tree transfer first compares both sides and refuses (without -f) before moving any byte,
so a refused `put -r` or `get -r` changes nothing. Each local file is written to a temporary
file next to its target and renamed (or, without -f, hard-linked) into place: a reader never
sees half a file, a failed get leaves none, and an existing file is never clobbered by a race.
"""

from __future__ import annotations

import asyncio
import os
import posixpath
import stat as stat_module
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Protocol

from node.errors import AlreadyExists, IsADirectory, NotADirectory

from sandctl.async_client import AsyncClient, run as run_async
from sandctl.client import Client
from sandctl.errors import LocalFileError, LocalFileNotFound
from sandctl.remote_files import Overwrite, exists_message, remote_type, walk

Progress = Callable[[int], None]


class TreeProgress(Protocol):
    """Progress of a whole tree transfer: begin(total bytes) once the tree is known, then a
    call with the byte count of each piece moved."""

    def begin(self, total_bytes: int) -> None: ...

    def __call__(self, count: int) -> None: ...


# Small (inline) files of a tree travel this many at a time, each in one request: the leader
# commits them in shared batches instead of one consensus round after another. Memory stays
# within this many times inline_bytes_max.
SMALL_FILES_IN_FLIGHT_MAX = 32


@dataclass
class TransferSummary:
    """What a put/get of a tree did."""

    source: str
    target: str
    files: int = 0
    directories: int = 0
    bytes: int = 0
    skipped: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def count_file(self, size_bytes: int, progress: "Progress | None" = None) -> None:
        """One file transferred (and its bytes announced to the progress, if any)."""
        self.files += 1
        self.bytes += size_bytes
        if progress is not None and size_bytes:
            progress(size_bytes)

    def as_dict(self) -> dict:
        return {"source": self.source, "target": self.target, "files": self.files, "dirs": self.directories,
                "bytes": self.bytes, "skipped": len(self.skipped), "seconds": round(self.seconds, 3)}


@dataclass(frozen=True)
class LocalFile:
    relative: str  # posix path below the tree's root
    size: int
    mode: int


def open_local(local: str | os.PathLike):
    """The local file opened for reading; LocalFileNotFound (exit 5) or LocalFileError (exit 1)."""
    try:
        if os.path.isdir(local):
            raise LocalFileError(f"{local} is a directory (use put -r)")
        return open(local, "rb")
    except FileNotFoundError:
        raise LocalFileNotFound(f"{local}: no such local file") from None
    except PermissionError:
        raise LocalFileError(f"{local}: permission denied") from None
    except OSError as error:
        raise LocalFileError(f"{local}: {error.strerror}") from None


def scan_local_tree(root: Path) -> tuple[list[str], list[LocalFile]]:
    """(directories, files) below root, relative posix paths in a stable (sorted) order;
    directories before what they contain."""
    if not root.exists():
        raise LocalFileNotFound(f"{root}: no such local directory")
    directories: list[str] = []
    files: list[LocalFile] = []

    def failed(error: OSError) -> None:
        raise LocalFileError(f"{error.filename}: {error.strerror}")

    for directory, subdirectories, names in os.walk(root, onerror=failed):
        subdirectories.sort()
        relative = Path(directory).relative_to(root).as_posix()
        prefix = "" if relative == "." else relative + "/"
        if prefix:
            directories.append(relative)
        for name in sorted(names):
            path = Path(directory) / name
            info = path.stat()
            if not stat_module.S_ISREG(info.st_mode):
                raise LocalFileError(f"{path} is not a regular file; put -r stores files and directories only")
            files.append(LocalFile(prefix + name, info.st_size, info.st_mode & 0o777))
    return directories, files


def put_tree(client: Client, local_root: Path, remote: str, policy: Overwrite,
             progress: TreeProgress | None = None) -> TransferSummary:
    """Store the local directory tree at remote (inside it, under the local name, if remote
    is an existing directory or ends in /)."""
    started = time.monotonic()
    directories, files = scan_local_tree(local_root)
    name = local_root.resolve().name
    root = posixpath.join(remote, name) if remote.endswith("/") or remote_type(client, remote) == "dir" else remote
    summary = TransferSummary(str(local_root), root)
    existing = {entry["path"]: entry.get("type") for entry in _remote_tree(client, root)}
    for directory in directories:
        path = posixpath.join(root, directory)
        if existing.get(path) == "file":
            raise NotADirectory(f"{path} is a file; the local {directory} is a directory")
    present = []
    for file in files:
        path = posixpath.join(root, file.relative)
        if existing.get(path) == "dir":
            raise IsADirectory(f"{path} is a directory; the local {file.relative} is a file")
        if path in existing:
            present.append(path)
    if present and policy is Overwrite.REFUSE:
        raise AlreadyExists(_conflict_message(present, len(files)))
    if progress is not None:
        progress.begin(sum(file.size for file in files if policy is not Overwrite.SKIP
                           or posixpath.join(root, file.relative) not in existing))
    if root not in existing:
        client.mkdir(root)
        summary.directories += 1
    for directory in directories:
        path = posixpath.join(root, directory)
        if path not in existing:
            client.mkdir(path)
            summary.directories += 1
    skip = set(present) if policy is Overwrite.SKIP else set()
    summary.skipped.extend(posixpath.join(root, f.relative) for f in files if posixpath.join(root, f.relative) in skip)
    wanted = [file for file in files if posixpath.join(root, file.relative) not in skip]
    small = [file for file in wanted if file.size <= client.config.inline_bytes_max]
    large = [file for file in wanted if file.size > client.config.inline_bytes_max]
    grown = run_async(_put_small_files(client, local_root, root, small, policy, progress, summary))
    for file in large + grown:
        path = posixpath.join(root, file.relative)
        with open_local(local_root / file.relative) as reader:
            try:
                client.put_file(path, reader, size_hint=file.size, mode=file.mode, progress=progress,
                                overwrite=policy is Overwrite.FORCE)
            except AlreadyExists:
                if policy is not Overwrite.SKIP:  # created by someone else meanwhile
                    raise
                summary.skipped.append(path)
                continue
        summary.count_file(file.size)
    summary.seconds = time.monotonic() - started
    return summary


def _remote_tree(client: Client, root: str) -> list[dict]:
    if remote_type(client, root) is None:
        return []
    return walk(client, root)


def _conflict_message(present: list[str], total: int) -> str:
    if len(present) == 1:
        return exists_message(present[0])
    return (f"{len(present)} of {total} files already exist, e.g. {present[0]} "
            "(use -f to overwrite them, -n to skip them); nothing was transferred")


def _async_client(client: Client) -> AsyncClient:
    return AsyncClient(client.config, timeout_seconds=client.timeout_seconds,
                       unreachable_seconds=client.unreachable_seconds, security=client.security)


async def _in_flight(jobs: list, work) -> None:
    """Run `await work(job)` for every job, SMALL_FILES_IN_FLIGHT_MAX at a time; the first
    failure cancels the rest and is raised as itself."""
    pending = iter(jobs)

    async def worker() -> None:
        for job in pending:  # one shared iterator: each job is taken once
            await work(job)

    try:
        async with asyncio.TaskGroup() as group:
            for _ in range(min(SMALL_FILES_IN_FLIGHT_MAX, len(jobs))):
                group.create_task(worker())
    except BaseExceptionGroup as errors:
        raise errors.exceptions[0] from None


async def _put_small_files(client: Client, local_root: Path, root: str, files: list[LocalFile], policy: Overwrite,
                           progress: Progress | None, summary: TransferSummary) -> list[LocalFile]:
    """Store the small files, many in flight; returns those that have grown past inline size
    since the scan (the caller streams them)."""
    grown: list[LocalFile] = []
    if not files:
        return grown
    inline_bytes_max = client.config.inline_bytes_max

    async def store(file: LocalFile) -> None:
        path = posixpath.join(root, file.relative)
        with open_local(local_root / file.relative) as reader:
            data = reader.read(inline_bytes_max + 1)
        if len(data) > inline_bytes_max:
            grown.append(file)
            return
        try:
            await async_client.write_file(path, data, file.mode, overwrite=policy is Overwrite.FORCE)
        except AlreadyExists:
            if policy is not Overwrite.SKIP:  # created by someone else since the comparison
                raise
            summary.skipped.append(path)
            return
        summary.count_file(len(data), progress)

    async with _async_client(client) as async_client:
        await _in_flight(files, store)
    return grown


async def _get_small_files(client: Client, entries: list[tuple[dict, Path]], policy: Overwrite,
                           progress: Progress | None, stale: bool, summary: TransferSummary) -> None:
    """Copy the inline files, many in flight, each to its local path under the policy."""
    if not entries:
        return

    async def fetch(job: tuple[dict, Path]) -> None:
        entry, target = job
        info, data = await async_client.read(entry["path"], stale=stale)

        def fill(file) -> dict:
            file.write(data)
            return info

        if _place_local(target, policy, fill) is None:
            summary.skipped.append(str(target))
            return
        summary.count_file(len(data), progress)

    async with _async_client(client) as async_client:
        await _in_flight(entries, fetch)


def get_tree(client: Client, remote: str, local: Path, policy: Overwrite, progress: TreeProgress | None = None,
             stale: bool = False) -> TransferSummary:
    """Copy the remote directory tree to local (inside it, under the remote name, if local
    is an existing directory)."""
    started = time.monotonic()
    entries = walk(client, remote, stale=stale)
    if entries[0].get("type") != "dir":
        raise NotADirectory(f"{remote} is a file (get it without -r)")
    root = local / (posixpath.basename(remote.rstrip("/")) or "root") if local.is_dir() else local
    if not root.parent.is_dir():
        raise LocalFileNotFound(f"local directory {root.parent} does not exist")
    summary = TransferSummary(remote, str(root))
    base = entries[0]["path"].rstrip("/")
    directories = [entry for entry in entries if entry.get("type") == "dir"]
    files = [entry for entry in entries if entry.get("type") != "dir"]

    def local_path(entry: dict) -> Path:
        relative = entry["path"][len(base):].lstrip("/")
        return root / relative if relative else root

    for entry in directories:
        path = local_path(entry)
        if path.exists() and not path.is_dir():
            raise LocalFileError(f"local {path} is a file; {entry['path']} is a directory")
    present = []
    for entry in files:
        path = local_path(entry)
        if path.is_dir():
            raise LocalFileError(f"local {path} is a directory; {entry['path']} is a file")
        if path.exists():
            present.append(str(path))
    if present and policy is Overwrite.REFUSE:
        raise AlreadyExists(_conflict_message(present, len(files)))
    if progress is not None:
        skipped = set(present) if policy is Overwrite.SKIP else set()
        progress.begin(sum(entry.get("size", 0) for entry in files if str(local_path(entry)) not in skipped))
    for entry in directories:
        path = local_path(entry)
        if not path.is_dir():
            _make_local_directory(path)
            summary.directories += 1
    small = [(entry, local_path(entry)) for entry in files if entry.get("inline")]
    run_async(_get_small_files(client, small, policy, progress, stale, summary))
    for entry in files:
        if entry.get("inline"):
            continue
        path = local_path(entry)
        if get_to_local(client, entry["path"], path, policy, progress, stale) is None:
            summary.skipped.append(str(path))
            continue
        summary.count_file(entry.get("size", 0))
    summary.seconds = time.monotonic() - started
    return summary


def _make_local_directory(path: Path) -> None:
    try:
        path.mkdir()
    except PermissionError:
        raise LocalFileError(f"{path.parent}: permission denied") from None
    except FileExistsError:
        if not path.is_dir():
            raise LocalFileError(f"local {path} exists and is not a directory") from None


def get_to_local(client: Client, remote: str, target: Path, policy: Overwrite, progress: Progress | None,
                 stale: bool) -> dict | None:
    """Copy one remote file to target under the policy; its stat, or None if skipped (-n)."""
    return _place_local(target, policy, lambda file: client.get_file(remote, file, progress=progress, stale=stale))


def _place_local(target: Path, policy: Overwrite, fill: Callable) -> dict | None:
    """Write a local file at target under the policy: fill(file) writes the content into a
    temporary file next to it and returns the stat; None if skipped (-n)."""
    if target.exists():
        if target.is_dir():
            raise LocalFileError(f"local {target} is a directory")
        if policy is Overwrite.SKIP:
            return None
        if policy is Overwrite.REFUSE:
            raise AlreadyExists(exists_message(str(target), "local file "))
    # A temp file in the same directory, then rename (or link): a reader never sees half a
    # file, and a failed get leaves no file at all.
    try:
        file = tempfile.NamedTemporaryFile(dir=target.parent, prefix=f".{target.name}.", suffix=".part",
                                           delete=False)
    except PermissionError:
        raise LocalFileError(f"{target.parent}: permission denied") from None
    temporary = Path(file.name)
    try:
        with file:
            info = fill(file)
            file.flush()
            os.fsync(file.fileno())
        os.chmod(temporary, info.get("mode", 0o644) & 0o777)
        if policy is Overwrite.FORCE:
            os.replace(temporary, target)
        else:
            _link_new(temporary, target, policy)
            if policy is Overwrite.SKIP and not _same_file(temporary, target):
                return None
    finally:
        temporary.unlink(missing_ok=True)
    return info


def _link_new(temporary: Path, target: Path, policy: Overwrite) -> None:
    """Put temporary at target only if nothing is there (link fails atomically if it is)."""
    try:
        os.link(temporary, target)
    except FileExistsError:
        if policy is Overwrite.REFUSE:
            raise AlreadyExists(exists_message(str(target), "local file ")) from None
    except OSError:
        # A file system without hard links: the check above is the best that can be done.
        if target.exists():
            if policy is Overwrite.REFUSE:
                raise AlreadyExists(exists_message(str(target), "local file ")) from None
            return
        os.replace(temporary, target)


def _same_file(first: Path, second: Path) -> bool:
    try:
        return os.path.samefile(first, second)
    except FileNotFoundError:
        return True  # replaced into place (no hard links): it is ours
