"""The keys directory: this cluster's id and every CurveZMQ key it knows.

Where: `<cluster data dir>/keys` (beside the node directories, e.g.
~/.sandstore/data/local-3/keys), or $SANDSTORE_KEYS_DIR. The data directory, not the config
directory: the config is shared and often in version control; keys are per installation and
secret. A node on another machine gets a copy of this directory holding its own secret and
every public file (other nodes' secrets need not be copied).

    keys/                  0700
      cluster.toml         cluster_id (random, made once at bootstrap; not secret)
      nodes/n1.toml        public key of node n1 (shareable)
      nodes/n1.secret      0600: n1's secret key
      clients/admin.toml   public key and role (read-write or admin) of client "admin"
      clients/admin.secret 0600

Every file names the cluster id it belongs to; loading a file of another cluster is an error.
Writes are atomic (temporary file, fsync, rename), so a reader sees a whole file or none.
"""

from __future__ import annotations

import logging
import os
import secrets
import stat
import sys
from dataclasses import dataclass
from pathlib import Path

import zmq
from zmq.utils import z85

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

from node.security.authorization import (
    CLIENT_ROLES,
    KIND_CLIENT,
    KIND_NODE,
    ROLE_NODE,
    Principal,
)
from node.security.errors import KeysError
from node.names import is_valid_node_id

log = logging.getLogger(__name__)

KEYS_DIR_NAME = "keys"
KEYS_DIR_ENVIRONMENT_VARIABLE = "SANDSTORE_KEYS_DIR"
CLUSTER_FILE_NAME = "cluster.toml"
SUBDIRECTORY_BY_KIND = {KIND_NODE: "nodes", KIND_CLIENT: "clients"}
PUBLIC_SUFFIX = ".toml"
SECRET_SUFFIX = ".secret"
DIRECTORY_MODE = 0o700
SECRET_FILE_MODE = 0o600
PUBLIC_FILE_MODE = 0o644
CLUSTER_ID_BYTES = 16  # 128 random bits, hex in files
Z85_KEY_CHARACTERS = 40  # a 32-byte Curve25519 key in Z85
KEY_FILE_BYTES_MAX = 4096
KEYS_PER_KIND_MAX = 10_000

assert DIRECTORY_MODE & 0o077 == 0 and SECRET_FILE_MODE & 0o077 == 0


def keys_dir_for(data_dir: str | os.PathLike) -> Path:
    """The keys directory of the cluster whose data directory is `data_dir`
    ($SANDSTORE_KEYS_DIR overrides it, e.g. for a client on another machine)."""
    explicit = os.environ.get(KEYS_DIR_ENVIRONMENT_VARIABLE)
    return Path(explicit) if explicit else Path(data_dir) / KEYS_DIR_NAME


@dataclass(frozen=True)
class KeyPair:
    """A Curve25519 keypair, both halves Z85-encoded (40 ASCII bytes), as ZeroMQ takes them."""

    public_key: bytes
    secret_key: bytes = b""  # empty when only the public half is known

    def __repr__(self) -> str:  # never print a secret into a log or a traceback
        return f"KeyPair(public_key={self.public_key!r}, secret_key={'<hidden>' if self.secret_key else b''})"


def new_keypair() -> KeyPair:
    public_key, secret_key = zmq.curve_keypair()
    return KeyPair(public_key, secret_key)


def new_cluster_id() -> str:
    return secrets.token_hex(CLUSTER_ID_BYTES)


def is_valid_cluster_id(value: object) -> bool:
    return (type(value) is str and len(value) == 2 * CLUSTER_ID_BYTES
            and all(character in "0123456789abcdef" for character in value))


def is_valid_z85_key(value: object) -> bool:
    if type(value) is not str or len(value) != Z85_KEY_CHARACTERS or not value.isascii():
        return False
    try:
        return len(z85.decode(value)) == 32
    except (ValueError, KeyError, IndexError):
        return False


# ----- writing


def _write_atomically(path: Path, text: str, mode: int) -> None:
    """Create `path` with `text`, readable by `mode` only from its first byte (no chmod after)."""
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(descriptor, "w", encoding="ascii") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temporary, mode)  # the umask may have removed bits we asked for; never added
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    _fsync_directory(path.parent)


