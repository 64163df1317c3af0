"""Keys of a cluster: made for a local cluster by `sandctl cluster start`, managed with
`sandctl keys ...`.

The one call the cluster-start code makes, before it spawns the nodes (idempotent: a restart
keeps every key and the cluster id):

    from sandctl.keys import ensure_local_cluster_keys
    ensure_local_cluster_keys(data_dir, config.node_ids())

A node added later (`add-voter ... --spawn`) gets its key with create_node_key(data_dir, id)
before it is spawned; the running nodes pick the new public key up on their next reload.
"""

from __future__ import annotations

import json
import os

import click
from tabulate import tabulate

from node.security.authorization import CLIENT_ROLES, KIND_CLIENT, KIND_NODE, ROLE_ADMIN, ROLE_NODE
from node.security.keyring import (
    CLUSTER_FILE_NAME,
    KeyPair,
    KeyRing,
    create_keys_directory,
    create_principal,
    keys_dir_for,
    remove_principal,
)
from node.security.sockets import DEFAULT_CLIENT_NAME
from sandctl.cli_base import Settings, global_options


def ensure_local_cluster_keys(data_dir: str | os.PathLike, node_ids: list[str], *,
                              admin_name: str = DEFAULT_CLIENT_NAME) -> KeyRing:
    """Create what is missing for a local cluster in `data_dir`'s keys directory: the cluster
    id (only the first time), a key for each node in `node_ids`, and an admin client key
    `admin_name` for the user who runs the cluster. Never replaces an existing key."""
    directory = keys_dir_for(data_dir)
    if not (directory / CLUSTER_FILE_NAME).exists():
        create_keys_directory(directory)
    keyring = KeyRing.load(directory)
    existing = {(p.kind, p.name) for p in keyring.principals.values()}
    for node_id in node_ids:
        if (KIND_NODE, node_id) not in existing:
            create_principal(directory, KIND_NODE, node_id, ROLE_NODE)
    if (KIND_CLIENT, admin_name) not in existing:
        create_principal(directory, KIND_CLIENT, admin_name, ROLE_ADMIN)
    return KeyRing.load(directory)


def create_node_key(data_dir: str | os.PathLike, node_id: str) -> KeyPair:
    """A key for a node about to join (KeysError if it already has one)."""
    return create_principal(keys_dir_for(data_dir), KIND_NODE, node_id, ROLE_NODE)


def create_client_key(data_dir: str | os.PathLike, name: str, role: str) -> KeyPair:
    """A key for client `name` with `role` (read-write or admin)."""
    return create_principal(keys_dir_for(data_dir), KIND_CLIENT, name, role)


def revoke_client_key(data_dir: str | os.PathLike, name: str) -> None:
    """Remove client `name`'s key: nodes refuse it from their next reload (about a second)."""
    remove_principal(keys_dir_for(data_dir), KIND_CLIENT, name)


def list_keys(data_dir: str | os.PathLike) -> dict:
    """{"cluster_id", "directory", "keys": [{"kind", "name", "role", "public_key"}, ...]}."""
    keyring = KeyRing.load(keys_dir_for(data_dir))
    by_principal = {principal: key for key, principal in keyring.principals.items()}
    return {
        "cluster_id": keyring.cluster_id,
        "directory": str(keyring.directory),
        "keys": [{"kind": p.kind, "name": p.name, "role": p.role, "public_key": by_principal[p].decode("ascii")}
                 for p in keyring.listing()],
    }


# ----- the CLI group (registered in sandctl/cli.py with `main.add_command(keys_group)`)


@click.group("keys")
def keys_group() -> None:
    """Client keys of the cluster (CurveZMQ): create, list, revoke.

    Example: sandctl keys create-client alice --role read-write
    """


@keys_group.command("create-client")
@click.argument("name")
@click.option("--role", type=click.Choice(CLIENT_ROLES), required=True,
              help="read-write: file verbs and status; admin: also membership, snapshot, gc, transfer-leader.")
@global_options
def create_client_command(settings: Settings, name: str, role: str) -> None:
    """Create a client key; use it with SANDSTORE_CLIENT=NAME.

    Example: sandctl keys create-client alice --role read-write
    """
    data_dir = settings.data_dir()
    keypair = create_client_key(data_dir, name, role)
    secret_file = keys_dir_for(data_dir) / "clients" / f"{name}.secret"
    if settings.json_output:
        click.echo(json.dumps({"name": name, "role": role, "public_key": keypair.public_key.decode("ascii"),
                               "secret_file": str(secret_file)}))
        return
    click.echo(f"created client {name} ({role}); secret in {secret_file} (0600). "
               f"Use it with: SANDSTORE_CLIENT={name} sandctl ...")


@keys_group.command("list")
@global_options
def list_command(settings: Settings) -> None:
    """List the keys this cluster authorizes (nodes and clients, public halves only).

    Example: sandctl keys list
    """
    listing = list_keys(settings.data_dir())
    if settings.json_output:
        click.echo(json.dumps(listing))
        return
    click.echo(f"cluster {listing['cluster_id']} ({listing['directory']})")
    rows = [(key["kind"], key["name"], key["role"], key["public_key"]) for key in listing["keys"]]
    click.echo(tabulate(rows, headers=("kind", "name", "role", "public key")))


@keys_group.command("revoke")
@click.argument("name")
@global_options
def revoke_command(settings: Settings, name: str) -> None:
    """Revoke a client key: every node refuses it within about a second, on open connections too.

    Example: sandctl keys revoke alice
    """
    revoke_client_key(settings.data_dir(), name)
    if settings.json_output:
        click.echo(json.dumps({"revoked": name}))
        return
    click.echo(f"revoked client {name}")
