"""The file verbs through click's CliRunner against a fake node with an in-memory namespace:
put/get -r, cp, head, tail, find, tree, ls -h/-R, ls/du on a file, the overwrite policy
(-f/-n) of put, get, cp and mv, command-line hints, --json. Each test asserts the output
line(s) and the exit status."""

from __future__ import annotations

import json
import re

import pytest
from click.testing import CliRunner

from fake_node import Namespace, make_config
from node.config import render_config
from node.errors import NotEmpty, NotFound
from sandctl.cli import main

EXISTS_HINT = "(use -f to overwrite it, -n to skip it)"


def run(*args: str, input: bytes | None = None):
    return CliRunner().invoke(main, list(args), input=input, prog_name="sandctl")


def stderr_lines(result) -> list[str]:
    return result.stderr.strip().splitlines()


@pytest.fixture
def store(fake_nodes, tmp_path):
    """One fake leader with an in-memory namespace; returns (run with --config, Namespace)."""
    namespace = Namespace()
    node = fake_nodes("n1", namespace)
    path = tmp_path / "cluster.toml"
    path.write_text(render_config(make_config({"n1": node.address})))

    def sandctl(*args: str, input: bytes | None = None):
        return run(*args, "--config", str(path), input=input)

    return sandctl, namespace


def make_tree(root, files: dict[str, bytes]) -> None:
    for relative, data in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)


TREE = {"a.txt": b"alpha\n", "sub/b.txt": b"beta\n", "sub/deeper/c.bin": bytes(range(256)), "empty": b""}


# ---------------------------------------------------------------------- overwrite policy


def test_put_refuses_an_existing_target_unless_f_and_n_skips_it(store, tmp_path):
    sandctl, namespace = store
    local = tmp_path / "f.txt"
    local.write_bytes(b"first")
    assert sandctl("put", str(local), "/f.txt").exit_code == 0
    local.write_bytes(b"second")

    refused = sandctl("put", str(local), "/f.txt")
    assert refused.exit_code == 1
    assert stderr_lines(refused) == [f"Error: /f.txt already exists {EXISTS_HINT}"]
    assert namespace.data["/f.txt"] == b"first"

    skipped = sandctl("put", "-n", str(local), "/f.txt")
    assert (skipped.exit_code, skipped.output) == (0, "")
    assert namespace.data["/f.txt"] == b"first"

    forced = sandctl("put", "-f", str(local), "/f.txt")
    assert (forced.exit_code, forced.output) == (0, "")
    assert namespace.data["/f.txt"] == b"second"


def test_f_and_n_together_are_a_usage_error(store, tmp_path):
    sandctl, _ = store
    for verb in (["put", "x", "/x"], ["get", "/x", "x"], ["cp", "/x", "/y"], ["mv", "/x", "/y"]):
        result = sandctl(*verb, "-f", "-n")
        assert result.exit_code == 2, verb
        assert len(stderr_lines(result)) == 1
        assert stderr_lines(result)[0].startswith("Error: -f and -n exclude each other (usage: sandctl ")


def test_put_help_states_the_default(store):
    for verb in ("put", "get", "cp", "mv"):
        text = run(verb, "--help").output
        assert "refused (exit 1, nothing changed) unless -f; -n skips it silently" in " ".join(text.split()), verb


def test_put_into_a_directory_refuses_the_existing_file_inside_it(store, tmp_path):
    sandctl, namespace = store
    namespace.op_mkdir({"path": "/docs"})
    namespace.op_write_file({"path": "/docs/a.txt", "data": b"old"})
    local = tmp_path / "a.txt"
    local.write_bytes(b"new")
    result = sandctl("put", str(local), "/docs")
    assert result.exit_code == 1
    assert stderr_lines(result) == [f"Error: /docs/a.txt already exists {EXISTS_HINT}"]
    skipped = json.loads(sandctl("put", "-n", str(local), "/docs", "--json").stdout)
    assert skipped == {"path": "/docs/a.txt", "skipped": True}
    assert namespace.data["/docs/a.txt"] == b"old"


