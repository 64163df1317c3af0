"""Operating errors that only the client side raises, and the one table of exit statuses.

Cluster errors come from node/errors.py (rebuilt from wire codes). The errors here are about
the local machine: files a user named and the local supervisor's processes.
"""

from __future__ import annotations

from node.errors import NotFound, SandStoreError

EXIT_OK = 0
EXIT_REFUSED = 1  # refused, nothing changed (also local file errors and config errors)
EXIT_USAGE = 2  # click's own status for usage errors
EXIT_UNAVAILABLE = 3  # cluster unavailable or no leader, nothing changed
EXIT_TIMED_OUT = 4  # a write was sent, its outcome is unknown
EXIT_NOT_FOUND = 5  # the path (remote or local) does not exist

# Codes not listed here (EXISTS, NOT_A_DIRECTORY, INVALID_PATH, REFUSED, CONFIG, ...) mean
# "refused, nothing changed" and exit with EXIT_REFUSED.
EXIT_STATUS_BY_CODE: dict[str, int] = {
    "UNAVAILABLE": EXIT_UNAVAILABLE,
    "NO_LEADER": EXIT_UNAVAILABLE,
    "NOT_LEADER": EXIT_UNAVAILABLE,
    "TIMEOUT": EXIT_TIMED_OUT,
    "NOT_FOUND": EXIT_NOT_FOUND,
}


def exit_status(error: SandStoreError) -> int:
    return EXIT_STATUS_BY_CODE.get(error.code, EXIT_REFUSED)


class LocalFileNotFound(NotFound):
    """A local file or directory named on the command line does not exist."""


class LocalFileError(SandStoreError):
    """A local file exists but cannot be read or written (permissions, a directory, disk full)."""

    code = "LOCAL_FILE"


class NotRunning(SandStoreError):
    """The supervisor was asked to stop or kill a node that has no live recorded process."""

    code = "NOT_RUNNING"


class AlreadyRunning(SandStoreError):
    """The supervisor was asked to start a node whose recorded process is still alive."""

    code = "ALREADY_RUNNING"


class NodeExited(SandStoreError):
    """A node process the supervisor started exited on its own (bad config, port in use...)."""

    code = "NODE_EXITED"
