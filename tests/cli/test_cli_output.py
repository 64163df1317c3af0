"""The shared pieces of sandctl's output and errors: one record style, rounded durations,
counts, the quiet end on a closed stdout, and the whole-deadline message of a leaderless
start."""

from __future__ import annotations

import click
import pytest

from fake_node import make_config, status_of
from sandctl import cluster as supervisor
from sandctl import output
from sandctl.cli_base import EXIT_BROKEN_PIPE, command_line_hints, exit_for
from sandctl.client import Client
from node.errors import NoLeader


def test_a_record_shows_absent_values_as_a_dash_never_none():
    assert output.record_text([("node", "n2"), ("pid", None), ("outcome", "started")]).splitlines() == [
        "node     n2", "pid      -", "outcome  started"]


@pytest.mark.parametrize(("seconds", "text"), [(0.45324, "0.45 s"), (3, "3 s"), (10.0, "10 s"), (10.8, "10.8 s"),
                                               (1.25, "1.2 s"), (0.05, "0.05 s")])
def test_durations_are_rounded(seconds, text):
    assert output.seconds_text(seconds) == text


def test_counts_and_sizes():
    assert [output.counted(1, "file"), output.counted(2, "file"), output.counted(1, "directory", "directories"),
            output.counted(0, "directory", "directories")] == ["1 file", "2 files", "1 directory", "0 directories"]
    assert [output.human_bytes(n) for n in (0, 1023, 1536, 5 << 20)] == ["0B", "1023B", "1.5K", "5.0M"]


def test_a_closed_stdout_ends_quietly_with_141(capsys):
    with pytest.raises(click.exceptions.Exit) as stopped:
        exit_for(BrokenPipeError(32, "Broken pipe"), show_traceback=False)
    assert stopped.value.exit_code == EXIT_BROKEN_PIPE == 141
    assert capsys.readouterr().err == ""


def test_protocol_hints_become_command_line_hints():
    assert command_line_hints("parent directory /a does not exist (use parents to create it)") == \
        "parent directory /a does not exist (create it with `sandctl mkdir -p`)"
    assert command_line_hints("/d is a directory that is not empty (use recursive)") == \
        "/d is a directory that is not empty (use `sandctl rm -r`)"
    assert command_line_hints("/x already exists (not overwritten)") == \
        "/x already exists (use -f to overwrite it, -n to skip it)"


def test_a_leaderless_start_names_the_whole_wait_rounded(fake_nodes):
    followers = {node_id: fake_nodes(node_id, lambda op, args, node_id=node_id: status_of(node_id, "follower"))
                 for node_id in ("n1", "n2")}
    config = make_config({node_id: node.address for node_id, node in followers.items()})
    with Client(config, timeout_seconds=1.3) as client:
        with pytest.raises(NoLeader) as refused:
            supervisor.wait_for_leader_while_alive(client, "/nonexistent", {}, 1.3)
    assert str(refused.value) == "no leader was elected within 1.3 s"