def test_get_refuses_an_existing_local_file_unless_f_and_n_skips_it(store, tmp_path):
    sandctl, namespace = store
    namespace.op_write_file({"path": "/f.txt", "data": b"remote"})
    local = tmp_path / "f.txt"
    local.write_bytes(b"local")

    refused = sandctl("get", "/f.txt", str(local))
    assert refused.exit_code == 1
    assert stderr_lines(refused) == [f"Error: local file {local} already exists {EXISTS_HINT}"]
    assert local.read_bytes() == b"local"

    skipped = sandctl("get", "-n", "/f.txt", str(local))
    assert (skipped.exit_code, skipped.output, local.read_bytes()) == (0, "", b"local")

    forced = sandctl("get", "-f", "/f.txt", str(local))
    assert (forced.exit_code, local.read_bytes()) == (0, b"remote")
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".part")]


def test_get_into_the_current_directory_by_default(store, tmp_path, monkeypatch):
    sandctl, namespace = store
    namespace.op_write_file({"path": "/notes.txt", "data": b"n"})
    monkeypatch.chdir(tmp_path)
    assert sandctl("get", "/notes.txt").exit_code == 0
    assert (tmp_path / "notes.txt").read_bytes() == b"n"


def test_mv_refuses_an_existing_target_and_n_skips_it(store):
    sandctl, namespace = store
    namespace.op_write_file({"path": "/a", "data": b"a"})
    namespace.op_write_file({"path": "/b", "data": b"b"})
    refused = sandctl("mv", "/a", "/b")
    assert refused.exit_code == 1
    assert stderr_lines(refused)[0].startswith("Error: /b already exists")
    assert namespace.entries.keys() >= {"/a", "/b"}
    skipped = sandctl("mv", "-n", "/a", "/b", "--json")
    assert skipped.exit_code == 0
    assert json.loads(skipped.stdout) == {"src": "/a", "dst": "/b", "skipped": True}
    assert namespace.data == {"/a": b"a", "/b": b"b"}


# ---------------------------------------------------------------------- put -r / get -r


def test_put_r_and_get_r_round_trip_a_tree(store, tmp_path):
    sandctl, namespace = store
    make_tree(tmp_path / "src", TREE)
    (tmp_path / "src" / "empty-dir").mkdir()
    result = sandctl("put", "-r", str(tmp_path / "src"), "/")
    assert result.exit_code == 0, result.output
    assert re.fullmatch(rf"put 4 files \(267B\) and 4 new directories from {tmp_path}/src to /src in \d+\.\d s\n",
                        result.stdout)
    assert namespace.data == {f"/src/{name}": data for name, data in TREE.items()}
    assert namespace.entries["/src/empty-dir"]["type"] == "dir"

    out = tmp_path / "out"
    out.mkdir()
    result = sandctl("get", "-r", "/src", str(out))
    assert result.exit_code == 0, result.output
    assert re.fullmatch(rf"got 4 files \(267B\) and 4 new directories from /src to {out}/src in \d+\.\d s\n",
                        result.stdout)
    for name, data in TREE.items():
        assert (out / "src" / name).read_bytes() == data
    assert (out / "src" / "empty-dir").is_dir()


def test_put_r_refuses_before_transferring_anything_and_n_skips(store, tmp_path):
    sandctl, namespace = store
    make_tree(tmp_path / "src", TREE)
    assert sandctl("put", "-r", str(tmp_path / "src"), "/").exit_code == 0
    (tmp_path / "src" / "new.txt").write_bytes(b"new")
    (tmp_path / "src" / "a.txt").write_bytes(b"changed")

    refused = sandctl("put", "-r", str(tmp_path / "src"), "/")
    assert refused.exit_code == 1
    assert stderr_lines(refused) == ["Error: 4 of 5 files already exist, e.g. /src/a.txt (use -f to overwrite "
                                     "them, -n to skip them); nothing was transferred"]
    assert "/src/new.txt" not in namespace.data

    skipped = sandctl("put", "-r", "-n", str(tmp_path / "src"), "/", "--json")
    assert skipped.exit_code == 0
    summary = json.loads(skipped.stdout)
    assert (summary["files"], summary["skipped"], summary["target"]) == (1, 4, "/src")
    assert namespace.data["/src/new.txt"] == b"new" and namespace.data["/src/a.txt"] == b"alpha\n"

    forced = sandctl("put", "-r", "-f", str(tmp_path / "src"), "/")
    assert forced.exit_code == 0
    assert namespace.data["/src/a.txt"] == b"changed"


