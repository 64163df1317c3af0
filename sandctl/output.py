"""How sandctl prints: one style for tables, one for single results, one for JSON.

- A table (many rows of the same kind): tabulate's "simple" format with a header line.
- A single result (one record: a stat, a snapshot, a started node): tabulate's "plain"
  two-column format, one `label  value` line per field, an absent value shown as "-".
- --json: the same data as JSON, indented, keys sorted.
"""

from __future__ import annotations

import datetime
import json
import stat as stat_module
from pathlib import Path

import click
from tabulate import tabulate

ABSENT = "-"  # how a table or record shows a value that does not exist (never "None")


def _json_default(value: object) -> object:
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).hex()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def json_text(value: object) -> str:
    return json.dumps(value, default=_json_default, indent=2, sort_keys=True)


def compact_json_text(value: object) -> str:
    return json.dumps(value, default=_json_default, sort_keys=True, separators=(",", ":"))


def print_json(value: object) -> None:
    click.echo(json_text(value))


def print_table(rows: list[list], headers: list[str]) -> None:
    shown = [[ABSENT if cell is None else cell for cell in row] for row in rows]
    click.echo(tabulate(shown, headers=headers, tablefmt="simple", disable_numparse=True))


def record_text(fields: list[tuple[str, object]]) -> str:
    return tabulate([[label, ABSENT if value is None or value == "" else value] for label, value in fields],
                    tablefmt="plain", disable_numparse=True)


def print_record(fields: list[tuple[str, object]]) -> None:
    """One result: `label  value` lines, aligned."""
    click.echo(record_text(fields))


def counted(count: int, singular: str, plural: str | None = None) -> str:
    """"1 file", "2 files", "1 directory", "0 directories"."""
    return f"{count} {singular if count == 1 else (plural or singular + 's')}"


def human_bytes(count: int) -> str:
    """1023B, 1.5K, 3.2M, ... (powers of 1024, like ls -h and du -h)."""
    value = float(count)
    for unit in ("B", "K", "M", "G", "T"):
        if value < 1024 or unit == "T":
            return f"{int(value)}{unit}" if unit == "B" else f"{value:.1f}{unit}"
        value /= 1024
    raise AssertionError("unreachable")


def mode_text(entry: dict) -> str:
    kind = stat_module.S_IFDIR if entry.get("type") == "dir" else stat_module.S_IFREG
    return stat_module.filemode(kind | (entry.get("mode", 0) & 0o7777))


def time_text(mtime_ns: int | None) -> str:
    if mtime_ns is None:
        return ""
    moment = datetime.datetime.fromtimestamp(mtime_ns / 1e9)
    return moment.strftime("%Y-%m-%d %H:%M:%S")


def wall_clock_text(epoch_ms: int | None) -> str:
    if epoch_ms is None:
        return ABSENT
    moment = datetime.datetime.fromtimestamp(epoch_ms / 1000, tz=datetime.timezone.utc)
    return moment.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


def seconds_text(seconds: float) -> str:
    """A duration for a message: 0.45 s, 3 s, 10.8 s (rounded, never 0.45324 s)."""
    if seconds >= 10:
        return f"{seconds:.0f} s" if abs(seconds - round(seconds)) < 0.05 else f"{seconds:.1f} s"
    return f"{seconds:.2g} s" if seconds < 1 else f"{seconds:.1f}".rstrip("0").rstrip(".") + " s"
