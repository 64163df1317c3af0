"""sandctl verbs through click's CliRunner against fake nodes: exit statuses, one-line errors,
--json shapes, config resolution."""

from __future__ import annotations

import json

import click
import pytest
from click.testing import CliRunner

from fake_node import DROP, Namespace, free_port, make_config, status_of
from node.config import render_config
from node.errors import (
    AlreadyExists,
    BadRequest,
    InvalidPath,
    IsADirectory,
    NoLeader,
    NotADirectory,
    NotEmpty,
    NotFound,
    Refused,
    TooLarge,
)
from sandctl import state
from sandctl.cli import main


def run(*args: str, input: bytes | None = None):
    return CliRunner().invoke(main, list(args), input=input, prog_name="sandctl")


def stderr_lines(result) -> list[str]:
    return result.stderr.strip().splitlines()


@pytest.fixture
def namespace_cluster(fake_nodes, tmp_path):
    """One fake leader with an in-memory namespace; returns (config path, Namespace)."""
    namespace = Namespace()
    node = fake_nodes("n1", namespace)
    path = tmp_path / "cluster.toml"
    path.write_text(render_config(make_config({"n1": node.address})))
    return str(path), namespace


def write_config_with_handler(fake_nodes, tmp_path, handler, name="cluster.toml") -> str:
    node = fake_nodes("n1", handler)
    path = tmp_path / name
    path.write_text(render_config(make_config({"n1": node.address})))
    return str(path)


# ---------------------------------------------------------------------- usage and config


@pytest.mark.parametrize("args", [["bogus"], ["put", "only-one"], ["ls", "--timeout", "soon"], ["cluster", "bogus"]])
def test_usage_errors_are_one_line_with_exit_status_2(args):
    result = run(*args)
    assert result.exit_code == 2
    lines = stderr_lines(result)
    assert len(lines) == 1 and lines[0].startswith("Error: ")
    assert "usage: sandctl" in lines[0]


