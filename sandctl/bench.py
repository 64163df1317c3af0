"""`sandctl bench`: measure a cluster, and the machine under it for scale.

run_bench() is the library entry (the tests call it); bench_command is the thin click shell.
The workloads live in bench_workloads (write, read, small), bench_transfer (put, get) and
bench_failover (failover); the machine's limits in bench_machine.
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

import click

from node.config import ClusterConfig, load_config
from node.errors import SandStoreError

from sandctl import state
from sandctl.bench_cluster import LocalCluster
from sandctl.bench_compare import compare_reports, load_report, render_comparison
from sandctl.bench_failover import KILL_COUNT_DEFAULT, failover_workload
from sandctl.bench_partition import partition_workload
from sandctl.bench_repair import repair_workload
from sandctl.bench_machine import measure_machine, write_random_file
from sandctl.bench_report import add_machine_ratios, render_table, save_report
from sandctl.bench_transfer import put_get_workload
from sandctl.bench_workloads import (
    READ_CONCURRENCY_DEFAULT,
    WRITE_CONCURRENCY_DEFAULT,
    BenchContext,
    read_workload,
    small_workload,
    write_workload,
)
from sandctl.client import Client
from sandctl.errors import EXIT_REFUSED, exit_status

WORKLOADS = ("write", "read", "small", "put", "get", "failover", "repair")  # the default: all of these
# Asked for by name only: partition needs root and builds its own cluster in network namespaces.
ALL_WORKLOADS = WORKLOADS + ("partition",)
DURATION_SECONDS_DEFAULT = 5.0
FILE_SIZE_MIB_DEFAULT = 256
LMDB_MEASURE_SECONDS_MAX = 3.0
REQUEST_TIMEOUT_SECONDS = 10.0
BENCH_DIRECTORY_NAME = "bench"  # <data dir>/bench holds results and scratch files
CLUSTER_ROOT = "/bench"  # every file a run writes lives under /bench/<run id> in the cluster

Progress = Callable[[str], None]


def _timestamp() -> str:
    now = datetime.now(timezone.utc)
    return now.strftime("%Y%m%dT%H%M%S.") + f"{now.microsecond // 1000:03d}Z"


def _run_workloads(context: BenchContext, workloads: tuple[str, ...], concurrency_levels: tuple[int, ...] | None,
                   test_file: Path, cluster: LocalCluster | None, before_verify, progress: Progress,
                   failover_kills: int = KILL_COUNT_DEFAULT) -> list[dict]:
    """Every requested workload in a fixed order; one that fails becomes a row saying why."""
    steps = [
        ("write", lambda: write_workload(context, concurrency_levels or WRITE_CONCURRENCY_DEFAULT)),
        ("read", lambda: read_workload(context, concurrency_levels or READ_CONCURRENCY_DEFAULT)),
        ("small", lambda: small_workload(context)),
        ("put", lambda: put_get_workload(context, test_file, set(workloads))),
        ("failover", lambda: failover_workload(context, cluster, before_verify, failover_kills)),
        ("repair", lambda: repair_workload(context, cluster, test_file)),
        ("partition", lambda: partition_workload(context, progress)),
    ]
    rows: list[dict] = []
    for name, run in steps:
        wanted = name in workloads or (name == "put" and "get" in workloads)
        if not wanted:
            continue
        progress(f"bench: {name if name != 'put' else '/'.join(w for w in ('put', 'get') if w in workloads)}")
        try:
            rows.extend(run())
        except SandStoreError as error:
            rows.append({"workload": name, "mode": "", "outstanding": "", "error": f"{error.code}: {error}"})
    return rows


def run_bench(
    *,
    config: ClusterConfig | None,
    data_dir: Path,
    workloads: tuple[str, ...] = WORKLOADS,
    duration_seconds: float = DURATION_SECONDS_DEFAULT,
    concurrency_levels: tuple[int, ...] | None = None,
    local: bool = False,
    keep: bool = False,
    file_size_bytes: int = FILE_SIZE_MIB_DEFAULT << 20,
    local_template: ClusterConfig | None = None,
    local_node_count: int = 3,
    before_verify=None,
    progress: Progress = lambda message: None,
    failover_kills: int = KILL_COUNT_DEFAULT,
) -> dict:
    """Measure the machine, run the workloads, save <data_dir>/bench/<timestamp>.json.

    local=True starts a throwaway cluster (from local_template's settings) under
    <data_dir>/bench, so it shares the data directory's disk, and stops it afterwards.
    keep=True keeps the files the run wrote (in the cluster, and the local cluster's directory).
    """
    assert duration_seconds > 0
    assert set(workloads) <= set(ALL_WORKLOADS), f"unknown workloads {set(workloads) - set(ALL_WORKLOADS)}"
    assert local or config is not None
    timestamp = _timestamp()
    bench_directory = Path(data_dir) / BENCH_DIRECTORY_NAME
    bench_directory.mkdir(parents=True, exist_ok=True)
    work_directory = Path(tempfile.mkdtemp(prefix=("local-" if local else "scratch-") + timestamp + "-",
                                           dir=bench_directory))
    cluster = LocalCluster(work_directory / "cluster", local_node_count, local_template) if local else None
    if cluster is not None:
        config = cluster.config
    assert config is not None
    replication = min(config.replication, len(config.nodes))
    test_file = work_directory / "test-file"
    try:
        if cluster is None:
            # Fail fast (Unavailable / NoLeader) before spending a minute on the machine.
            with Client(config, timeout_seconds=REQUEST_TIMEOUT_SECONDS) as probe:
                probe.wait_for_leader(REQUEST_TIMEOUT_SECONDS)
        progress(f"bench: measuring the machine in {work_directory}")
        write_random_file(test_file, file_size_bytes)
        machine = measure_machine(work_directory / "machine", test_file, replication,
                                  min(duration_seconds, LMDB_MEASURE_SECONDS_MAX))
        if cluster is not None:
            progress(f"bench: starting a local {len(config.nodes)}-node cluster in {cluster.directory}")
            cluster.start()
        with Client(config, timeout_seconds=REQUEST_TIMEOUT_SECONDS) as client:
            root = f"{CLUSTER_ROOT}/{timestamp.replace('.', '-')}"
            client.mkdir(root, parents=True)
            context = BenchContext(config, client, root, duration_seconds, REQUEST_TIMEOUT_SECONDS)
            rows = _run_workloads(context, workloads, concurrency_levels, test_file, cluster, before_verify, progress,
                                  failover_kills)
            if not keep and cluster is None:
                try:
                    client.rm(root, recursive=True)
                except SandStoreError as error:
                    progress(f"bench: could not remove {root}: {error}")
    finally:
        if cluster is not None:
            cluster.stop()
        test_file.unlink(missing_ok=True)
        if not keep:
            shutil.rmtree(work_directory, ignore_errors=True)
    add_machine_ratios(rows, machine)
    report = {
        "timestamp": timestamp,
        "cluster": {"local": local, "config": config.path, "nodes": len(config.nodes), "replication": replication,
                    "security": config.security},
        "duration_seconds": duration_seconds,
        "file_size_bytes": file_size_bytes,
        "workloads": list(workloads),
        "machine": machine,
        "results": rows,
    }
    if cluster is not None:
        report["cluster"]["pids_started"] = list(cluster.pids_started)
    if keep:
        report["kept_directory"] = str(work_directory)
    report["results_file"] = str(save_report(report, bench_directory, timestamp))
    return report


def writes_lost(report: dict) -> int:
    return sum(row.get("writes_lost") or 0 for row in report["results"])


@click.command("bench")
@click.argument("workloads", nargs=-1, type=click.Choice(ALL_WORKLOADS))
@click.option("--duration", "duration_seconds", type=click.FloatRange(min=0.01), default=DURATION_SECONDS_DEFAULT,
              show_default=True, help="Seconds per workload step.")
@click.option("--concurrency", "concurrency_levels", type=click.IntRange(1, 4096), multiple=True,
              help="Requests outstanding (repeatable). Default: write 1,16,64; read 1,16.")
@click.option("--file-size-mib", type=click.IntRange(min=1), default=FILE_SIZE_MIB_DEFAULT, show_default=True,
              help="Size of the put/get test file.")
@click.option("--local", is_flag=True, help="Start a throwaway 3-node cluster, stop it afterwards.")
@click.option("--keep", is_flag=True, help="Keep the files the benchmark wrote.")
@click.option("--config", "config_option", type=click.Path(dir_okay=False), default=None,
              help="Cluster config (default: $SANDSTORE_CONFIG, the started cluster, configs/local-3.toml); "
                   "with --local, the settings of the throwaway cluster (e.g. security).")
@click.option("--data-dir", "data_dir_option", type=click.Path(file_okay=False), default=None,
              help="Data directory: results go to DATA_DIR/bench/<timestamp>.json.")
@click.option("--failover-kills", type=click.IntRange(1, 1000), default=KILL_COUNT_DEFAULT, show_default=True,
              help="Leader kills in the failover workload (its figure is their median kill->ack).")
@click.option("--compare", "compare_path", type=click.Path(dir_okay=False), default=None,
              help="A saved earlier run's JSON: print each figure's ratio to it.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def bench_command(workloads: tuple[str, ...], duration_seconds: float, concurrency_levels: tuple[int, ...],
                  file_size_mib: int, local: bool, keep: bool, config_option: str | None,
                  data_dir_option: str | None, failover_kills: int, compare_path: str | None,
                  as_json: bool) -> None:
    """Benchmark the running cluster (or a throwaway one with --local).

    Workloads: write, read, small, put, get, failover, repair (default: all; failover and repair
    need --local; repair replaces a killed node and times full re-replication);
    partition (as root, by name: its own cluster in network namespaces, leader isolated for
    --duration seconds, 5 times).
    Exits 1 if the failover workload lost an acknowledged write. --compare FILE prints each
    figure's ratio to an earlier run saved as FILE (<data dir>/bench/<timestamp>.json).

    Example: sandctl bench --local write read --duration 2
    """
    try:
        earlier = load_report(compare_path) if compare_path else None  # a bad file fails before the run
        config_path = state.resolve_config_path(config_option)
        data_dir = state.resolve_data_dir(data_dir_option, config_path)
        config = None if local else load_config(config_path)
        # --local with --config: the throwaway cluster takes that file's settings (e.g. security).
        template = load_config(config_path) if local and config_option else None
        report = run_bench(
            config=config, data_dir=data_dir, workloads=workloads or WORKLOADS, duration_seconds=duration_seconds,
            concurrency_levels=concurrency_levels or None, local=local, keep=keep, local_template=template,
            file_size_bytes=file_size_mib << 20, progress=lambda message: click.echo(message, err=True),
            failover_kills=failover_kills,
        )
    except SandStoreError as error:
        click.echo(f"Error: {error}", err=True)
        sys.exit(exit_status(error))
    except OSError as error:
        click.echo(f"Error: {error}", err=True)
        sys.exit(EXIT_REFUSED)
    if earlier is not None:
        report["compared_with"] = {"file": compare_path, "figures": compare_reports(earlier, report)}
    click.echo(json.dumps(report, indent=2, sort_keys=True) if as_json else render_table(report))
    if earlier is not None and not as_json:
        click.echo("")
        click.echo(render_comparison(report["compared_with"]["figures"], compare_path))
    lost = writes_lost(report)
    if lost:
        click.echo(f"Error: the failover workload lost {lost} acknowledged writes", err=True)
        sys.exit(EXIT_REFUSED)


if __name__ == "__main__":  # python -m sandctl.bench, until cli.py registers the command
    bench_command()
