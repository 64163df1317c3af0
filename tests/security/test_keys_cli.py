"""`sandctl keys ...` and the call `sandctl cluster start` makes (CliRunner; no nodes)."""

from __future__ import annotations

import json
import os

from click.testing import CliRunner

from node.security import KIND_CLIENT, KeyRing
from sandctl.keys import ensure_local_cluster_keys, keys_group


def run(data_dir, *arguments):
    # Each test has its own HOME (isolated_home): no remembered cluster of the developer's.
    return CliRunner().invoke(keys_group, [*arguments, "--data-dir", str(data_dir)])


def test_cluster_start_keys_are_made_once_and_kept(tmp_path, monkeypatch, isolated_home):
    monkeypatch.delenv("SANDSTORE_KEYS_DIR", raising=False)
    first = ensure_local_cluster_keys(tmp_path, ["n1", "n2", "n3"])
    assert sorted(map(str, first.listing())) == ["client admin (admin)", "node n1", "node n2", "node n3"]
    again = ensure_local_cluster_keys(tmp_path, ["n1", "n2", "n3", "n4"])
    assert again.cluster_id == first.cluster_id
    assert again.node_public_keys["n1"] == first.node_public_keys["n1"]  # never replaced
    assert "n4" in again.node_public_keys
    assert os.stat(tmp_path / "keys").st_mode & 0o777 == 0o700


def test_create_list_revoke_a_client(tmp_path, monkeypatch, isolated_home):
    monkeypatch.delenv("SANDSTORE_KEYS_DIR", raising=False)
    ensure_local_cluster_keys(tmp_path, ["n1"])
    created = run(tmp_path, "create-client", "alice", "--role", "read-write")
    assert created.exit_code == 0, created.output
    assert "created client alice (read-write)" in created.output and "SANDSTORE_CLIENT=alice" in created.output
    secret = tmp_path / "keys" / "clients" / "alice.secret"
    assert os.stat(secret).st_mode & 0o777 == 0o600

    listed = run(tmp_path, "list", "--json")
    assert listed.exit_code == 0, listed.output
    keys = {(key["kind"], key["name"], key["role"]) for key in json.loads(listed.output)["keys"]}
    assert keys == {("node", "n1", "node"), ("client", "admin", "admin"), ("client", "alice", "read-write")}
    assert "secret" not in listed.output

    revoked = run(tmp_path, "revoke", "alice")
    assert revoked.exit_code == 0 and "revoked client alice" in revoked.output
    assert (KIND_CLIENT, "alice") not in {(p.kind, p.name) for p in KeyRing.load(tmp_path / "keys").listing()}


def test_bad_requests_are_one_line_and_exit_1(tmp_path, monkeypatch, isolated_home):
    monkeypatch.delenv("SANDSTORE_KEYS_DIR", raising=False)
    missing = run(tmp_path, "list")
    assert missing.exit_code == 1 and missing.output.startswith("Error: no cluster keys in ")
    ensure_local_cluster_keys(tmp_path, ["n1"])
    for arguments, message in [
        (("create-client", "a b", "--role", "admin"), "Error: a client name is 1-64 ASCII letters"),
        (("create-client", "admin", "--role", "admin"), "Error: client admin already has a key"),
        (("revoke", "nobody"), "Error: there is no client key named nobody"),
    ]:
        result = run(tmp_path, *arguments)
        assert result.exit_code == 1, (arguments, result.output)
        assert result.output.startswith(message) and result.output.count("\n") == 1, result.output
    usage = run(tmp_path, "create-client", "bob", "--role", "root")
    assert usage.exit_code == 2  # click's usage error: not one of read-write, admin
