"""sandctl against real node processes on 127.0.0.1, run as real subprocesses."""

from __future__ import annotations

import json

import pytest
from e2e_workload import wait_until

pytestmark = pytest.mark.e2e


def test_start_kill_leader_status_stop_with_the_remembered_config(tmp_path, e2e_home, ledger, e2e_tools):
    write_config, recorded_pids, run_sandctl = e2e_tools.write_config, e2e_tools.recorded_pids, e2e_tools.run_sandctl
    config = write_config(tmp_path / "cluster.toml")
    data_dir = ledger.data_dir

    started = run_sandctl(e2e_home, "cluster", "start", "--config", str(tmp_path / "cluster.toml"),
                          "--data-dir", str(data_dir))
    ledger.collect()
    assert started.returncode == 0, started.stderr.decode()
    assert "leader" in started.stdout.decode()
    pids = recorded_pids(data_dir)
    assert sorted(pids.values()) == config.node_ids()

    # From here on: no flags. The config and data dir come from ~/.sandstore/cluster.json.
    killed = run_sandctl(e2e_home, "kill-leader")
    assert killed.returncode == 0, killed.stderr.decode()
    assert "new leader" in killed.stdout.decode()
    assert len(recorded_pids(data_dir)) == 2

    status = run_sandctl(e2e_home, "status", "--json", "--timeout", "3")
    assert status.returncode == 0, status.stderr.decode()
    roles = {node_id: (answer or {}).get("role") for node_id, answer in json.loads(status.stdout).items()}
    assert sorted(roles) == config.node_ids()
    assert list(roles.values()).count("leader") == 1
    assert list(roles.values()).count(None) == 1  # the killed leader

    table = run_sandctl(e2e_home, "status", "--timeout", "3")
    assert table.returncode == 0 and "down" in table.stdout.decode()

    stopped = run_sandctl(e2e_home, "cluster", "stop")
    assert stopped.returncode == 0, stopped.stderr.decode()
    assert not any(e2e_tools.is_node_process(pid, node_id) for pid, node_id in pids.items())
    assert recorded_pids(data_dir) == {}


def test_cluster_start_refuses_while_running(cluster):
    again = cluster.sandctl("cluster", "start")
    assert again.returncode == 1
    assert again.stderr.decode().startswith("Error: already running")
    status = cluster.sandctl("cluster", "status", "--json")
    assert status.returncode == 0
    rows = json.loads(status.stdout)
    assert all(row["alive"] for row in rows)
    assert sorted(row["role"] for row in rows).count("leader") == 1


def test_kill_leader_with_restart_keeps_three_members(cluster, e2e_tools):
    result = cluster.sandctl("kill-leader", "--restart", "--json")
    assert result.returncode == 0, result.stderr.decode()
    report = json.loads(result.stdout)
    assert report["new_leader"] != report["old_leader"]
    assert report["restarted_pid"] is not None
    cluster.ledger.collect()
    assert len(e2e_tools.recorded_pids(cluster.data_dir)) == 3
    assert cluster.client.wait_for_leader(10) in cluster.config.node_ids()


@pytest.mark.parametrize("cluster", ["raft-3", "none-1"], indirect=True)
def test_put_get_round_trip_of_small_files(cluster, tmp_path):
    contents = {"empty.txt": b"", "hello.txt": b"hello, sandstore\n", "binary.bin": bytes(range(256)) * 64}
    assert cluster.sandctl("mkdir", "-p", "/e2e/files").returncode == 0
    for name, data in contents.items():
        local = tmp_path / name
        local.write_bytes(data)
        put = cluster.sandctl("put", str(local), f"/e2e/files/{name}")
        assert put.returncode == 0, put.stderr.decode()
    copies = tmp_path / "copies"
    copies.mkdir()
    for name, data in contents.items():
        got = cluster.sandctl("get", f"/e2e/files/{name}", str(copies / name))
        assert got.returncode == 0, got.stderr.decode()
        assert (copies / name).read_bytes() == data
        assert cluster.sandctl("cat", f"/e2e/files/{name}").stdout == data
    assert cluster.sandctl("put", "-", "/e2e/stdin.txt", input=b"from stdin").returncode == 0
    assert cluster.sandctl("get", "/e2e/stdin.txt", "-").stdout == b"from stdin"

    listing = json.loads(cluster.sandctl("ls", "--json", "/e2e/files").stdout)
    assert sorted(entry["path"] for entry in listing) == sorted(f"/e2e/files/{name}" for name in contents)
    info = json.loads(cluster.sandctl("stat", "--json", "/e2e/files/binary.bin").stdout)
    assert info["type"] == "file" and info["size"] == 256 * 64
    usage = json.loads(cluster.sandctl("du", "-s", "--json", "/e2e").stdout)
    assert usage["files"] == 4 and usage["logical_bytes"] == sum(map(len, contents.values())) + len(b"from stdin")