def test_invalid_config_is_one_line_naming_the_key(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text('[cluster]\ntick_ms = "fast"\n\n[[nodes]]\nid = "n1"\nraft = "127.0.0.1:1"\n'
                    'client = "127.0.0.1:2"\nchunk = "127.0.0.1:3"\n')
    result = run("ls", "/", "--config", str(path))
    assert result.exit_code == 1
    assert stderr_lines(result) == [stderr_lines(result)[0]]
    assert stderr_lines(result)[0].startswith("Error: ") and "cluster.tick_ms" in result.stderr
    assert "Traceback" not in result.output


def test_missing_config_file_exits_5_like_any_missing_local_file(tmp_path):
    result = run("status", "--config", str(tmp_path / "nope.toml"))
    assert result.exit_code == 5
    assert stderr_lines(result) == [f"Error: config file {tmp_path / 'nope.toml'} does not exist"]


def test_traceback_only_when_asked(tmp_path):
    missing = str(tmp_path / "nope.toml")
    assert "Traceback" not in run("status", "--config", missing).stderr
    assert "Traceback" in run("status", "--config", missing, "--traceback").stderr


def collect_commands(group: click.Group, prefix: str = ""):
    for name, command in group.commands.items():
        yield prefix + name, command
        if isinstance(command, click.Group):
            yield from collect_commands(command, prefix + name + " ")


# The verbs where --node means something (a read that may be --stale, or a node to inspect).
VERBS_WITH_NODE = {"get", "cat", "head", "tail", "ls", "stat", "find", "tree", "status", "gc", "snapshot",
                   "snapshot compact", "inspect log", "inspect term"}


def test_every_verb_has_an_example_and_the_global_options():
    assert "Exit status" in main.help and "Example:" in main.help
    global_options = {"--config", "--data-dir", "--timeout", "--json", "--traceback"}
    for name, command in collect_commands(main):
        assert "Example:" in (command.help or ""), name
        if not isinstance(command, click.Group):
            options = {option for param in command.params for option in param.opts}
            assert global_options <= options, name


def test_node_option_only_where_it_means_something_with_a_real_description():
    seen = set()
    for name, command in collect_commands(main):
        node = [param for param in command.params if "--node" in param.opts]
        if node:
            seen.add(name)
            assert "debugging" not in node[0].help and len(node[0].help) > 20, name
    assert seen == VERBS_WITH_NODE


def test_config_resolution_option_then_environment_then_remembered(fake_nodes, tmp_path, monkeypatch):
    paths = {
        node_id: write_config_with_handler(
            fake_nodes, tmp_path,
            lambda op, args, node_id=node_id: {**status_of(node_id, "leader", node_id), "voters": ["n1"]},
            name=f"{node_id}.toml",
        )
        for node_id in ("remembered", "environment", "option")
    }

    def answering_node() -> str:
        result = run("status", "--json", "--timeout", "2")
        assert result.exit_code == 0, result.output
        (status,) = json.loads(result.stdout).values()
        return status["id"]

    state.remember(paths["remembered"], tmp_path / "data")
    assert answering_node() == "remembered"
    monkeypatch.setenv("SANDSTORE_CONFIG", paths["environment"])
    assert answering_node() == "environment"
    result = run("status", "--json", "--config", paths["option"])
    (status,) = json.loads(result.stdout).values()
    assert status["id"] == "option"


def test_remembered_data_dir_belongs_to_the_remembered_config_only(tmp_path):
    remembered = tmp_path / "a.toml"
    other = tmp_path / "b.toml"
    state.remember(remembered, tmp_path / "data-a")
    assert state.resolve_data_dir(None, remembered) == (tmp_path / "data-a").resolve()
    assert state.resolve_data_dir(None, other).name == "b"
    assert state.resolve_data_dir(str(tmp_path / "x"), remembered) == tmp_path / "x"


# ---------------------------------------------------------------------- files


def test_put_get_cat_round_trip(namespace_cluster, tmp_path):
    config, namespace = namespace_cluster
    local = tmp_path / "notes.txt"
    local.write_bytes(b"hello sandstore\n")
    assert run("put", str(local), "/notes.txt", "--config", config).exit_code == 0
    assert namespace.data["/notes.txt"] == b"hello sandstore\n"

    copy = tmp_path / "copy.txt"
    result = run("get", "/notes.txt", str(copy), "--config", config)
    assert result.exit_code == 0, result.output
    assert copy.read_bytes() == b"hello sandstore\n"
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".part")]

    result = run("cat", "/notes.txt", "--config", config)
    assert result.exit_code == 0 and result.stdout_bytes == b"hello sandstore\n"

    assert run("put", "-", "/stdin.bin", "--config", config, input=b"\x00\x01binary").exit_code == 0
    result = run("get", "/stdin.bin", "-", "--config", config)
    assert result.stdout_bytes == b"\x00\x01binary"


def test_put_into_a_directory_uses_the_local_name(namespace_cluster, tmp_path):
    config, namespace = namespace_cluster
    local = tmp_path / "a.txt"
    local.write_bytes(b"a")
    assert run("mkdir", "/docs", "--config", config).exit_code == 0
    assert run("put", str(local), "/docs", "--config", config).exit_code == 0
    local.write_bytes(b"b")
    assert run("put", "-f", str(local), "/docs/", "--config", config).exit_code == 0
    assert namespace.data == {"/docs/a.txt": b"b"}


def test_get_into_an_existing_local_directory(namespace_cluster, tmp_path):
    config, namespace = namespace_cluster
    namespace.op_write_file({"path": "/f.txt", "data": b"x", "mode": 0o600})
    target = tmp_path / "out"
    target.mkdir()
    assert run("get", "/f.txt", str(target), "--config", config).exit_code == 0
    assert (target / "f.txt").read_bytes() == b"x"


def test_missing_local_file_exits_5(namespace_cluster, tmp_path):
    config, _ = namespace_cluster
    result = run("put", str(tmp_path / "nope.txt"), "/x", "--config", config)
    assert result.exit_code == 5
    assert stderr_lines(result) == [f"Error: {tmp_path / 'nope.txt'}: no such local file"]


def test_get_into_a_missing_local_directory_exits_5_and_reads_nothing(namespace_cluster, tmp_path):
    config, namespace = namespace_cluster
    namespace.op_write_file({"path": "/f.txt", "data": b"x"})
    result = run("get", "/f.txt", str(tmp_path / "missing" / "f.txt"), "--config", config)
    assert result.exit_code == 5
    assert "does not exist" in result.stderr


