"""`sandstore node` refuses bad configs with one line naming the problem, and exit status 1."""

from __future__ import annotations

from click.testing import CliRunner

from node.cli import main


def run(*args: str):
    return CliRunner().invoke(main, list(args))


def test_unknown_setting_is_named(tmp_path):
    config = tmp_path / "bad.toml"
    config.write_text('[cluster]\nelection_tick = 3\n[[nodes]]\nid = "n1"\nraft = "127.0.0.1:1"\n'
                      'client = "127.0.0.1:2"\nchunk = "127.0.0.1:3"\n')
    result = run("node", "--config", str(config), "--id", "n1", "--data-dir", str(tmp_path / "d"))
    assert result.exit_code == 1
    assert result.output.strip() == "Error: unknown setting cluster.election_tick"


def test_wrong_type_and_bad_address_are_named(tmp_path):
    config = tmp_path / "bad.toml"
    config.write_text('[cluster]\ntick_ms = "fast"\n')
    result = run("node", "--config", str(config), "--id", "n1")
    assert result.exit_code == 1
    assert result.output.strip() == "Error: cluster.tick_ms must be an integer, got 'fast'"
    config.write_text('[[nodes]]\nid = "n1"\nraft = "127.0.0.1:99999"\nclient = "127.0.0.1:2"\nchunk = "127.0.0.1:3"\n')
    result = run("node", "--config", str(config), "--id", "n1")
    assert result.exit_code == 1
    assert "nodes[0].raft has an invalid port" in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_unknown_node_id_and_missing_file(tmp_path):
    result = run("node", "--config", str(tmp_path / "missing.toml"), "--id", "n1")
    assert result.exit_code == 1
    assert "does not exist" in result.output
    result = run("node", "--config", "configs/local-3.toml", "--id", "n9", "--data-dir", str(tmp_path / "d"))
    assert result.exit_code == 1
    assert "node id 'n9' is not in" in result.output


def test_invalid_toml_is_one_line(tmp_path):
    config = tmp_path / "bad.toml"
    config.write_text("[cluster\n")
    result = run("node", "--config", str(config), "--id", "n1")
    assert result.exit_code == 1
    assert result.output.startswith("Error: ") and "is not valid TOML" in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_a_startup_error_without_a_message_is_named_by_its_type_and_its_stack_is_logged(tmp_path, monkeypatch,
                                                                                           caplog):
    import node.server

    def broken_server(*args, **kwargs):
        raise AssertionError()  # as a failed bare assert in the node: its str() is empty

    monkeypatch.setattr(node.server, "NodeServer", broken_server)
    result = run("node", "--config", "configs/local-3.toml", "--id", "n1", "--data-dir", str(tmp_path / "d"))
    assert result.exit_code == 1
    assert result.output.strip() == "Error: cannot start node n1: AssertionError"
    logged = [record for record in caplog.records if record.getMessage() == "cannot start node n1"]
    assert logged and logged[0].exc_info and logged[0].exc_info[0] is AssertionError
