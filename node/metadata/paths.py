"""File-system paths: one normal form, checked once, so the state machine compares strings.

A normal path is absolute, has no empty, '.' or '..' component and no trailing '/', except
the root, which is '/'. Limits are in UTF-8 bytes, as on Linux.
"""

from __future__ import annotations

from node.errors import InvalidPath
from node.protocol import PATH_BYTES_MAX

ROOT = "/"
NAME_BYTES_MAX = 255

assert NAME_BYTES_MAX < PATH_BYTES_MAX


def normalize_path(path: str) -> str:
    """The normal form of `path`, or InvalidPath with a sentence saying what is wrong."""
    if _is_plainly_normal(path):
        return path  # the usual case: every path in a log entry was normalised by its proposer
    return _normalized(path)


def _normalized(path: object) -> str:
    if not isinstance(path, str):
        raise InvalidPath(f"a path must be a string, got {type(path).__name__}")
    if "\0" in path:
        raise InvalidPath("a path must not contain a NUL byte")
    # Every request and every applied log entry passes here: for ASCII text (the usual case)
    # the length in characters is the length in UTF-8 bytes, so nothing needs encoding.
    ascii_only = path.isascii()
    try:
        path_bytes = len(path) if ascii_only else len(path.encode("utf-8"))
    except UnicodeEncodeError:
        raise InvalidPath("a path must be valid UTF-8 text") from None
    if path_bytes > PATH_BYTES_MAX:
        raise InvalidPath(f"path is {path_bytes} bytes long, the limit is {PATH_BYTES_MAX}")
    if not path.startswith("/"):
        raise InvalidPath(f"path {path!r} must be absolute (start with '/')")
    names = [name for name in path.split("/") if name]
    for name in names:
        if name in (".", ".."):
            raise InvalidPath(f"path {path!r} must not contain '.' or '..' components")
        name_bytes = len(name) if ascii_only else len(name.encode("utf-8"))
        if name_bytes > NAME_BYTES_MAX:
            raise InvalidPath(f"name {name[:32]!r}... is {name_bytes} bytes long, the limit is {NAME_BYTES_MAX}")
    return ROOT + "/".join(names)


def _is_plainly_normal(path: object) -> bool:
    """A cheap test that is True only for a normal path: ASCII (so characters are bytes),
    within the limits, absolute, no empty component, no trailing '/', no NUL and no component
    starting with '.' (so no '.' or '..'; other such names take the full check)."""
    return (type(path) is str and path.isascii() and path[:1] == "/" and len(path) <= PATH_BYTES_MAX
            and "//" not in path and "/." not in path and "\0" not in path and (path == ROOT or path[-1] != "/")
            and (len(path) <= NAME_BYTES_MAX or max(map(len, path.split("/"))) <= NAME_BYTES_MAX))


def file_name(name: str) -> str:
    """`name` if it is one valid path component (a file name, no '/'), else InvalidPath."""
    if not isinstance(name, str) or not name or "/" in name:
        raise InvalidPath(f"{name!r} is not a file name (one non-empty path component without '/')")
    normalize_path(ROOT + name)  # the same rules as a component of any path
    return name


def components(path: str) -> list[str]:
    """The names along a normal path from the root ([] for the root)."""
    assert _is_normal(path), path
    return [] if path == ROOT else path[1:].split("/")


def parent_of(path: str) -> str:
    assert _is_normal(path), path
    assert path != ROOT, "the root has no parent"
    parent = path.rsplit("/", 1)[0]
    return parent or ROOT


def base_name(path: str) -> str:
    assert _is_normal(path), path
    assert path != ROOT, "the root has no name"
    return path.rsplit("/", 1)[1]


def join(directory: str, name: str) -> str:
    assert _is_normal(directory), directory
    assert name and "/" not in name, name
    return directory + name if directory == ROOT else directory + "/" + name


def is_within(path: str, ancestor: str) -> bool:
    """True when `path` is `ancestor` itself or lies in its subtree."""
    assert _is_normal(path), path
    assert _is_normal(ancestor), ancestor
    if ancestor == ROOT:
        return True
    return path == ancestor or path.startswith(ancestor + "/")


def _is_normal(path: str) -> bool:
    # Asserted on every path an applied write resolves: a slice and an index compare cost
    # about half of startswith/endswith calls (method calls).
    return type(path) is str and path[:1] == "/" and "//" not in path and (path[-1] != "/" or path == ROOT)