@pytest.mark.parametrize("cluster", ["raft-3", "none-1"], indirect=True)
def test_namespace_error_exit_codes(cluster, tmp_path):
    local = tmp_path / "f.txt"
    local.write_bytes(b"x")
    assert cluster.sandctl("mkdir", "/d").returncode == 0
    assert cluster.sandctl("put", str(local), "/d/f").returncode == 0
    assert cluster.sandctl("mkdir", "-p", "/e/d").returncode == 0

    expectations = [
        (("mkdir", "/d"), 1),  # EXISTS
        (("mkdir", "/d/f/g"), 1),  # NOT_A_DIRECTORY (parent is a file)
        (("ls", "/d/f/g"), 1),  # NOT_A_DIRECTORY
        (("cat", "/d"), 1),  # IS_A_DIRECTORY
        (("rm", "/d"), 1),  # NOT_EMPTY
        (("mkdir", "relative"), 1),  # INVALID_PATH
        (("stat", "/d/../x"), 1),  # INVALID_PATH
        (("mv", "/d", "/e"), 1),  # EXISTS: /e/d is already a directory
        (("mv", "/d", "/d/sub"), 1),  # INVALID_PATH: a directory into itself
        (("mv", "/nope", "/x"), 5),
        (("stat", "/nope"), 5),  # NOT_FOUND
        (("get", "/nope", str(tmp_path / "out")), 5),
        (("mkdir", "/nope/child"), 5),  # parent missing
        (("rm", "/nope"), 5),
        (("rm", "-f", "/nope"), 0),
        (("put", str(tmp_path / "missing.txt"), "/x"), 5),  # missing local file
        (("get", "/d/f", str(tmp_path / "no-such-dir" / "f")), 5),  # missing local directory
        (("stat", "/d", "--node", "n9"), 1),  # CONFIG: unknown node id
    ]
    for args, status in expectations:
        result = cluster.sandctl(*args)
        stderr = result.stderr.decode()
        assert result.returncode == status, (args, stderr)
        if status:
            assert stderr.startswith("Error: ") and stderr.count("\n") == 1, (args, stderr)

    # Above inline_bytes_max the content is stored in chunks, no longer refused.
    beyond_inline = tmp_path / "big.bin"
    beyond_inline.write_bytes(b"z" * (cluster.config.inline_bytes_max + 1))
    assert cluster.sandctl("put", str(beyond_inline), "/big.bin").returncode == 0
    assert cluster.sandctl("cat", "/big.bin").stdout == beyond_inline.read_bytes()


def test_nothing_running_is_exit_3_and_stop_is_idempotent(tmp_path, e2e_home, ledger, e2e_tools):
    write_config, run_sandctl = e2e_tools.write_config, e2e_tools.run_sandctl
    config_path = tmp_path / "cluster.toml"
    write_config(config_path)
    common = ("--config", str(config_path), "--data-dir", str(ledger.data_dir))
    result = run_sandctl(e2e_home, "ls", "/", "--timeout", "0.5", *common)
    assert result.returncode == 3
    stopped = run_sandctl(e2e_home, "cluster", "stop", "--json", *common)
    assert stopped.returncode == 0
    assert set(json.loads(stopped.stdout).values()) == {"not running"}


def test_node_kill_and_start_rejoin(cluster):
    leader = cluster.client.wait_for_leader(10)
    follower = next(node_id for node_id in cluster.config.node_ids() if node_id != leader)
    killed = cluster.sandctl("node", "kill", follower, "--json")
    assert killed.returncode == 0, killed.stderr.decode()
    assert cluster.client.status_all(timeout_seconds=0.5)[follower] is None
    assert cluster.sandctl("node", "kill", follower).returncode == 1  # not running

    # The cluster keeps taking writes with one follower down.
    assert cluster.sandctl("mkdir", "/while-down").returncode == 0

    started = cluster.sandctl("node", "start", follower, "--json")
    assert started.returncode == 0, started.stderr.decode()
    cluster.ledger.collect()
    assert cluster.sandctl("node", "start", follower).returncode == 1  # already running
    commit = cluster.client.status(leader)["commit"]
    wait_until(lambda: (cluster.client.status_all(timeout_seconds=0.5)[follower] or {}).get("applied", -1) >= commit,
               f"{follower} to catch up to {commit}", 20)
    stopped = cluster.sandctl("node", "stop", follower, "--json")
    assert json.loads(stopped.stdout)["outcome"] == "stopped"


def test_add_voter_spawn_grows_the_cluster_and_remembers_it(cluster, e2e_tools, tmp_path):
    raft, client, chunk = (f"127.0.0.1:{port}" for port in e2e_tools.free_ports(3))
    result = cluster.sandctl("add-voter", "n4", "--raft", raft, "--client", client, "--chunk", chunk, "--spawn",
                             "--json", timeout_seconds=120)
    cluster.ledger.collect()
    assert result.returncode == 0, result.stderr.decode()
    assert json.loads(result.stdout)["node"] == "n4"

    # Later verbs know the new member with no flags: the grown config was remembered.
    status = json.loads(cluster.sandctl("status", "--json", "--timeout", "3").stdout)
    assert sorted(status) == ["n1", "n2", "n3", "n4"]
    leader = next(answer for answer in status.values() if answer and answer["role"] == "leader")
    assert "n4" in leader["voters"]
    stopped = cluster.sandctl("cluster", "stop", "--json")
    assert json.loads(stopped.stdout) == {node_id: "stopped" for node_id in ("n1", "n2", "n3", "n4")}