def test_put_r_into_an_existing_directory_goes_under_the_local_name(store, tmp_path):
    sandctl, namespace = store
    make_tree(tmp_path / "src", {"a.txt": b"a"})
    assert sandctl("put", "-r", str(tmp_path / "src"), "/new").exit_code == 0  # /new did not exist: it is src
    assert sandctl("put", "-r", str(tmp_path / "src"), "/new").exit_code == 0  # now it exists: inside it
    assert sorted(namespace.data) == ["/new/a.txt", "/new/src/a.txt"]


def test_get_r_refuses_existing_local_files_and_n_skips(store, tmp_path):
    sandctl, namespace = store
    make_tree(tmp_path / "src", TREE)
    assert sandctl("put", "-r", str(tmp_path / "src"), "/").exit_code == 0
    out = tmp_path / "out"
    out.mkdir()
    assert sandctl("get", "-r", "/src", str(out)).exit_code == 0
    (out / "src" / "a.txt").write_bytes(b"mine")

    refused = sandctl("get", "-r", "/src", str(out))
    assert refused.exit_code == 1
    assert stderr_lines(refused) == [f"Error: 4 of 4 files already exist, e.g. {out}/src/a.txt (use -f to "
                                     "overwrite them, -n to skip them); nothing was transferred"]
    assert (out / "src" / "a.txt").read_bytes() == b"mine"
    skipped = sandctl("get", "-r", "-n", "/src", str(out), "--json")
    assert skipped.exit_code == 0 and json.loads(skipped.stdout)["skipped"] == 4
    assert (out / "src" / "a.txt").read_bytes() == b"mine"
    assert sandctl("get", "-r", "-f", "/src", str(out)).exit_code == 0
    assert (out / "src" / "a.txt").read_bytes() == b"alpha\n"


def test_tree_transfer_errors_name_the_flag(store, tmp_path):
    sandctl, namespace = store
    make_tree(tmp_path / "src", TREE)
    namespace.op_mkdir({"path": "/d"})
    cases = [
        (("put", str(tmp_path / "src"), "/d"), 1, f"Error: {tmp_path / 'src'} is a directory (use put -r)"),
        (("put", "-r", str(tmp_path / "src" / "a.txt"), "/d"), 1,
         f"Error: {tmp_path / 'src' / 'a.txt'} is a file (put it without -r)"),
        (("put", "-r", str(tmp_path / "missing"), "/d"), 5, f"Error: {tmp_path / 'missing'}: no such local directory"),
        (("get", "/d", str(tmp_path)), 1, "Error: /d is a directory (use get -r)"),
        (("get", "-r", "/missing", str(tmp_path)), 5, "Error: /missing does not exist"),
    ]
    for args, status, line in cases:
        result = sandctl(*args)
        assert (result.exit_code, stderr_lines(result)) == (status, [line]), args


# ---------------------------------------------------------------------- cp


def test_cp_copies_a_file_record_and_refuses_an_existing_target(store):
    sandctl, namespace = store
    namespace.op_mkdir({"path": "/d"})
    namespace.op_write_file({"path": "/f", "data": b"content", "mode": 0o600})
    result = sandctl("cp", "/f", "/d", "--json")
    assert result.exit_code == 0
    assert json.loads(result.stdout)["path"] == "/d/f"
    assert namespace.data["/d/f"] == b"content" and namespace.entries["/d/f"]["mode"] == 0o600
    refused = sandctl("cp", "/f", "/d/f")
    assert (refused.exit_code, stderr_lines(refused)) == (1, [f"Error: /d/f already exists {EXISTS_HINT}"])
    namespace.op_write_file({"path": "/f", "data": b"changed"})
    assert sandctl("cp", "-n", "/f", "/d/f").exit_code == 0
    assert namespace.data["/d/f"] == b"content"
    assert sandctl("cp", "-f", "/f", "/d/f").exit_code == 0
    assert namespace.data["/d/f"] == b"changed"


def test_cp_r_copies_a_tree_and_a_directory_needs_r(store, tmp_path):
    sandctl, namespace = store
    make_tree(tmp_path / "src", TREE)
    assert sandctl("put", "-r", str(tmp_path / "src"), "/").exit_code == 0
    no_r = sandctl("cp", "/src", "/copy")
    assert (no_r.exit_code, stderr_lines(no_r)) == (1, ["Error: /src is a directory (use cp -r)"])
    result = sandctl("cp", "-r", "/src", "/copy")
    assert result.exit_code == 0
    assert result.stdout == "copied 4 files and 3 new directories from /src to /copy\n"
    assert {path[len("/copy"):]: data for path, data in namespace.data.items() if path.startswith("/copy/")} == \
        {path[len("/src"):]: data for path, data in namespace.data.items() if path.startswith("/src/")}
    into_itself = sandctl("cp", "-r", "/src", "/src/sub")
    assert into_itself.exit_code == 1
    assert stderr_lines(into_itself) == ["Error: cannot copy directory /src into itself (/src/sub/src)"]


