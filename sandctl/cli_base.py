"""What every sandctl verb shares: the global options, the Settings they resolve to, and the
one place where errors become `Error: ...` on stderr plus an exit status (`exit_for`).

Exit status table (sandctl/errors.py holds the numbers): 0 ok; 1 refused, nothing changed;
2 usage; 3 cluster unavailable or no leader; 4 timed out, outcome unknown; 5 not found (a
remote path, a local file or a --config file); 141 stdout was closed early (`| head`).
"""

from __future__ import annotations

import functools
import os
import sys
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import click

from node.config import ClusterConfig, load_config
from node.errors import SandStoreError

from sandctl import state
from sandctl.client import Client
from sandctl.errors import (
    EXIT_NOT_FOUND,
    EXIT_REFUSED,
    EXIT_USAGE,
    LocalFileNotFound,
    exit_status,
)

# 128 + SIGPIPE: what a process killed by a closed pipe reports, so `sandctl cat /big | head`
# looks to the shell exactly like `cat /big | head`.
EXIT_BROKEN_PIPE = 141

# A verb that cannot connect to any node of the cluster for this long reports it at once (the
# cluster is most likely not running) instead of retrying until --timeout. A node that is up
# but has no leader still gets the whole deadline.
UNREACHABLE_SECONDS = 3.0

# Hints inside node error messages name protocol arguments; a CLI user needs the flag or verb.
# (The node's text is shared by every client, so it is translated here, not changed there.)
HINTS_FOR_THE_COMMAND_LINE = {
    "(use parents to create it)": "(create it with `sandctl mkdir -p`)",
    "(use recursive)": "(use `sandctl rm -r`)",
    "(not overwritten)": "(use -f to overwrite it, -n to skip it)",
}


@dataclass
class Settings:
    """The global options of one invocation, and what they resolve to (lazily)."""

    config_option: str | None
    data_dir_option: str | None
    node: str | None
    timeout_seconds: float | None
    json_output: bool
    show_traceback: bool
    _config: ClusterConfig | None = field(default=None, repr=False)
    _client: Client | None = field(default=None, repr=False)

    def config(self) -> ClusterConfig:
        if self._config is None:
            path = state.resolve_config_path(self.config_option)
            if not path.exists():
                raise LocalFileNotFound(f"config file {path} does not exist")
            self._config = load_config(path)
        return self._config

    def data_dir(self) -> Path:
        return state.resolve_data_dir(self.data_dir_option, Path(self.config().path))

    def deadline_seconds(self) -> float:
        return self.timeout_seconds if self.timeout_seconds is not None else self.config().request_timeout_seconds

    def client(self) -> Client:
        if self._client is None:
            self._client = Client(self.config(), node=self.node, timeout_seconds=self.timeout_seconds,
                                  unreachable_seconds=UNREACHABLE_SECONDS, data_dir=self.data_dir_option)
        return self._client

    def require_reachable(self) -> Client:
        """The client, once some node (the --node one, if given) answers a ping. Verbs that
        otherwise poll for a leader until --timeout call it first, so a stopped cluster gets
        the same quick answer and hint from every verb."""
        client = self.client()
        client.call("ping", {})
        return client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None


_GLOBAL_OPTIONS = (
    click.option("--config", "config_option", metavar="FILE", default=None,
                 help="Cluster config (default: $SANDSTORE_CONFIG, the remembered one, configs/local-3.toml)."),
    click.option("--data-dir", "data_dir_option", metavar="DIR", default=None,
                 help="Local cluster data directory (default: remembered, else ~/.sandstore/data/<config name>)."),
    click.option("--timeout", "timeout_seconds", metavar="SECONDS", type=click.FloatRange(min=0, min_open=True),
                 default=None, help="Deadline of each request (default: the config's request_timeout_seconds)."),
    click.option("--json", "json_output", is_flag=True, help="Print JSON instead of tables."),
    click.option("--traceback", "show_traceback", is_flag=True, help="Show the stack trace of an error."),
)
_GLOBAL_NAMES = ("config_option", "data_dir_option", "timeout_seconds", "json_output", "show_traceback")


def global_options(function):
    """The options every verb takes; passes a Settings as the first argument and turns every
    operating error into `Error: ...` plus its exit status. `--node` is not among them: the
    verbs where it means something add it with node_option(help)."""

    @functools.wraps(function)
    def wrapper(**kwargs):
        settings = Settings(node=kwargs.pop("node", None), **{name: kwargs.pop(name) for name in _GLOBAL_NAMES})
        try:
            return function(settings, **kwargs)
        except (click.exceptions.Exit, click.ClickException, click.Abort):
            raise
        except Exception as error:  # noqa: BLE001 - the one place that maps errors to exit codes
            exit_for(error, settings.show_traceback)
        finally:
            settings.close()

    for option in reversed(_GLOBAL_OPTIONS):
        wrapper = option(wrapper)
    return wrapper


def node_option(help_text: str):
    """--node ID, with what it means for this verb."""
    return click.option("--node", "node", metavar="ID", default=None, help=help_text)


READ_NODE_HELP = ("Ask only node ID, no failover; with --stale it answers from its own state, "
                  "otherwise it must be the leader.")


def exit_for(error: Exception, show_traceback: bool) -> None:
    if isinstance(error, BrokenPipeError):
        _quiet_broken_pipe()
    if show_traceback:
        traceback.print_exception(error, file=sys.stderr)
    if isinstance(error, SandStoreError):
        status, message = exit_status(error), command_line_hints(str(error) or error.code)
    elif isinstance(error, FileNotFoundError):
        status, message = EXIT_NOT_FOUND, _os_error_message(error)
    elif isinstance(error, OSError):
        status, message = EXIT_REFUSED, _os_error_message(error)
    else:
        # A bug, not an operating error: still one line unless --traceback asks for more.
        status = EXIT_REFUSED
        message = f"unexpected {type(error).__name__}: {error} (run again with --traceback for details)"
    click.echo(f"Error: {message}", err=True)
    raise click.exceptions.Exit(status)


def command_line_hints(message: str) -> str:
    for protocol_hint, command_hint in HINTS_FOR_THE_COMMAND_LINE.items():
        message = message.replace(protocol_hint, command_hint)
    return message


def _quiet_broken_pipe() -> None:
    """The reader of stdout went away (`sandctl cat /big | head`): stop quietly with 141, the
    status a process killed by SIGPIPE reports (what `cat` would show), and point stdout at
    /dev/null so the interpreter's final flush cannot complain again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):  # stdout without a file descriptor (tests)
        pass
    raise click.exceptions.Exit(EXIT_BROKEN_PIPE)


def _os_error_message(error: OSError) -> str:
    return f"{error.filename}: {error.strerror}" if error.filename else str(error)


def refuse_json(settings: Settings, verb: str) -> None:
    """cat, head and tail write the file's bytes; JSON would have to wrap or encode them."""
    if settings.json_output:
        click.echo(f"Error: {verb} prints the file's bytes, so --json does not apply "
                   "(use `sandctl stat --json PATH` for its metadata)", err=True)
        raise click.exceptions.Exit(EXIT_USAGE)
