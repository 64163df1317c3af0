"""Operating errors of a node and of its clients, named once, each with its wire code.

Error codes cross the wire in client replies; sandctl maps each to a documented exit status.
"""

from __future__ import annotations


class SandStoreError(Exception):
    """Base of every operating error. `code` is the wire code sent to clients."""

    code = "INTERNAL"
    retryable = False


class ConfigError(SandStoreError):
    """The config file or a setting is invalid; the message names the key."""

    code = "CONFIG"


class InvalidPath(SandStoreError):
    """A path is not absolute, has empty or '.'/'..' components, or is too long."""

    code = "INVALID_PATH"


class NotFound(SandStoreError):
    """The path (or a parent of it) does not exist."""

    code = "NOT_FOUND"


class AlreadyExists(SandStoreError):
    """Something already exists at the path."""

    code = "EXISTS"


class NotADirectory(SandStoreError):
    """A directory was needed (as a parent, or for ls) but the path is a file."""

    code = "NOT_A_DIRECTORY"


class IsADirectory(SandStoreError):
    """A file was needed but the path is a directory."""

    code = "IS_A_DIRECTORY"


class NotEmpty(SandStoreError):
    """rm of a non-empty directory without recursive."""

    code = "NOT_EMPTY"


class TooLarge(SandStoreError):
    """Content larger than a limit (inline_bytes_max, frame_bytes_max)."""

    code = "TOO_LARGE"


class BadRequest(SandStoreError):
    """A request that is malformed: unknown op or field, wrong type, bad version."""

    code = "BAD_REQUEST"


class Stale(SandStoreError):
    """A write whose seq is older than the last one its client had applied: a newer request
    of this client was already applied, so this one never will be."""

    code = "STALE"


class Refused(SandStoreError):
    """A valid request the cluster will not do now, nothing changed (e.g. a membership change
    while another is pending, transfer to a learner)."""

    code = "REFUSED"


class NotLeader(SandStoreError):
    """This node cannot serve the request; `leader` names the node that can, if known."""

    code = "NOT_LEADER"
    retryable = True

    def __init__(self, message: str = "not the leader", leader: str = "") -> None:
        super().__init__(message)
        self.leader = leader


class NoLeader(SandStoreError):
    """No leader is known right now (election under way or no quorum). Retry later."""

    code = "NO_LEADER"
    retryable = True


class Unavailable(SandStoreError):
    """No node of the cluster answered before the deadline; nothing was changed."""

    code = "UNAVAILABLE"
    retryable = True


class TimedOut(SandStoreError):
    """A write was sent but its outcome is unknown: it may or may not have been applied."""

    code = "TIMEOUT"


class StoreFull(SandStoreError):
    """The node's LMDB map or disk is full; the write was refused, the store is intact."""

    code = "STORE_FULL"


class ChecksumMismatch(SandStoreError):
    """Chunk content does not hash to its id."""

    code = "CHECKSUM"


ERRORS_BY_CODE: dict[str, type[SandStoreError]] = {
    cls.code: cls
    for cls in (
        SandStoreError, ConfigError, InvalidPath, NotFound, AlreadyExists, NotADirectory,
        IsADirectory, NotEmpty, TooLarge, BadRequest, Stale, Refused, NotLeader, NoLeader,
        Unavailable, TimedOut, StoreFull, ChecksumMismatch,
    )
}


def error_from_code(code: str, message: str, leader: str = "") -> SandStoreError:
    """Rebuild a named exception from a wire reply (unknown codes become SandStoreError)."""
    cls = ERRORS_BY_CODE.get(code, SandStoreError)
    if cls is NotLeader:
        return NotLeader(message, leader)
    error = cls(message)
    if cls is SandStoreError:
        error.code = code
    return error
