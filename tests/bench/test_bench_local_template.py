"""`sandctl bench --local --config FILE`: the throwaway cluster takes FILE's settings, so encryption
on and off can be measured with the same command (security = "plaintext" in FILE's [cluster])."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from sandctl import bench

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


@pytest.fixture
def captured_run(tmp_path, monkeypatch):
    """run_bench replaced by a recorder: the command's wiring is checked without a cluster."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("SANDSTORE_CONFIG", raising=False)
    monkeypatch.delenv("SANDSTORE_DATA_DIR", raising=False)
    calls: list[dict] = []

    def record(**arguments):
        calls.append(arguments)
        return {"results": [], "machine": {}}

    monkeypatch.setattr(bench, "run_bench", record)
    return calls


def test_local_with_a_config_uses_its_settings_for_the_throwaway_cluster(tmp_path, captured_run):
    plaintext = tmp_path / "plain-3.toml"
    text = (CONFIGS / "local-3.toml").read_text()
    plaintext.write_text(text.replace("[cluster]\n", '[cluster]\nsecurity = "plaintext"\n', 1))
    result = CliRunner().invoke(bench.bench_command, ["--local", "put", "--config", str(plaintext), "--json"])
    assert result.exit_code == 0, result.output
    (arguments,) = captured_run
    assert arguments["local"] is True
    assert arguments["local_template"] is not None
    assert arguments["local_template"].security == "plaintext"


def test_local_without_a_config_keeps_the_defaults(captured_run):
    result = CliRunner().invoke(bench.bench_command, ["--local", "put", "--json"])
    assert result.exit_code == 0, result.output
    (arguments,) = captured_run
    assert arguments["local_template"] is None  # LocalCluster's defaults: CurveZMQ


def test_the_report_names_the_security_mode_of_the_measured_cluster(tmp_path, monkeypatch):
    """run_bench records config.security beside the node count (checked without starting nodes:
    a config whose cluster is not running fails fast, so only the report's shape is built from
    a stubbed run)."""
    from node.config import load_config

    config = load_config(CONFIGS / "local-3.toml")
    monkeypatch.setattr(bench, "measure_machine", lambda *arguments: {})
    monkeypatch.setattr(bench, "write_random_file", lambda path, size: Path(path).write_bytes(b"x"))
    monkeypatch.setattr(bench, "_run_workloads", lambda *arguments, **keywords: [])

    class NoClient:
        def __init__(self, *arguments, **keywords):
            pass

        def __enter__(self):
            return self

        def __exit__(self, *exc_info):
            return False

        def wait_for_leader(self, timeout_seconds):
            return "n1"

        def mkdir(self, path, parents=False):
            return None

        def rm(self, path, recursive=False):
            return None

    monkeypatch.setattr(bench, "Client", NoClient)
    report = bench.run_bench(config=config, data_dir=tmp_path, workloads=("put",), duration_seconds=0.1)
    assert report["cluster"]["security"] == "curve"