def test_rm_force_ignores_a_missing_path(namespace_cluster):
    config, _ = namespace_cluster
    assert run("rm", "/nope", "--config", config).exit_code == 5
    assert run("rm", "-f", "/nope", "--config", config).exit_code == 0


def test_namespace_errors_from_the_in_memory_cluster(namespace_cluster, tmp_path):
    config, namespace = namespace_cluster
    namespace.op_mkdir({"path": "/d"})
    namespace.op_write_file({"path": "/d/f", "data": b"1"})
    assert run("mkdir", "/d", "--config", config).exit_code == 1  # exists
    assert run("mkdir", "/d/f/g", "--config", config).exit_code == 1  # not a directory
    assert run("rm", "/d", "--config", config).exit_code == 1  # not empty
    assert run("stat", "/nope", "--config", config).exit_code == 5
    assert run("mv", "/d", "/e", "--config", config).exit_code == 0
    assert run("rm", "-r", "/e", "--config", config).exit_code == 0
    assert set(namespace.entries) == {"/"}


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (AlreadyExists("/x already exists"), 1),
        (NotADirectory("/x is a file"), 1),
        (IsADirectory("/x is a directory"), 1),
        (NotEmpty("/x is not empty"), 1),
        (InvalidPath("bad path"), 1),
        (TooLarge("too big"), 1),
        (Refused("not now"), 1),
        (BadRequest("garbled"), 1),
        (NotFound("/x does not exist"), 5),
        (NoLeader("election"), 3),
    ],
)
def test_exit_status_of_every_reply_error(fake_nodes, tmp_path, error, status):
    def handler(op, args):
        raise error

    config = write_config_with_handler(fake_nodes, tmp_path, handler)
    result = run("mkdir", "/x", "--config", config, "--timeout", "0.3")
    assert result.exit_code == status
    lines = stderr_lines(result)
    assert len(lines) == 1 and lines[0].startswith("Error: ")


def test_a_silent_cluster_gives_3_for_reads_and_4_for_writes(fake_nodes, tmp_path):
    config = write_config_with_handler(fake_nodes, tmp_path, lambda op, args: DROP)
    assert run("stat", "/x", "--config", config, "--timeout", "0.3").exit_code == 3
    result = run("mkdir", "/x", "--config", config, "--timeout", "0.3")
    assert result.exit_code == 4
    assert "may or may not" in result.stderr


def test_not_leader_on_a_pinned_node_exits_3(fake_nodes, tmp_path):
    from node.errors import NotLeader

    def handler(op, args):
        raise NotLeader("not the leader", "n2")

    config = write_config_with_handler(fake_nodes, tmp_path, handler)
    result = run("stat", "/", "--config", config, "--node", "n1")
    assert result.exit_code == 3 and "n2" in result.stderr


def test_nothing_listening_exits_3(tmp_path):
    path = tmp_path / "down.toml"
    path.write_text(render_config(make_config({"n1": f"127.0.0.1:{free_port()}"})))
    result = run("ls", "/", "--config", str(path), "--timeout", "0.3")
    assert result.exit_code == 3
    assert result.stderr.startswith("Error: ")


# ---------------------------------------------------------------------- output shapes


def test_json_shapes(namespace_cluster):
    config, namespace = namespace_cluster
    namespace.op_mkdir({"path": "/d"})
    namespace.op_write_file({"path": "/d/f", "data": b"12345"})

    listing = json.loads(run("ls", "-R", "/", "--json", "--config", config).stdout)
    assert [entry["path"] for entry in listing] == ["/d", "/d/f"]
    assert {"path", "type", "size", "mode", "mtime_ns"} <= set(listing[1])

    info = json.loads(run("stat", "/d/f", "--json", "--config", config).stdout)
    assert info["size"] == 5 and info["type"] == "file"

    usage = json.loads(run("du", "-s", "/", "--json", "--config", config).stdout)
    assert usage == {"path": "/", "files": 1, "dirs": 2, "logical_bytes": 5, "stored_chunk_bytes": 0,
                     "replicated_chunk_bytes": 0}
    per_directory = json.loads(run("du", "/", "--json", "--config", config).stdout)
    assert [entry["path"] for entry in per_directory] == ["/d", "/"]