# ---------------------------------------------------------------------- head, tail, cat


LINES = b"".join(b"line %d\n" % number for number in range(1, 21))


@pytest.mark.parametrize(("verb", "args", "expected"), [
    ("head", [], b"".join(b"line %d\n" % n for n in range(1, 11))),
    ("head", ["-n", "2"], b"line 1\nline 2\n"),
    ("head", ["-n", "0"], b""),
    ("head", ["-c", "3"], b"lin"),
    ("head", ["-n", "99"], LINES),
    ("tail", [], b"".join(b"line %d\n" % n for n in range(11, 21))),
    ("tail", ["-n", "1"], b"line 20\n"),
    ("tail", ["-c", "3"], b"20\n"),
    ("tail", ["-c", "0"], b""),
    ("tail", ["-n", "99"], LINES),
])
def test_head_and_tail(store, verb, args, expected):
    sandctl, namespace = store
    namespace.op_write_file({"path": "/lines", "data": LINES})
    result = sandctl(verb, *args, "/lines")
    assert (result.exit_code, result.stdout_bytes) == (0, expected)


def test_tail_of_a_last_line_without_newline(store):
    sandctl, namespace = store
    namespace.op_write_file({"path": "/f", "data": b"a\nb\nc"})
    assert sandctl("tail", "-n", "2", "/f").stdout_bytes == b"b\nc"


@pytest.mark.parametrize("verb", ["cat", "head", "tail"])
def test_byte_verbs_refuse_json_and_check_their_arguments(store, verb):
    sandctl, namespace = store
    namespace.op_write_file({"path": "/f", "data": b"x\n"})
    refused = sandctl(verb, "/f", "--json")
    assert refused.exit_code == 2
    assert stderr_lines(refused) == [f"Error: {verb} prints the file's bytes, so --json does not apply "
                                     "(use `sandctl stat --json PATH` for its metadata)"]
    assert refused.stdout == ""
    missing = sandctl(verb, "/missing")
    assert (missing.exit_code, stderr_lines(missing)) == (5, ["Error: /missing does not exist"])
    if verb != "cat":
        both = sandctl(verb, "-n", "1", "-c", "1", "/f")
        assert both.exit_code == 2 and stderr_lines(both)[0].startswith("Error: -n and -c exclude each other")


# ---------------------------------------------------------------------- listing


@pytest.fixture
def listed(store):
    sandctl, namespace = store
    namespace.op_mkdir({"path": "/docs"})
    namespace.op_mkdir({"path": "/docs/old"})
    namespace.op_write_file({"path": "/docs/a.pdf", "data": b"x" * 1536})
    namespace.op_write_file({"path": "/docs/old/b.pdf", "data": b"y"})
    namespace.op_write_file({"path": "/docs/notes.txt", "data": b"z"})
    return sandctl


def test_find_by_name_and_type(listed):
    result = listed("find", "/docs", "-name", "*.pdf", "-type", "f")
    assert (result.exit_code, result.stdout) == (0, "/docs/a.pdf\n/docs/old/b.pdf\n")
    result = listed("find", "/docs", "-type", "d")
    assert result.stdout == "/docs\n/docs/old\n"
    result = listed("find", "/docs/notes.txt")
    assert result.stdout == "/docs/notes.txt\n"
    result = listed("find", "/docs", "-name", "*.none")
    assert (result.exit_code, result.stdout) == (0, "")
    as_json = json.loads(listed("find", "/", "-name", "b.pdf", "--json").stdout)
    assert [entry["path"] for entry in as_json] == ["/docs/old/b.pdf"]
    bad = listed("find", "/docs", "-type", "x")
    assert bad.exit_code == 2
    missing = listed("find", "/nope")
    assert (missing.exit_code, stderr_lines(missing)) == (5, ["Error: /nope does not exist"])


