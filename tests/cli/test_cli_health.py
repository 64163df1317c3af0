"""status (health line, exit 3, width), member list, promote, inspect log (newest first page,
--all-nodes), the single-result style and the quick answer of a stopped cluster, through
CliRunner against fake nodes; and the pure health and log-row functions they use."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from fake_node import free_port, make_config, status_of
from node.config import render_config
from node.errors import Refused
from sandctl import cli_base
from sandctl.cli import main
from sandctl.cli_health import entry_cells, replication_cell
from sandctl.health import health_of

STATUS_WIDTH_MAX = 100


def run(*args: str):
    return CliRunner().invoke(main, list(args), prog_name="sandctl")


def stderr_lines(result) -> list[str]:
    return result.stderr.strip().splitlines()


def cluster_of(fake_nodes, tmp_path, handlers: dict, down: tuple[str, ...] = ()) -> str:
    """A config naming one fake node per handler (and a dead address per id in down)."""
    addresses = {node_id: fake_nodes(node_id, handler).address for node_id, handler in handlers.items()}
    addresses.update({node_id: f"127.0.0.1:{free_port()}" for node_id in down})
    path = tmp_path / "cluster.toml"
    path.write_text(render_config(make_config(addresses)))
    return str(path)


def answering(status: dict, **answers):
    """A handler that answers status with `status` and other ops from `answers` (op -> result)."""
    def handler(op, args):
        if op == "status":
            return status
        if op == "ping":
            return {}
        answer = answers[op]
        return answer(args) if callable(answer) else answer
    return handler


def three_nodes(leader: str | None = "n1", learners: tuple[str, ...] = (), voters=("n1", "n2", "n3")) -> dict:
    handlers = {}
    for node_id in ("n1", "n2", "n3"):
        status = {**status_of(node_id, "leader" if node_id == leader else "follower", leader or ""),
                  "voters": list(voters), "learners": list(learners)}
        handlers[node_id] = answering(status)
    return handlers


# ---------------------------------------------------------------------- status


def test_status_healthy_fits_100_columns_and_exits_0(fake_nodes, tmp_path):
    config = cluster_of(fake_nodes, tmp_path, three_nodes())
    result = run("status", "--config", config)
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == "healthy: leader n1 (term 2), 3/3 voters up"
    assert lines[1].split() == ["node", "state", "role", "term", "commit", "applied", "log", "last", "contact",
                                "chunks"]
    assert all(len(line) <= STATUS_WIDTH_MAX for line in lines), max(lines, key=len)
    wide = run("status", "--wide", "--config", config)
    assert wide.exit_code == 0
    assert wide.stdout.splitlines()[1].split()[10:] == ["leader", "snapshot", "client", "chunk", "bytes", "pid",
                                                        "rss", "anon"]
    assert max(len(line) for line in wide.stdout.splitlines()) > STATUS_WIDTH_MAX


def test_status_without_a_leader_exits_3_with_the_reason_first(fake_nodes, tmp_path):
    config = cluster_of(fake_nodes, tmp_path, three_nodes(leader=None))
    result = run("status", "--config", config)
    assert result.exit_code == 3
    assert result.stdout.splitlines()[0] == "unhealthy: no leader (3/3 voters up)"
    as_json = run("status", "--json", "--config", config)
    assert as_json.exit_code == 3 and set(json.loads(as_json.stdout)) == {"n1", "n2", "n3"}


def test_status_without_quorum_exits_3(fake_nodes, tmp_path):
    handlers = three_nodes()
    config = cluster_of(fake_nodes, tmp_path, {"n1": handlers["n1"]}, down=("n2", "n3"))
    result = run("status", "--config", config, "--timeout", "0.5")
    assert result.exit_code == 3
    assert result.stdout.splitlines()[0] == "unhealthy: leader n1 (term 2) but only 1/3 voters up: no quorum"


def test_status_with_every_node_down_exits_3_with_the_start_hint(tmp_path):
    path = tmp_path / "down.toml"
    path.write_text(render_config(make_config({"n1": f"127.0.0.1:{free_port()}"})))
    result = run("status", "--config", str(path), "--timeout", "0.3")
    assert result.exit_code == 3
    assert result.stdout.splitlines()[0] == ("unhealthy: no node answered (0/1 up): is the cluster running? "
                                             "(start it with `sandctl cluster start`)")


def test_a_learner_is_shown_as_learner(fake_nodes, tmp_path):
    config = cluster_of(fake_nodes, tmp_path, three_nodes(learners=("n3",), voters=("n1", "n2")))
    result = run("status", "--config", config)
    assert result.exit_code == 0
    assert result.stdout.splitlines()[0] == "healthy: leader n1 (term 2), 2/2 voters up, 1 learner"
    rows = {line.split()[0]: line.split() for line in result.stdout.splitlines()[3:6]}
    assert rows["n3"][2] == "learner" and rows["n2"][2] == "follower"


def test_status_help_explains_node_memory():
    text = " ".join(run("status", "--help").output.split())
    assert "RSS includes LMDB's mapped file pages" in text
    assert "/proc/PID/smaps_rollup" in text


# ---------------------------------------------------------------------- member list and promote


def test_member_list_shows_voters_learners_addresses_and_health(fake_nodes, tmp_path):
    handlers = three_nodes(learners=("n3",), voters=("n1", "n2"))
    config = cluster_of(fake_nodes, tmp_path, {"n1": handlers["n1"], "n3": handlers["n3"]}, down=("n2",))
    result = run("member", "list", "--config", config, "--timeout", "0.5")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == "unhealthy: leader n1 (term 2) but only 1/2 voters up: no quorum, 1 learner"
    rows = {line.split()[0]: line.split() for line in lines[3:]}
    assert rows["n1"][1:4] == ["voter", "up", "leader"]
    assert rows["n2"][1:3] == ["voter", "down"]
    assert rows["n3"][1:4] == ["learner", "up", "learner"]
    members = json.loads(run("member", "list", "--json", "--config", config, "--timeout", "0.5").stdout)["members"]
    assert {m["node"]: m["membership"] for m in members} == {"n1": "voter", "n2": "voter", "n3": "learner"}
    assert all(m["client"] for m in members)


def test_promote_prints_one_record(fake_nodes, tmp_path):
    promoted = []

    def promote(args):
        promoted.append(args["node"])
        return {"index": 12}

    config = cluster_of(fake_nodes, tmp_path, {"n1": answering(status_of("n1", "leader", "n1"), promote=promote)})
    result = run("promote", "n4", "--config", config)
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == ["node        n4", "membership  voter", "index       12"]
    assert promoted == ["n4"]


def test_a_refused_promote_exits_1(fake_nodes, tmp_path):
    def refuse(args):
        raise Refused("n4 is behind")

    config = cluster_of(fake_nodes, tmp_path, {"n1": answering(status_of("n1", "leader", "n1"), promote=refuse)})
    result = run("promote", "n4", "--config", config)
    assert (result.exit_code, stderr_lines(result)) == (1, ["Error: n4 is behind"])


def test_single_results_are_records_without_none(fake_nodes, tmp_path):
    handler = answering(status_of("n1", "leader", "n1"), snapshot={"index": 40, "bytes": 1234, "pid": None})
    config = cluster_of(fake_nodes, tmp_path, {"n1": handler})
    result = run("snapshot", "--config", config)
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == ["index  40", "bytes  1234", "pid    -"]


# ---------------------------------------------------------------------- inspect log


def log_entries(first: int, last: int, term: int = 2) -> list[dict]:
    return [{"index": index, "term": term, "kind": "normal",
             "command": {"op": "write_file", "path": f"/f{index}", "size": index, "mode": 420, "client": "c",
                         "seq": index, "now_ns": 1}} for index in range(first, last + 1)]


def log_handler(last_index: int, applied: int, first_index: int = 1, node_id: str = "n1", role: str = "follower"):
    """A node whose log holds first_index..last_index and that answers inspect_log like a node."""
    def inspect_log(args):
        limit = args.get("limit") or 20
        start = max(args.get("from_index") or max(first_index, last_index - limit + 1), first_index)
        end = min(last_index + 1, start + limit)
        return {"first_index": first_index, "last_index": last_index, "entries": log_entries(start, end - 1)}

    status = {**status_of(node_id, role, "n1"), "commit": min(applied + 1, last_index), "applied": applied,
              "first_index": first_index, "last_index": last_index}
    return answering(status, inspect_log=inspect_log)


def test_inspect_log_shows_the_newest_entries_with_op_and_path_first(fake_nodes, tmp_path):
    config = cluster_of(fake_nodes, tmp_path, {"n1": log_handler(100, 100, role="leader")})
    result = run("inspect", "log", "--limit", "3", "--config", config)
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == "n1's log holds 1..100; showing 98..100; older: --from 95"
    assert lines[1].split() == ["index", "term", "op", "path", "details"]
    assert [line.split()[:4] for line in lines[3:]] == [
        [str(index), "2", "write_file", f"/f{index}"] for index in (98, 99, 100)]
    assert lines[3].split()[4] == '{"mode":420,"size":98}'
    paged = run("inspect", "log", "--from", "5", "--limit", "2", "--config", config)
    assert [line.split()[0] for line in paged.stdout.splitlines()[3:]] == ["5", "6"]


def test_inspect_log_all_nodes_lines_up_one_index_per_row(fake_nodes, tmp_path):
    config = cluster_of(fake_nodes, tmp_path, {
        "n1": log_handler(10, 10, role="leader"), "n2": log_handler(10, 8, node_id="n2"),
        "n3": log_handler(8, 7, node_id="n3"),
    })
    result = run("inspect", "log", "--all-nodes", "--limit", "4", "--config", config)
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[1].split() == ["index", "term", "op", "path", "n1", "n2", "n3"]
    assert [line.split() for line in lines[3:]] == [
        ["7", "2", "write_file", "/f7", "applied", "applied", "applied"],
        ["8", "2", "write_file", "/f8", "applied", "applied", "committed"],
        ["9", "2", "write_file", "/f9", "applied", "committed", "missing"],
        ["10", "2", "write_file", "/f10", "applied", "appended", "missing"],
    ]


def test_entry_cells_and_replication_cells():
    move = {"index": 3, "term": 2, "kind": "normal", "command": {"op": "mv", "src": "/a", "dst": "/b", "client": "c",
                                                                  "seq": 1, "now_ns": 5, "overwrite": False}}
    assert entry_cells(move) == ("mv", "/a -> /b", '{"overwrite":false}')
    change = {"index": 4, "term": 2, "kind": "conf_change", "command": {"steps": [["add_learner", "n4"]]}}
    assert entry_cells(change) == ("membership", "", "add_learner n4")
    assert entry_cells({"index": 5, "term": 3, "kind": "noop", "command": {}}) == ("noop", "", "")
    status = {"applied": 5, "commit": 6}
    log = {"first_index": 3}
    assert replication_cell(2, 1, None, status, log) == "compacted"
    assert replication_cell(6, 2, {"term": 2}, status, log) == "committed"
    assert replication_cell(7, 2, {"term": 1}, status, log) == "term 1!"
    assert replication_cell(7, 2, None, None, None) == "down"


# ---------------------------------------------------------------------- health


def test_health_of_a_joint_configuration_needs_both_majorities():
    def up(node_id, role="follower"):
        return {**status_of(node_id, role, "n1"), "voters": ["n1", "n2", "n4"], "voters_outgoing": ["n1", "n2", "n3"]}

    statuses = {"n1": up("n1", "leader"), "n2": None, "n3": None, "n4": up("n4")}
    health = health_of(statuses)
    assert health.voters_up == 2 and not health.healthy  # new majority yes, old majority (n1 only) no
    statuses["n3"] = up("n3")
    assert health_of(statuses).healthy


# ---------------------------------------------------------------------- a stopped cluster


@pytest.mark.parametrize("verb", [["ls", "/"], ["put", "-", "/x"], ["kill-leader"], ["snapshot"], ["inspect", "log"],
                                  ["inspect", "term"], ["transfer-leader"], ["promote", "n2"], ["gc"],
                                  ["remove-voter", "n2"]])
def test_every_verb_gives_the_same_quick_hint_when_nothing_runs(tmp_path, monkeypatch, verb):
    monkeypatch.setattr(cli_base, "UNREACHABLE_SECONDS", 0.2)
    path = tmp_path / "down.toml"
    address = f"127.0.0.1:{free_port()}"
    path.write_text(render_config(make_config({"n1": address})))
    result = CliRunner().invoke(main, [*verb, "--config", str(path), "--data-dir", str(tmp_path / "data")],
                                input=b"", prog_name="sandctl")
    assert result.exit_code == 3, result.output
    assert stderr_lines(result) == [f"Error: cannot connect to n1 ({address}) for 0.2 s: is the cluster running? "
                                    "(start it with `sandctl cluster start`)"]
