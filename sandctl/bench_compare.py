"""`sandctl bench --compare FILE`: each figure of this run beside a saved earlier run's.

Rows are matched by (workload, mode, outstanding); every figure both rows have becomes
(earlier, now, now / earlier). A ratio above 1 is better for rates and worse for latencies,
CPU and fsyncs; the table says which way each figure points.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path

from tabulate import tabulate

from node.errors import BadRequest

from sandctl.bench_stats import ratio

# (figure, label, "higher" or "lower" is better). The failover median comes from kill_to_ack_ms.
FIGURES = (
    ("ops_per_second", "ops/s", "higher"),
    ("files_per_second", "files/s", "higher"),
    ("throughput_mb_per_second", "MB/s", "higher"),
    ("latency_ms_p50", "p50 ms", "lower"),
    ("latency_ms_p99", "p99 ms", "lower"),
    ("node_cpu_us_per_op", "node CPU us/op", "lower"),
    ("fsyncs_per_op", "fsyncs/op", "lower"),
    ("synced_commits_per_op", "synced commits/op", "lower"),
    ("leader_changes", "leader changes", "lower"),
    ("kill_to_ack_ms_median", "kill->ack ms median", "lower"),
    ("kill_to_leader_ms_median", "kill->new leader ms median", "lower"),
    ("writes_lost", "writes lost", "lower"),
)
COMPARE_HEADERS = ("workload", "mode", "outstanding", "figure", "earlier", "now", "now/earlier", "better is")


def load_report(path: str | Path) -> dict:
    """A saved report (<data dir>/bench/<timestamp>.json); BadRequest with one line if it is not one."""
    try:
        report = json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise BadRequest(f"cannot read the earlier bench run {path}: {error}") from None
    if not isinstance(report, dict) or not isinstance(report.get("results"), list):
        raise BadRequest(f"{path} is not a saved bench run (no results list)")
    return report


def _row_key(row: dict) -> tuple[str, str, str]:
    return (str(row.get("workload", "")), str(row.get("mode", "")), str(row.get("outstanding", "")))


def _figures(row: dict) -> dict[str, float]:
    values = {name: row[name] for name, _, _ in FIGURES
              if isinstance(row.get(name), (int, float)) and not isinstance(row.get(name), bool)}
    kills = row.get("kill_to_ack_ms")
    if isinstance(kills, list) and kills and all(isinstance(value, (int, float)) for value in kills):
        values["kill_to_ack_ms_median"] = statistics.median(kills)
    return values


def _failover_key(row: dict) -> tuple[str, str, str]:
    # The failover mode names its kill count, which may differ between runs: match by workload.
    return ("failover", "", "") if row.get("workload") == "failover" else _row_key(row)


def compare_reports(earlier: dict, now: dict) -> list[dict]:
    """One record per figure present in both runs' matching rows, in this run's row order."""
    earlier_rows = {_failover_key(row): row for row in earlier.get("results", []) if isinstance(row, dict)}
    records = []
    for row in now.get("results", []):
        old = earlier_rows.get(_failover_key(row))
        if old is None:
            continue
        old_figures, new_figures = _figures(old), _figures(row)
        for name, label, better in FIGURES:
            if name in old_figures and name in new_figures:
                records.append({
                    "workload": row.get("workload"), "mode": row.get("mode", ""), "outstanding": row.get("outstanding", ""),
                    "figure": label, "earlier": old_figures[name], "now": new_figures[name],
                    "ratio": ratio(new_figures[name], old_figures[name]), "better": better,
                })
    return records


def render_comparison(records: list[dict], earlier_path: str) -> str:
    if not records:
        return f"compared with {earlier_path}: no workload step in common"
    rows = [(r["workload"], r["mode"], r["outstanding"], r["figure"], r["earlier"], r["now"],
             "" if r["ratio"] is None else r["ratio"], r["better"]) for r in records]
    return f"compared with {earlier_path}:\n" + tabulate(rows, headers=COMPARE_HEADERS)