def test_tree(listed):
    result = listed("tree", "/docs")
    assert result.exit_code == 0
    assert result.stdout.splitlines() == [
        "/docs/", "├── a.pdf", "├── notes.txt", "└── old/", "    └── b.pdf", "", "1 directory, 3 files"]
    shallow = listed("tree", "-L", "1", "/")
    assert shallow.stdout.splitlines() == ["/", "└── docs/", "", "1 directory, 0 files"]
    as_json = json.loads(listed("tree", "/docs", "--json").stdout)
    assert (as_json["dirs"], as_json["files"]) == (1, 3)


def test_ls_human_recursive_and_a_file(listed):
    human = listed("ls", "-h", "/docs")
    assert human.exit_code == 0
    rows = [line.split() for line in human.stdout.splitlines()[2:]]
    assert [(row[1], row[-1]) for row in rows] == [("1.5K", "a.pdf"), ("1B", "notes.txt"), ("0B", "old/")]
    recursive = listed("ls", "-R", "/docs")
    assert recursive.stdout.splitlines() == ["/docs/a.pdf", "/docs/notes.txt", "/docs/old/", "/docs/old/b.pdf"]
    one_file = listed("ls", "-l", "/docs/a.pdf")
    assert one_file.exit_code == 0
    assert one_file.stdout.splitlines()[2].split()[1:2] == ["1536"]
    assert one_file.stdout.splitlines()[2].endswith("/docs/a.pdf")
    assert listed("ls", "/docs/a.pdf").stdout == "/docs/a.pdf\n"
    assert [entry["path"] for entry in json.loads(listed("ls", "/docs/a.pdf", "--json").stdout)] == ["/docs/a.pdf"]


def test_du_and_stat_of_a_file(listed):
    usage = listed("du", "/docs/a.pdf", "--json")
    assert usage.exit_code == 0
    assert json.loads(usage.stdout) == [{"path": "/docs/a.pdf", "files": 1, "dirs": 0, "logical_bytes": 1536,
                                         "stored_chunk_bytes": 0, "replicated_chunk_bytes": 0}]
    table = listed("du", "-h", "/docs/a.pdf")
    assert table.stdout.splitlines()[2].split() == ["1.5K", "0B", "0B", "1", "0", "/docs/a.pdf"]
    info = listed("stat", "/docs/a.pdf")
    assert info.exit_code == 0
    assert info.stdout.splitlines()[:3] == ["path      /docs/a.pdf", "type      file", "size      1536"]


# ---------------------------------------------------------------------- hints


@pytest.mark.parametrize(("error", "line"), [
    (NotFound("parent directory /a does not exist (use parents to create it)"),
     "Error: parent directory /a does not exist (create it with `sandctl mkdir -p`)"),
    (NotEmpty("/d is a directory that is not empty (use recursive)"),
     "Error: /d is a directory that is not empty (use `sandctl rm -r`)"),
])
def test_node_hints_name_the_command_line_flag(fake_nodes, tmp_path, error, line):
    def handler(op, args):
        raise error

    node = fake_nodes("n1", handler)
    path = tmp_path / "cluster.toml"
    path.write_text(render_config(make_config({"n1": node.address})))
    result = run("mkdir", "/a/b", "--config", str(path))
    assert stderr_lines(result) == [line]


class RecordingProgress:
    """A TreeProgress that remembers the announced total and the bytes reported."""

    def __init__(self) -> None:
        self.totals: list[int] = []
        self.moved = 0

    def begin(self, total_bytes: int) -> None:
        self.totals.append(total_bytes)

    def __call__(self, count: int) -> None:
        self.moved += count


def test_one_progress_for_the_whole_tree_transfer(fake_nodes, tmp_path):
    from sandctl.client import Client
    from sandctl.remote_files import Overwrite
    from sandctl.tree_transfer import get_tree, put_tree

    node = fake_nodes("n1", Namespace())
    make_tree(tmp_path / "src", TREE)
    total = sum(len(data) for data in TREE.values())
    with Client(make_config({"n1": node.address})) as client:
        sent = RecordingProgress()
        summary = put_tree(client, tmp_path / "src", "/", Overwrite.REFUSE, sent)
        assert (sent.totals, sent.moved, summary.bytes) == ([total], total, total)
        received = RecordingProgress()
        get_tree(client, "/src", tmp_path / "out", Overwrite.REFUSE, received)
        assert (received.totals, received.moved) == ([total], total)
        skipping = RecordingProgress()
        put_tree(client, tmp_path / "src", "/", Overwrite.SKIP, skipping)
        assert (skipping.totals, skipping.moved) == ([0], 0)