def _fsync_directory(directory: Path) -> None:
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _make_private_directory(directory: Path) -> None:
    directory.mkdir(mode=DIRECTORY_MODE, parents=True, exist_ok=True)
    os.chmod(directory, DIRECTORY_MODE)


def create_keys_directory(directory: str | os.PathLike, cluster_id: str | None = None) -> str:
    """Create a keys directory for a new cluster and return its cluster id. KeysError if the
    directory already has one (a cluster id is never replaced: it would orphan every key)."""
    directory = Path(directory)
    cluster_file = directory / CLUSTER_FILE_NAME
    if cluster_file.exists():
        raise KeysError(f"{directory} already holds the keys of cluster {read_cluster_id(directory)}")
    cluster_id = cluster_id or new_cluster_id()
    if not is_valid_cluster_id(cluster_id):
        raise KeysError(f"a cluster id is {2 * CLUSTER_ID_BYTES} lowercase hex digits, got {cluster_id!r}")
    _make_private_directory(directory)
    for subdirectory in SUBDIRECTORY_BY_KIND.values():
        _make_private_directory(directory / subdirectory)
    _write_atomically(cluster_file, "# The id of this SandStore cluster: every key file here names it.\n"
                      f'cluster_id = "{cluster_id}"\n', PUBLIC_FILE_MODE)
    return cluster_id


def _key_paths(directory: Path, kind: str, name: str) -> tuple[Path, Path]:
    assert kind in SUBDIRECTORY_BY_KIND, kind
    base = directory / SUBDIRECTORY_BY_KIND[kind]
    return base / (name + PUBLIC_SUFFIX), base / (name + SECRET_SUFFIX)


def _check_name(kind: str, name: object) -> str:
    if not is_valid_node_id(name):
        raise KeysError(f"a {kind} name is 1-64 ASCII letters, digits, - or _, got {name!r}")
    return name


def create_principal(directory: str | os.PathLike, kind: str, name: str, role: str = ROLE_NODE) -> KeyPair:
    """Make and store a new keypair for node `name` (role must be "node") or client `name`
    (role read-write or admin). KeysError if that name already has a key: revoke it first."""
    directory = Path(directory)
    cluster_id = read_cluster_id(directory)
    _check_name(kind, name)
    if kind == KIND_NODE and role != ROLE_NODE:
        raise KeysError(f"node keys have the role {ROLE_NODE!r}, not {role!r}")
    if kind == KIND_CLIENT and role not in CLIENT_ROLES:
        raise KeysError(f"a client role is one of {', '.join(CLIENT_ROLES)}, got {role!r}")
    public_path, secret_path = _key_paths(directory, kind, name)
    if public_path.exists() or secret_path.exists():
        raise KeysError(f"{kind} {name} already has a key in {directory} (revoke it first)")
    keypair = new_keypair()
    header = f'cluster_id = "{cluster_id}"\nkind = "{kind}"\nname = "{name}"\nrole = "{role}"\n'
    public = keypair.public_key.decode("ascii")
    _write_atomically(secret_path, f"# SECRET key of SandStore {kind} {name}: never share or copy it "
                      f"to another machine's\n# keys directory except that {kind}'s own.\n{header}"
                      f'public_key = "{public}"\nsecret_key = "{keypair.secret_key.decode("ascii")}"\n',
                      SECRET_FILE_MODE)
    # The public file last: once it exists every node authorizes the key (on its next reload).
    _write_atomically(public_path, f"# Public key of SandStore {kind} {name}: safe to share.\n{header}"
                      f'public_key = "{public}"\n', PUBLIC_FILE_MODE)
    return keypair


def remove_principal(directory: str | os.PathLike, kind: str, name: str) -> None:
    """Revoke: delete the key's public file (nodes stop authorizing it on their next reload,
    including on connections already open) and its secret. KeysError if there is no such key."""
    directory = Path(directory)
    read_cluster_id(directory)
    _check_name(kind, name)
    public_path, secret_path = _key_paths(directory, kind, name)
    if not public_path.exists() and not secret_path.exists():
        raise KeysError(f"there is no {kind} key named {name} in {directory}")
    public_path.unlink(missing_ok=True)
    secret_path.unlink(missing_ok=True)
    _fsync_directory(public_path.parent)