def test_ls_formats(namespace_cluster):
    config, namespace = namespace_cluster
    namespace.op_mkdir({"path": "/d"})
    namespace.op_write_file({"path": "/f", "data": b"123", "mode": 0o640})
    assert run("ls", "/", "--config", config).stdout.split() == ["d/", "f"]
    long_listing = run("ls", "-l", "/", "--config", config).stdout
    assert "-rw-r-----" in long_listing and "drwxr-xr-x" in long_listing


def test_status_table_and_json_with_a_down_node(fake_nodes, tmp_path):
    node = fake_nodes("n1", lambda op, args: {**status_of("n1", "leader", "n1"), "voters": ["n1", "n2"]})
    path = tmp_path / "two.toml"
    path.write_text(render_config(make_config({"n1": node.address, "n2": f"127.0.0.1:{free_port()}"})))
    result = run("status", "--json", "--config", str(path), "--timeout", "0.5")
    assert result.exit_code == 3  # one of two voters: no quorum
    statuses = json.loads(result.stdout)
    assert statuses["n1"]["role"] == "leader" and statuses["n2"] is None
    table = run("status", "--config", str(path), "--timeout", "0.5")
    assert table.exit_code == 3
    lines = table.stdout.splitlines()
    assert lines[0] == "unhealthy: leader n1 (term 2) but only 1/2 voters up: no quorum"
    assert lines[3].split()[:3] == ["n1", "up", "leader"] and lines[4].split() == ["n2", "down"]


def test_cluster_status_without_processes(tmp_path, namespace_cluster):
    config, _ = namespace_cluster
    result = run("cluster", "status", "--json", "--config", config, "--data-dir", str(tmp_path / "data"))
    assert result.exit_code == 0
    assert json.loads(result.stdout) == [
        {"node": "n1", "pid": None, "alive": False, "role": "", "log": str(tmp_path / "data" / "n1" / "node.log")}
    ]
    result = run("node", "stop", "n1", "--config", config, "--data-dir", str(tmp_path / "data"))
    assert result.exit_code == 1 and "not running" in result.stderr


def test_add_voter_adds_a_learner_waits_for_it_then_promotes(fake_nodes, tmp_path):
    def leader(op, args):
        if op == "status":
            return status_of("n1", "leader", "n1")
        return {"index": 9}

    def newcomer(op, args):
        assert op == "status"
        return {**status_of("n4", "learner", "n1"), "applied": 7}

    n1 = fake_nodes("n1", leader)
    n4 = fake_nodes("n4", newcomer)
    path = tmp_path / "cluster.toml"
    path.write_text(render_config(make_config({"n1": n1.address})))
    result = run("add-voter", "n4", "--raft", f"127.0.0.1:{free_port()}", "--client", n4.address,
                 "--chunk", f"127.0.0.1:{free_port()}", "--config", str(path), "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {"node": "n4", "pid": None, "caught_up_to": 7}
    assert [op for op in n1.ops() if op not in ("status", "ping")] == ["add_learner", "promote"]
    assert n1.requests_of("add_learner") == [{"node": "n4", "raft": n1.requests_of("add_learner")[0]["raft"],
                                              "client": n4.address,
                                              "chunk": n1.requests_of("add_learner")[0]["chunk"]}]
    assert "status" in n4.ops()


def test_unreadable_local_file_exits_1_and_stores_nothing(namespace_cluster, tmp_path, monkeypatch):
    config, namespace = namespace_cluster
    local = tmp_path / "secret.txt"
    local.write_bytes(b"x")

    def refuse(path, mode="r", *args, **kwargs):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr("sandctl.tree_transfer.open", refuse, raising=False)
    result = run("put", str(local), "/secret.txt", "--config", config)
    assert result.exit_code == 1
    assert stderr_lines(result) == [f"Error: {local}: permission denied"]
    assert "/secret.txt" not in namespace.entries


def test_put_of_stdin_onto_a_directory_exits_1(namespace_cluster):
    config, namespace = namespace_cluster
    namespace.op_mkdir({"path": "/d"})
    result = run("put", "-", "/d", "--config", config, input=b"data")
    assert result.exit_code == 1 and len(stderr_lines(result)) == 1
    assert set(namespace.entries) == {"/", "/d"}


def test_a_failed_get_leaves_no_local_file(namespace_cluster, tmp_path):
    config, _ = namespace_cluster
    result = run("get", "/missing", str(tmp_path / "out"), "--config", config)
    assert result.exit_code == 5
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["home", "cluster.toml"])
