"""Named errors of the trust boundary. Each is an operating error: a bad keys directory, a
refused request, a peer of another cluster. None of them ends a node that is already serving."""

from __future__ import annotations

from node.errors import ConfigError, Refused


class KeysError(ConfigError):
    """The keys directory is missing, unreadable, of another cluster, or has a file of the wrong
    shape or permissions. The message names the file and says what to do."""


class Unauthorized(Refused):
    """An authenticated principal asked for an op its role does not allow (a read-write key
    asking for gc). Sent with the REFUSED wire code, so `sandctl` exits 1, nothing changed."""