def check_cluster_identity(stored_cluster_id: str | None, keys_cluster_id: str, data_directory: str) -> str:
    """What a node checks at start: the cluster id its data was made with (kept in its store;
    None on a node's first start, which then stores `keys_cluster_id`) against its keys
    directory's. KeysError when they differ: this data belongs to another cluster."""
    if stored_cluster_id is not None and stored_cluster_id != keys_cluster_id:
        raise KeysError(f"the data in {data_directory} belongs to cluster {stored_cluster_id}, but the keys "
                        f"directory is of cluster {keys_cluster_id}: refusing to start with another cluster's keys")
    return keys_cluster_id


# ----- reading


def _read_toml(path: Path) -> dict:
    try:
        if path.stat().st_size > KEY_FILE_BYTES_MAX:
            raise KeysError(f"{path} is larger than {KEY_FILE_BYTES_MAX} bytes: not a key file")
        return tomllib.loads(path.read_bytes().decode("ascii"))
    except FileNotFoundError:
        raise KeysError(f"{path} does not exist") from None
    except OSError as error:
        raise KeysError(f"cannot read {path}: {error.strerror}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        raise KeysError(f"{path} is not a valid key file: {error}") from None


def read_cluster_id(directory: str | os.PathLike) -> str:
    """The cluster id of a keys directory. KeysError if there is none (no keys created yet)."""
    directory = Path(directory)
    path = directory / CLUSTER_FILE_NAME
    if not path.exists():
        raise KeysError(f"no cluster keys in {directory} (sandctl cluster start creates them for a "
                        f"local cluster; set {KEYS_DIR_ENVIRONMENT_VARIABLE} to use another directory)")
    document = _read_toml(path)
    cluster_id = document.get("cluster_id")
    if set(document) != {"cluster_id"} or not is_valid_cluster_id(cluster_id):
        raise KeysError(f"{path} must hold exactly cluster_id = \"<{2 * CLUSTER_ID_BYTES} hex digits>\"")
    return cluster_id


def _check_private(path: Path, mode_max: int) -> None:
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & ~mode_max:
        raise KeysError(f"{path} has permissions {mode:04o}, must be {mode_max:04o} or tighter "
                        f"(chmod {mode_max:o} {path})")


def _parse_key_file(path: Path, cluster_id: str, kind: str, *, secret: bool) -> tuple[Principal, KeyPair]:
    document = _read_toml(path)
    expected = {"cluster_id", "kind", "name", "role", "public_key"} | ({"secret_key"} if secret else set())
    if set(document) != expected:
        raise KeysError(f"{path} must have exactly the keys {', '.join(sorted(expected))}")
    if document["cluster_id"] != cluster_id:
        raise KeysError(f"{path} is a key of cluster {document['cluster_id']!r}, not of this cluster "
                        f"{cluster_id}: it cannot be used here")
    name = document["name"]
    if document["kind"] != kind or not is_valid_node_id(name) or path.name != name + path.suffix:
        raise KeysError(f"{path} does not describe the {kind} its file name says")
    role = document["role"]
    if (kind == KIND_NODE and role != ROLE_NODE) or (kind == KIND_CLIENT and role not in CLIENT_ROLES):
        raise KeysError(f"{path} has the role {role!r}, invalid for a {kind}")
    public_key = document["public_key"]
    if not is_valid_z85_key(public_key):
        raise KeysError(f"{path} has no valid public_key")
    keypair = KeyPair(public_key.encode("ascii"))
    if secret:
        secret_key = document["secret_key"]
        if not is_valid_z85_key(secret_key) or zmq.curve_public(secret_key.encode("ascii")) != keypair.public_key:
            raise KeysError(f"{path}: secret_key is not the secret half of its public_key")
        keypair = KeyPair(keypair.public_key, secret_key.encode("ascii"))
    return Principal(kind, name, role), keypair


def directory_signature(directory: str | os.PathLike) -> tuple:
    """Changes whenever a key is added, replaced or removed: compared cheaply to decide whether
    to reload. Every key file is written by rename (a new inode) or removed by unlink, so the
    names and inode numbers of each subdirectory's entries say it. Not the directories' mtime
    alone: it has the kernel's coarse clock, and a key added in the same tick as the previous
    load would never be seen."""
    directory = Path(directory)
    signature = []
    for subdirectory in SUBDIRECTORY_BY_KIND.values():
        try:
            with os.scandir(directory / subdirectory) as entries:
                signature.append(tuple(sorted((entry.name, entry.inode()) for entry in entries)))
        except FileNotFoundError:
            signature.append(None)
    return tuple(signature)


class KeyRing:
    """The authorized set of one cluster, read from its keys directory at one moment.

    `principals` maps each authorized Z85 public key to who it is; `node_public_keys` maps each
    node id to its public key (what a connecting DEALER must expect from that node). Immutable
    after load: a reload builds a new KeyRing, and readers swap the reference."""

    def __init__(self, directory: Path, cluster_id: str, principals: dict[bytes, Principal],
                 signature: tuple) -> None:
        self.directory = directory
        self.cluster_id = cluster_id
        self.principals = principals
        self.signature = signature
        self.node_public_keys = {p.name: key for key, p in principals.items() if p.kind == KIND_NODE}
        assert len(self.node_public_keys) == sum(1 for p in principals.values() if p.kind == KIND_NODE)

    @classmethod
    def load(cls, directory: str | os.PathLike) -> "KeyRing":
        """Read every public file. KeysError (one line naming the file) on any bad one: a node
        refuses to start with keys it cannot trust rather than skip some silently."""
        directory = Path(directory)
        cluster_id = read_cluster_id(directory)
        _check_private(directory, 0o755)  # nobody else may add a key file
        signature = directory_signature(directory)
        principals: dict[bytes, Principal] = {}
        for kind, subdirectory in SUBDIRECTORY_BY_KIND.items():
            folder = directory / subdirectory
            if not folder.is_dir():
                continue
            _check_private(folder, 0o755)
            paths = sorted(folder.glob("*" + PUBLIC_SUFFIX))
            if len(paths) > KEYS_PER_KIND_MAX:
                raise KeysError(f"{folder} has more than {KEYS_PER_KIND_MAX} keys")
            for path in paths:
                principal, keypair = _parse_key_file(path, cluster_id, kind, secret=False)
                if keypair.public_key in principals:
                    raise KeysError(f"{path} repeats the public key of {principals[keypair.public_key]}")
                principals[keypair.public_key] = principal
        return cls(directory, cluster_id, principals, signature)

    def reloaded(self) -> "KeyRing | None":
        """A fresh KeyRing if a key was added, replaced or revoked since this one was read,
        else None. A directory that became unusable (a bad file, another cluster's id) keeps
        this one: logged, and None, so a typo in a new key file never locks every peer out."""
        if directory_signature(self.directory) == self.signature:
            return None
        try:
            keyring = KeyRing.load(self.directory)
        except (KeysError, OSError) as error:  # OSError: the directory changed while being read
            log.error("keeping the previous keys: %s", error)
            return None
        if keyring.cluster_id != self.cluster_id:
            log.error("keeping the previous keys: %s now holds cluster %s, this process is of cluster %s",
                      self.directory, keyring.cluster_id, self.cluster_id)
            return None
        return keyring

    def node_public_key(self, node_id: str) -> bytes:
        """The key node `node_id` must prove it holds. KeysError if this cluster has none."""
        key = self.node_public_keys.get(node_id)
        if key is None:
            raise KeysError(f"no key for node {node_id} in {self.directory} "
                            f"(sandctl keys create-node {node_id}, then copy nodes/{node_id}.toml to every node)")
        return key

    def keypair(self, kind: str, name: str) -> KeyPair:
        """Both halves of `kind` `name`'s key, from its secret file (which must be 0600)."""
        _check_name(kind, name)
        _, secret_path = _key_paths(self.directory, kind, name)
        if not secret_path.exists():
            raise KeysError(f"no secret key for {kind} {name} in {self.directory}")
        _check_private(secret_path, SECRET_FILE_MODE)
        _, keypair = _parse_key_file(secret_path, self.cluster_id, kind, secret=True)
        if self.principals.get(keypair.public_key) is None:
            raise KeysError(f"the key of {kind} {name} is not authorized in {self.directory} (revoked?)")
        return keypair

    def listing(self) -> list[Principal]:
        """Every authorized principal, nodes first, each kind by name."""
        return sorted(self.principals.values(), key=lambda p: (p.kind != KIND_NODE, p.name))
