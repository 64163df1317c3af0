"""The keys directory: layout, permissions, cluster id, and refusing files it cannot trust."""

from __future__ import annotations

import os

import pytest

from node.security import KIND_CLIENT, KIND_NODE, KeyRing, KeysError, Principal
from node.security.keyring import (
    create_keys_directory,
    create_principal,
    is_valid_cluster_id,
    keys_dir_for,
    read_cluster_id,
    remove_principal,
)
from tests.security.conftest import make_keys


def test_a_new_directory_has_a_random_cluster_id_that_is_never_replaced(tmp_path):
    first = create_keys_directory(tmp_path / "a")
    second = create_keys_directory(tmp_path / "b")
    assert is_valid_cluster_id(first) and is_valid_cluster_id(second) and first != second
    assert read_cluster_id(tmp_path / "a") == first
    with pytest.raises(KeysError, match=f"already holds the keys of cluster {first}"):
        create_keys_directory(tmp_path / "a")


def test_the_keyring_maps_each_public_key_to_its_principal(keys_dir):
    keyring = KeyRing.load(keys_dir)
    assert sorted(map(str, keyring.listing())) == ["client admin (admin)", "client rw (read-write)", "node n1", "node n2"]
    pair = keyring.keypair(KIND_NODE, "n1")
    assert keyring.principals[pair.public_key] == Principal(KIND_NODE, "n1", "node")
    assert keyring.node_public_key("n1") == pair.public_key
    assert "secret" not in repr(pair).replace("secret_key=", "") and pair.secret_key not in repr(pair).encode()
    with pytest.raises(KeysError, match="no key for node n9"):
        keyring.node_public_key("n9")


def test_a_key_file_of_another_cluster_is_refused(keys_dir, tmp_path):
    other = tmp_path / "other"
    make_keys(other, nodes=("n3",), clients=())
    (keys_dir / "nodes" / "n3.toml").write_bytes((other / "nodes" / "n3.toml").read_bytes())
    with pytest.raises(KeysError, match=r"n3.toml is a key of cluster '[0-9a-f]+', not of this cluster"):
        KeyRing.load(keys_dir)


def test_a_secret_readable_by_others_is_refused(keys_dir):
    secret = keys_dir / "clients" / "rw.secret"
    os.chmod(secret, 0o644)
    with pytest.raises(KeysError, match=f"{secret} has permissions 0644, must be 0600"):
        KeyRing.load(keys_dir).keypair(KIND_CLIENT, "rw")


def test_a_keys_directory_others_can_write_is_refused(keys_dir):
    os.chmod(keys_dir / "clients", 0o777)
    with pytest.raises(KeysError, match="must be 0755 or tighter"):
        KeyRing.load(keys_dir)


@pytest.mark.parametrize("kind, name, role, message", [
    (KIND_CLIENT, "a b", "admin", "a client name is 1-64 ASCII letters"),
    (KIND_CLIENT, "../escape", "admin", "a client name is"),
    (KIND_CLIENT, "x" * 65, "admin", "a client name is"),
    (KIND_CLIENT, "ok", "root", "a client role is one of read-write, admin"),
    (KIND_NODE, "n9", "admin", "node keys have the role 'node'"),
    (KIND_CLIENT, "rw", "admin", "client rw already has a key"),
])
def test_invalid_key_requests_are_refused_and_create_nothing(keys_dir, kind, name, role, message):
    before = sorted(path.name for path in keys_dir.rglob("*"))
    with pytest.raises(KeysError, match=message):
        create_principal(keys_dir, kind, name, role)
    assert sorted(path.name for path in keys_dir.rglob("*")) == before


def test_a_tampered_file_is_refused_with_its_name(keys_dir):
    path = keys_dir / "clients" / "rw.toml"
    path.write_text(path.read_text().replace('role = "read-write"', 'role = "superuser"'))
    with pytest.raises(KeysError, match=r"rw.toml has the role 'superuser'"):
        KeyRing.load(keys_dir)
    path.write_text("not toml [")
    with pytest.raises(KeysError, match="rw.toml is not a valid key file"):
        KeyRing.load(keys_dir)


def test_a_secret_that_does_not_match_its_public_key_is_refused(keys_dir):
    secret = keys_dir / "clients" / "rw.secret"
    admin_secret = (keys_dir / "clients" / "admin.secret").read_text()
    own = secret.read_text().splitlines()
    stolen = [line for line in admin_secret.splitlines() if line.startswith("secret_key")][0]
    secret.write_text("\n".join(stolen if line.startswith("secret_key") else line for line in own) + "\n")
    with pytest.raises(KeysError, match="not the secret half of its public_key"):
        KeyRing.load(keys_dir).keypair(KIND_CLIENT, "rw")


def test_revoking_removes_both_halves_and_the_authorization(keys_dir):
    remove_principal(keys_dir, KIND_CLIENT, "rw")
    assert not list((keys_dir / "clients").glob("rw.*"))
    assert "client rw (read-write)" not in map(str, KeyRing.load(keys_dir).listing())
    with pytest.raises(KeysError, match="there is no client key named rw"):
        remove_principal(keys_dir, KIND_CLIENT, "rw")


def test_no_keys_directory_is_one_clear_line(tmp_path):
    with pytest.raises(KeysError, match="no cluster keys in .*sandctl cluster start creates them"):
        KeyRing.load(tmp_path / "nothing")


def test_the_keys_directory_is_in_the_data_directory_unless_overridden(tmp_path, monkeypatch):
    monkeypatch.delenv("SANDSTORE_KEYS_DIR", raising=False)
    assert keys_dir_for(tmp_path) == tmp_path / "keys"
    monkeypatch.setenv("SANDSTORE_KEYS_DIR", str(tmp_path / "elsewhere"))
    assert keys_dir_for(tmp_path) == tmp_path / "elsewhere"


def test_a_node_refuses_keys_of_another_cluster_than_its_data():
    from node.security.keyring import check_cluster_identity

    assert check_cluster_identity(None, "a" * 32, "/data/n1") == "a" * 32  # first start: stored from the keys
    assert check_cluster_identity("a" * 32, "a" * 32, "/data/n1") == "a" * 32
    with pytest.raises(KeysError, match=f"the data in /data/n1 belongs to cluster {'a' * 32}, but the keys"):
        check_cluster_identity("a" * 32, "b" * 32, "/data/n1")
